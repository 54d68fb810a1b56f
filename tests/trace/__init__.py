"""Tests of traces and of the importers of other tools' logs."""

# What an import says of a log whose rows carry no time (after the log's name and ": ").
UNTIMED = (
    "the log gives no time: its ticks are taken as 1 s apart; a log sampled at another interval has its "
    "durations and energy off by as much"
)
