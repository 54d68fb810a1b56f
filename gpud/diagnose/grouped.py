"""Findings about several GPUs said once: the titles of the kinds that apply GPU by GPU, for one GPU
or many, and the grouping of a diagnosis's findings for a person to read.

A diagnosis keeps one finding per GPU (its JSON lists each, with its own figures). Read that way, a
64-GPU machine whose cards all throttle is 124 findings: a person reads "GPUs 1–62 throttle
(thermal) 84–92 % of the time they work" once, with the worst GPU's evidence (a data-parallel job
runs at its slowest GPU's pace) and the others' figures beside it. Findings are grouped where they
say the same thing: one kind, one severity, one cause, one piece of advice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpud import words
from gpud.decide.throttle import ThrottleCause
from gpud.diagnose.finding import Finding
from gpud.diagnose.usage import LAZY_FAN_PCT
from gpud.words import share_text


@dataclass(frozen=True, slots=True)
class Gpus:
    """The GPUs a finding is about, and the words that agree with how many they are."""

    indexes: tuple[int, ...]

    @property
    def name(self) -> str:
        """``"GPU 2"``, ``"GPUs 1–6"``."""
        return words.gpus(list(self.indexes))

    def say(self, one: str, many: str) -> str:
        """``one`` for a single GPU, ``many`` for several."""
        return one if len(self.indexes) == 1 else many


def throttle_title(gpus: Gpus, cause: ThrottleCause, share: str) -> str:
    """``"GPU 2 throttles (thermal) 91 % of the time it works"``; a power cap is the card held at its limit."""
    works = gpus.say("it works", "they work")
    if cause is ThrottleCause.POWER:
        return f"{gpus.name} {gpus.say('is held at its', 'are held at their')} power limit {share} of the time {works}"
    return f"{gpus.name} {gpus.say('throttles', 'throttle')} ({cause.value}) {share} of the time {works}"


# What a GPU flagged for a cause at next to no cost is, for one GPU and for several.
FLAGGED_STATE = {
    ThrottleCause.THERMAL: ("is at its thermal limit", "are at their thermal limit"),
    ThrottleCause.OTHER: ("is flagged for a hardware slowdown", "are flagged for a hardware slowdown"),
}


def flagged_title(gpus: Gpus, cause: ThrottleCause, share: str) -> str:
    """``"GPU 2 is at its thermal limit 16 % of the time it works, at next to no cost yet"``."""
    return (
        f"{gpus.name} {gpus.say(*FLAGGED_STATE[cause])} {share} of the time {gpus.say('it works', 'they work')}, "
        "at next to no cost yet"
    )


def lazy_fans_title(gpus: Gpus) -> str:
    """The fans of GPUs at slowdown that had headroom left."""
    below = f"below {LAZY_FAN_PCT:.0f} %"
    return gpus.say(
        f"{gpus.name}'s fans stay {below} while it is at slowdown",
        f"the fans of {gpus.name} stay {below} while they are at slowdown",
    )


def saturated_fans_title(gpus: Gpus) -> str:
    """GPUs at slowdown with their fans at full speed."""
    return f"{gpus.name} {gpus.say('is', 'are')} at slowdown with {gpus.say('its', 'their')} fans at full speed"


def power_limit_title(gpus: Gpus, share: str) -> str:
    """GPUs at their power limit ``share`` of their busy time."""
    its = gpus.say("its", "their")
    return f"{gpus.name} {gpus.say('runs', 'run')} at {its} power limit {share} of {its} busy time"


def shares_text(shares: Sequence[float]) -> str:
    """The range of ``shares`` as people read it, one figure where they read alike.

    >>> shares_text([0.84, 0.92, 0.9]), shares_text([0.12, 0.121]), shares_text([0.003, 0.12])
    ('84–92 %', '12 %', '0.3–12 %')
    """
    low, high = share_text(min(shares)), share_text(max(shares))
    return high if low == high else f"{low.removesuffix(' %')}–{high}"


def _seconds_text(seconds: Sequence[float]) -> str:
    low, high = f"{min(seconds):.0f}", f"{max(seconds):.0f}"
    return f"{high} s" if low == high else f"{low}–{high} s"


def _figure(finding: Finding, name: str) -> float:
    value = finding.numbers.get(name)
    return float(value) if isinstance(value, int | float) else 0.0


@dataclass(frozen=True, slots=True)
class _Alike:
    """How one kind of finding about several GPUs is said: its title for them (from their findings),
    the figure that makes one GPU the worst, and the others' figures in words."""

    title: Callable[[Gpus, list[Finding]], str]
    worst_by: str  # the name, in its numbers, of the figure that makes a GPU's finding the worst
    others: Callable[[list[Finding]], str]


