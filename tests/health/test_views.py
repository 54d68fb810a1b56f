"""Health and users in every view, from a daemon ticking on simulated GPUs with health faults:
/metrics, /status and gpud status, traces, gpud diagnose and the fleet table."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpud.daemon import Daemon
from gpud.decide.controller import DecideSettings
from gpud.diagnose.findings import diagnose
from gpud.diagnose.settings import DiagnoseSettings
from gpud.fleet import HostStatus, fleet_exit_code, render_fleet
from gpud.health.report import process_lines
from gpud.nvml.library import open_nvml
from gpud.nvml.source import NvmlSource
from gpud.replay import LoadedTrace
from gpud.sim.faults import FaultyNvmlLibrary, parse_faults
from gpud.sim.machine import Layout
from gpud.status import exit_code, render_table, status_document
from gpud.trace.format import TraceHeader, parse_snapshot, snapshot_line
from tests.metrics_text import exposition
from tests.test_end_to_end import wait_for

CHECKED = (
    "xid:gpu=1,code=79,at=4;xid:gpu=0,code=13,at=4;xid:gpu=0,code=13,at=5;"
    "ecc:gpu=2,kind=uncorrected,count=3,at=4;remap:gpu=3,at=4"
)


@pytest.fixture
def run(install_nvml, clock) -> Callable[..., Daemon]:
    """Returns ``run(spec, seconds=12, gpus=4, layout=..., per_job=False)``: a daemon ticked once a
    simulated second through the faults, its processes listed."""
    daemons: list[Daemon] = []

    def start(
        spec: str, seconds: int = 12, gpus: int = 4, layout: Layout = Layout.OPEN_AIR, per_job: bool = False
    ) -> Daemon:
        library = install_nvml(gpus=gpus, layout=layout)
        faults, seed = parse_faults(spec)
        open_nvml(FaultyNvmlLibrary(library, faults, seed))
        source = NvmlSource(clock=library.unix_time, process_interval_s=0.02, host=library.jobs)
        daemon = Daemon(source, "simulated", 1.0, per_job_metrics=per_job)
        daemons.append(daemon)
        wait_for(lambda: source._xids.watching, 5, "the XID thread")
        for _ in range(seconds):
            clock.advance(1.0)
            daemon.tick()
        # The events thread and the process thread run beside the ticks: let them catch up.
        wait_for(lambda: _settled(daemon, spec), 5, "the XIDs and process lists")
        return daemon

    yield start
    for daemon in daemons:
        daemon._source.close()


def _settled(daemon: Daemon, spec: str) -> bool:
    daemon.tick()
    gpus = daemon.state.snapshot.gpus
    xids = sum(count for g in gpus if g.xids for _, count in g.xids.counts)
    return xids >= spec.count("xid:") + spec.count("remap:") and all(g.processes for g in gpus if g.up)


def samples(daemon: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(daemon)
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "uuid"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_every_xid_and_say_what_each_card_reports(run):
    found = samples(run(CHECKED))
    xid = {labels: value for (name, labels), value in found.items() if name == "gpud_gpu_xid_errors_total"}
    assert xid == {
        (("gpu", "0"), ("xid", "13")): 2,  # two faults, two events, both counted
        (("gpu", "1"), ("xid", "79")): 1,  # counted although the GPU is down now
        (("gpu", "3"), ("xid", "63")): 1,  # the driver's XID for the recorded remap
    }
    assert (
        found[("gpud_gpu_ecc_errors_total", (("gpu", "2"), ("kind", "uncorrected"), ("scope", "volatile")))]
        == 3
    )
    assert (
        found[("gpud_gpu_ecc_errors_total", (("gpu", "2"), ("kind", "uncorrected"), ("scope", "aggregate")))]
        == 3
    )
    assert found[("gpud_gpu_row_remap_pending", (("gpu", "3"),))] == 1
    assert found[("gpud_gpu_row_remap_failed", (("gpu", "3"),))] == 0
    assert found[("gpud_gpu_remapped_rows", (("gpu", "3"), ("kind", "uncorrected")))] == 1
    # GPU 0 is a GeForce card: no ECC, no remapping: no series at all, not zeros.
    assert not [key for key in found if key[1][:1] == (("gpu", "0"),) and "ecc" in key[0] + "remap"]
    assert not [key for key in found if "retired_pages" in key[0]]  # nothing here retires pages
    assert found[("gpud_gpu_up", (("gpu", "1"),))] == 0
    assert ("gpud_gpu_processes", (("gpu", "1"),)) not in found  # down: whose it was is not known
    assert found[("gpud_gpu_processes", (("gpu", "0"),))] == 1
    users = {
        labels: value for (name, labels), value in found.items() if name == "gpud_gpu_process_memory_bytes"
    }
    assert {dict(labels)["user"] for labels in users} == {"alice", "bob"} and all(
        v > 1e10 for v in users.values()
    )
    assert not [key for key in found if key[0] == "gpud_gpu_job_memory_bytes"]  # off unless asked for


def test_per_job_series_come_with_the_switch_and_a_nameless_user_is_its_uid(run):
    found = samples(run("xid:gpu=0,code=13,at=2", gpus=6, per_job=True))
    jobs = {
        dict(labels)["gpu"]: (dict(labels)["user"], dict(labels)["job"])
        for (name, labels), _ in found.items()
        if name == "gpud_gpu_job_memory_bytes"
    }
    assert jobs["0"] == ("alice", "slurm:4242")
    assert jobs["2"][0] == "bob" and jobs["2"][1].startswith("container:")
    assert jobs["4"] == ("1000", "pod:llm-serve-6d9f8b7c4-x2x9q")  # its user has no name on the host


def test_status_says_what_is_wrong_with_each_gpu_and_who_is_on_it(run):
    document = status_document(run(CHECKED).state)
    gpus = document["gpus"]
    assert [g["health"]["status"] for g in gpus] == ["notice", "critical", "critical", "critical"]
    assert exit_code(document) == 1
    (process,) = gpus[0]["processes"]
    assert (process["user"], process["uid"], process["slurm_job"], process["job"]) == (
        "alice",
        1001,
        "4242",
        "slurm:4242",
    )
    assert (
        process["pid"] > 0
        and process["used_memory_bytes"] > 0
        and process["command"].startswith("python train.py")
    )
    assert gpus[1]["processes"] is None and gpus[1]["health"]["xids"] == {"79": 1}
    assert gpus[2]["health"]["memory"]["ecc_uncorrected_volatile"] == 3
    rows = {line.split()[0]: line for line in render_table(document).splitlines() if line[:1].isdigit()}
    assert "DOWN; XID 79" in rows["1"] and "fell off the bus (reboot the node)" in rows["1"]
    assert "row remap pending: reset the GPU" in rows["3"]
    assert "3 uncorrected ECC errors: reset the GPU" in rows["2"]
    assert "XID 13" in rows["0"] and "×2" in rows["0"] and "alice" in rows["0"]
    table = render_table(document)
    assert "Processes:" in table and "pid 31337" in table and "container:3f9c2a7be41d" in table


def test_a_job_fault_alone_is_no_reason_to_exit_1(run):
    document = status_document(run("xid:gpu=0,code=13,at=2").state)
    assert document["gpus"][0]["health"]["problems"][0]["xid"] == 13 and exit_code(document) == 0


def test_traces_keep_health_but_not_who_ran(run):
    snapshot = run(CHECKED).state.snapshot
    line = snapshot_line(snapshot)
    assert "alice" not in line and "train.py" not in line
    again = parse_snapshot(json.loads(line))
    for before, after in zip(snapshot.gpus, again.gpus, strict=True):
        assert after.memory_health == before.memory_health
        assert after.xids.counts == before.xids.counts
        assert [e.xid for e in after.xids.recent] == [e.xid for e in before.xids.recent]
        assert after.processes is None


def test_diagnose_explains_each_xid_and_memory_problem_from_the_history(run):
    daemon = run(CHECKED)
    header = TraceHeader("box", daemon.state.gpus, "simulated")
    ticks = [parse_snapshot(json.loads(line)) for line in b"".join(daemon.history.serve()[1]).splitlines()]
    trace = LoadedTrace.of("history", header, ticks, [], 0)
    findings = diagnose(trace, DecideSettings(), DiagnoseSettings()).findings
    by_title = {f.title: f for f in findings}
    lost = by_title["GPU 1: XID 79, fell off the bus"]
    assert lost.severity.value == "critical" and "reboot" in lost.recommendation
    assert "has not answered since" in lost.evidence and "once" in lost.evidence
    assert "2 times" in by_title["GPU 0: XID 13, graphics engine exception"].evidence
    assert "reset" in by_title["GPU 3: row remap pending"].recommendation
    assert "3 uncorrected" in by_title["GPU 2: 3 uncorrected ECC errors"].evidence
    assert findings[0].severity.value == "critical"  # the job is dead: first


def test_a_failed_remap_is_a_finding_that_says_replace_the_card(run):
    daemon = run("remap:gpu=0,at=2,failed=1", gpus=1, layout=Layout.PASSIVE)
    ticks = [parse_snapshot(json.loads(line)) for line in b"".join(daemon.history.serve()[1]).splitlines()]
    trace = LoadedTrace.of("t", TraceHeader("box", daemon.state.gpus), ticks, [], 0)
    found = {f.kind: f for f in diagnose(trace, DecideSettings(), DiagnoseSettings()).findings}
    assert "RMA" in found["row-remap-failed"].recommendation
    assert found["xid"].title == "GPU 0: XID 64, memory repair failed"


@pytest.mark.parametrize("reset", [False, True])
def test_a_memory_repair_asks_for_a_reset_until_the_gpu_has_been_reset(run, reset):
    spec = "remap:gpu=0,at=2" + (";reset:gpu=0,at=6" if reset else "")
    daemon = run(spec, gpus=1, layout=Layout.PASSIVE)
    ticks = [parse_snapshot(json.loads(line)) for line in b"".join(daemon.history.serve()[1]).splitlines()]
    trace = LoadedTrace.of("t", TraceHeader("box", daemon.state.gpus), ticks, [], 0)
    found = {f.kind: f for f in diagnose(trace, DecideSettings(), DiagnoseSettings()).findings}
    row = render_table(status_document(daemon.state)).splitlines()[2]
    assert found["xid"].title == "GPU 0: XID 63, memory repair recorded"
    if reset:
        assert "row-remap-pending" not in found and "reset the GPU" not in row
        assert found["xid"].severity.value == "notice"
        assert found["xid"].recommendation.startswith("nothing left to do: done since")
        assert "XID 63" in row and "done since: the driver reports no repair pending" in row
    else:
        assert found["xid"].severity.value == "warning" and "reset it" in found["xid"].recommendation
        assert "XID 63" in row and "(reset the GPU)" in row


def test_the_fleet_puts_unhealthy_gpus_first_with_the_reason(run):
    sick = status_document(run(CHECKED).state)["gpus"]
    table = render_fleet([HostStatus("sick:9877", sick)])
    rows = table.splitlines()[2:]  # after the title and the header
    order = [int(re.search(r"sick:9877\s+(\d+)", row).group(1)) for row in rows]
    assert set(order[:3]) == {1, 2, 3} and order[3] == 0  # the three critical GPUs, then the notice
    assert all(row.startswith("!!") for row in rows[:3]) and "XID 79" in table
    assert fleet_exit_code([HostStatus("sick:9877", sick)]) == 1


def test_the_process_list_keeps_its_columns_whatever_the_length_of_a_job():
    def process(pid: int, job: str) -> dict:
        return {
            "pid": pid,
            "user": "alice",
            "job": job,
            "used_memory_bytes": 2 * 1024**3,
            "command": "python x.py",
        }

    pod = "pod:llm-serve-6d9f8b7c4-x2x9q-with-a-long-deployment-name"
    lines = process_lines(
        [
            {"index": 0, "processes": [process(7, "slurm:4242")]},
            {"index": 1, "processes": [process(31338, pod)]},
        ]
    )
    assert lines[0] == "Processes:"
    assert len({line.index("2.0 GiB") for line in lines[1:]}) == 1  # memory in one column
    assert len({line.index("python") for line in lines[1:]}) == 1
