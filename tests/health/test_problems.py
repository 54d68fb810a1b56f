"""A GPU's health problems: which count, how urgent, what the row says. Pure table tests."""

from __future__ import annotations

import pytest

from gpud.health.problems import RECENT_XID_S, gpu_problems, memory_problems, problem_text, row_text
from gpud.health.severity import Severity
from gpud.telemetry import MemoryHealth, XidEvent, XidRecord

NOW = 1_800_000_000.0


def xids(*events: tuple[int, float]) -> XidRecord:
    counts: dict[int, int] = {}
    for xid, _ in events:
        counts[xid] = counts.get(xid, 0) + 1
    return XidRecord(tuple(sorted(counts.items())), tuple(XidEvent(x, NOW - ago) for x, ago in events))


def test_a_healthy_gpu_has_no_problems():
    assert gpu_problems(MemoryHealth(ecc_enabled=True, ecc_uncorrected_volatile=0), XidRecord(), NOW) == []
    assert gpu_problems(None, None, NOW) == []  # nothing known: nothing said


def test_xids_that_go_uncounted_are_a_warning_on_a_gpu_up_and_none_on_one_down():
    (problem,) = gpu_problems(None, XidRecord(watched=False), NOW)
    assert (problem.kind, problem.severity, problem.summary) == ("xids-unwatched", Severity.WARNING, "XIDs not watched")
    assert gpu_problems(None, XidRecord(watched=False), NOW, up=False) == []  # down is said already


def test_repeats_of_one_xid_are_one_problem_with_their_count_and_last_time():
    (problem,) = gpu_problems(None, xids((13, 60), (13, 30)), NOW)
    assert (problem.xid, problem.count, problem.at, problem.severity) == (13, 2, NOW - 30, Severity.NOTICE)


def test_an_xid_older_than_the_window_is_no_current_problem():
    assert gpu_problems(None, xids((79, RECENT_XID_S + 1)), NOW) == []
    assert [p.xid for p in gpu_problems(None, xids((79, RECENT_XID_S - 1)), NOW)] == [79]


def test_the_most_urgent_problem_comes_first_the_present_state_before_past_events():
    found = gpu_problems(MemoryHealth(row_remap_pending=True), xids((13, 5), (48, 100), (79, 50)), NOW)
    assert [(p.kind, p.xid) for p in found] == [
        ("row-remap-pending", None),
        ("xid", 79),
        ("xid", 48),
        ("xid", 13),
    ]


@pytest.mark.parametrize(
    ("memory", "kinds"),
    [
        (MemoryHealth(row_remap_pending=True, row_remap_failed=False), ["row-remap-pending"]),
        (MemoryHealth(row_remap_failed=True), ["row-remap-failed"]),
        (MemoryHealth(retired_pages_pending=True), ["pages-pending"]),
        (MemoryHealth(ecc_uncorrected_volatile=3, ecc_uncorrected_aggregate=9), ["ecc-uncorrected"]),
        (MemoryHealth(ecc_uncorrected_volatile=0, ecc_uncorrected_aggregate=9), []),  # fixed by a past reset
        (MemoryHealth(ecc_corrected_volatile=1000), []),  # corrected: ECC did its job
    ],
)
def test_memory_problems_are_what_needs_doing(memory, kinds):
    found = memory_problems(memory)
    assert [p.kind for p in found] == kinds
    assert all(p.severity is Severity.CRITICAL for p in found)


def test_a_failed_remap_means_a_new_card():
    (problem,) = memory_problems(MemoryHealth(row_remap_failed=True))
    assert problem.do == "replace the card" and "RMA" in problem.detail


def test_the_row_says_what_how_long_ago_and_what_to_do():
    problems = [
        p.as_json(NOW) for p in gpu_problems(MemoryHealth(row_remap_pending=True), xids((79, 180)), NOW)
    ]
    assert row_text(problems) == (
        "row remap pending: reset the GPU; XID 79 3 min ago: fell off the bus (reboot the node)"
    )
    assert problem_text(gpu_problems(None, xids((13, 2), (13, 1)), NOW)[0].as_json(NOW)) == (
        "XID 13 1 s ago ×2: graphics engine exception (the job's fault)"
    )


def test_a_long_list_is_cut_in_the_row():
    problems = [p.as_json(NOW) for p in gpu_problems(None, xids((13, 1), (31, 2), (43, 3), (45, 4)), NOW)]
    assert row_text(problems).endswith("+1 more (gpud status --json)")


@pytest.mark.parametrize(("count", "summary"), [(1, "1 uncorrected ECC error"), (3, "3 uncorrected ECC errors")])
def test_uncorrected_errors_are_counted_in_words(count, summary):
    (problem,) = memory_problems(MemoryHealth(ecc_uncorrected_volatile=count))
    assert problem.summary == summary
    assert problem.detail.startswith(summary.replace("uncorrected ECC", "uncorrectable memory") + " since")