def _cause(finding: Finding) -> ThrottleCause:
    return ThrottleCause(str(finding.numbers["cause"]))


def _speeds_text(findings: list[Finding]) -> str:
    """The others' speed lost, where each is known; else their share of time throttled."""
    if all(isinstance(f.numbers.get("speed_lost"), float) for f in findings):
        return f"about {shares_text([_figure(f, 'speed_lost') for f in findings])} of their speed"
    return f"{shares_text([_figure(f, 'throttled_share') for f in findings])} of their working time throttled"


_ALIKE = {
    "throttling": _Alike(
        lambda gpus, fs: throttle_title(gpus, _cause(fs[0]), shares_text([_figure(f, "throttled_share") for f in fs])),
        "speed_lost",
        _speeds_text,
    ),
    "thermal-limit": _Alike(
        lambda gpus, fs: flagged_title(gpus, _cause(fs[0]), shares_text([_figure(f, "flagged_share") for f in fs])),
        "flagged_share",
        lambda fs: f"{shares_text([_figure(f, 'flagged_share') for f in fs])} of their working time flagged",
    ),
    "fans-lazy": _Alike(
        lambda gpus, _: lazy_fans_title(gpus),
        "seconds",
        lambda fs: _seconds_text([_figure(f, "seconds") for f in fs]),
    ),
    "fans-saturated": _Alike(
        lambda gpus, _: saturated_fans_title(gpus),
        "seconds",
        lambda fs: _seconds_text([_figure(f, "seconds") for f in fs]),
    ),
    "power-limit": _Alike(
        lambda gpus, fs: power_limit_title(gpus, shares_text([_figure(f, "share") for f in fs])),
        "share",
        lambda fs: f"{shares_text([_figure(f, 'share') for f in fs])} of their busy time",
    ),
}
_ALIKE["slowdown-flag"] = _ALIKE["thermal-limit"]


def _key(finding: Finding) -> tuple[object, ...] | None:
    """What findings must share to be said as one; ``None`` for a finding said on its own."""
    if finding.kind not in _ALIKE or len(finding.gpus) != 1:
        return None
    return finding.kind, finding.severity, finding.numbers.get("cause"), finding.recommendation


def grouped(findings: Sequence[Finding]) -> list[Finding]:
    """``findings`` (most costly first) as a person reads them: those alike (:func:`_key`) about
    several GPUs as one, where the most costly of them stood, naming every GPU it applies to."""
    groups: dict[tuple[object, ...], list[Finding]] = {}
    for finding in findings:
        if (key := _key(finding)) is not None:
            groups.setdefault(key, []).append(finding)
    said: list[Finding] = []
    for finding in findings:
        key = _key(finding)
        if key is None:
            said.append(finding)
        elif groups[key][0] is finding:
            members = groups[key]
            said.append(finding if len(members) == 1 else _one_for(members, _ALIKE[finding.kind]))
    return said


def _one_for(members: list[Finding], alike: _Alike) -> Finding:
    """One finding for ``members`` (alike, about one GPU each): the worst's evidence, the others' figures."""
    worst = max(members, key=lambda f: (_figure(f, alike.worst_by), f.cost))
    others = sorted((f for f in members if f is not worst), key=lambda f: f.gpus)
    every = Gpus(tuple(sorted(f.gpus[0] for f in members)))
    return Finding(
        kind=worst.kind,
        severity=worst.severity,
        title=alike.title(every, members),
        evidence=f"worst, {Gpus(worst.gpus).name}: {worst.evidence}; "
        f"{Gpus(tuple(f.gpus[0] for f in others)).name}: {alike.others(others)}",
        recommendation=worst.recommendation,
        gpus=every.indexes,
        cost=max(f.cost for f in members),
        numbers=worst.numbers,
    )
