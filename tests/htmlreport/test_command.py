"""``gpud report`` and ``gpud simulate --report`` as a user runs them: on logs gpud imports, on a
running daemon, and without the report extra installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpud.cli import main
from gpud.daemon import Daemon
from gpud.httpclient import EXIT_NO_DAEMON
from gpud.server import StatusServer
from tests.htmlreport.test_page import Elements
from tests.test_end_to_end import gpud

FIXTURES = Path(__file__).parent / "fixtures"


def sections(page: str) -> list[dict[str, str | None]]:
    return [attrs for tag, attrs in Elements(page).tags if tag == "section" and "data-gpu" in attrs]


@pytest.mark.parametrize(
    ("log", "gpus", "panels"),
    [
        ("nvidia_smi_query.csv", 2, "temperature clock fans power utilisation"),
        ("dmon.txt", 2, "temperature clock power utilisation"),  # dmon logs no fans
        ("gpuz_sensor_log.txt", 1, "temperature clock fans power utilisation"),
        ("afterburner.hml", 1, "temperature clock fans power utilisation"),
    ],
)
def test_a_report_of_each_log_gpud_imports_shows_its_gpus_and_their_throttling(
    log, gpus, panels, tmp_path, capsys
):
    out = tmp_path / "report.html"
    assert main(["report", str(FIXTURES / log), "-o", str(out)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"{out}: report of {gpus} GPU{'s' if gpus > 1 else ''}, ")
    page = out.read_text(encoding="utf-8")
    assert [s["data-panels"] for s in sections(page)] == [panels] * gpus
    assert "throttles (thermal)" in page  # each log heats a card into its slowdown


def test_a_report_of_the_running_daemons_history(install_nvml, nvml_source, clock, tmp_path, capsys):
    library = install_nvml(gpus=3)
    daemon = Daemon(nvml_source(clock=library.unix_time), "simulated", 1.0)
    server = StatusServer(("127.0.0.1", 0), daemon.exposition, daemon.current, daemon.history)
    server.start()
    try:
        for _ in range(900):  # a quarter of an hour; the history keeps a tick in 30 s
            clock.advance(1.0)
            daemon.tick()
        port = server.server_address[1]
        url = f"http://127.0.0.1:{port}"
        out = tmp_path / "daemon.html"
        # The address as every client takes it: here a bare port, on this host.
        assert main(["report", "--url", str(port), "--since", "10m", "-o", str(out)]) == 0
    finally:
        server.stop()
    said = capsys.readouterr().out.splitlines()[-1]  # after what the daemon logged
    assert said.startswith(f"{out}: report of 3 GPUs, 10 min from {url}/history")
    page = out.read_text(encoding="utf-8")
    assert [s["id"] for s in sections(page)] == ["gpu-0", "gpu-1", "gpu-2"]
    assert "(recorded by gpud on simulated GPUs)" in page


def test_no_daemon_no_file_no_folder_a_directory_a_bad_address_each_say_so_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "r.html")
    assert main(["report", "--url", "127.0.0.1:9", "-o", out]) == EXIT_NO_DAEMON
    assert main(["report", str(tmp_path / "missing.jsonl"), "-o", out]) == 2  # an input that cannot be read: a usage error
    assert main(["report", str(FIXTURES / "dmon.txt"), "-o", str(tmp_path / "no" / "r.html")]) == 2
    assert main(["report", str(FIXTURES / "dmon.txt"), "-o", str(tmp_path)]) == 2
    assert main(["report", "--url", "ftp://ws1", "-o", out]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["gpud"] * 5
    assert "no gpud answered at http://127.0.0.1:9/history" in lines[0]
    assert str(tmp_path / "missing.jsonl") in lines[1]
    assert lines[2] == (
        f"gpud: cannot write {tmp_path / 'no' / 'r.html'}: the folder {tmp_path / 'no'} does not exist"
    )
    assert lines[3] == f"gpud: cannot write {tmp_path}: it is a directory"
    assert lines[4].startswith("gpud: --url ftp://ws1: expected")
    assert not (tmp_path / "r.html").exists()


def test_the_page_is_written_as_every_gpud_output_is_never_through_a_link(tmp_path):
    target = tmp_path / "elsewhere.html"
    target.write_text("kept")
    link = tmp_path / "r.html"
    link.symlink_to(target)
    assert main(["report", str(FIXTURES / "dmon.txt"), "-o", str(link)]) == 2
    assert target.read_text() == "kept"


@pytest.mark.slow
def test_without_the_report_extra_the_command_says_how_to_install_it(tmp_path):
    blocked = (
        "import sys; sys.modules['matplotlib'] = None; from gpud.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    commands = {"gpud report": ["report", str(FIXTURES / "dmon.txt")]}
    commands["gpud simulate --report"] = ["simulate", "--duration", "10", "--report"]  # said "gpud report"
    for needing, command in commands.items():
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                blocked,
                *command,
                *(["-o"] if command[0] == "report" else []),
                str(tmp_path / "r"),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert (done.returncode, done.stderr) == (1, f"gpud: {needing} needs matplotlib: pip install 'gpud[report]'\n")
        assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_simulate_report_writes_the_comparison_and_leaves_the_json_as_it_was(tmp_path):
    # In a process of its own: gpud simulate sets the logging up for the whole process.
    flags = ["simulate", "--gpus", "2", "--duration", "120", "--compare", "stock", "predictive", "--json"]
    plain = gpud(*flags)
    out = tmp_path / "policies.html"
    reported = gpud(*flags, "--report", str(out))
    assert plain.returncode == reported.returncode == 0
    assert reported.stdout == plain.stdout and json.loads(reported.stdout)["policies"]
    assert reported.stderr == f"{out}: report of 3 policies ({out.stat().st_size / 1e6:.2f} MB)\n"
    page = out.read_text(encoding="utf-8")
    ids = {attrs["id"] for attrs in Elements(page).with_attribute("id")}
    assert {f"policies-{n}-{row}" for n in range(3) for row in ("temperature", "fan")} <= ids
    for policy in ("stock", "predictive", "limit"):
        assert f'<tr data-policy="{policy}">' in page


def test_a_slowdown_the_log_does_not_state_is_said_to_be_assumed(tmp_path, capsys):
    """dmon logs no slowdown temperature: the 80 °C default is no H200's own (it slows near 90 °C), so
    the page must not state it as the card's. Was: "hottest held for a minute 80 °C (slowdown 80 °C)"."""
    recorded = Path(__file__).parents[1] / "trace" / "fixtures" / "sim_open_air_3gpu.jsonl"  # has its own
    pages = {}
    for log in (FIXTURES / "dmon.txt", recorded):
        out = tmp_path / f"{log.stem}.html"
        assert main(["report", str(log), "-o", str(out)]) == 0
        pages[log.stem] = out.read_text(encoding="utf-8")
    capsys.readouterr()
    assert "(slowdown not logged: 80 °C assumed)" in pages["dmon"]
    assert "(slowdown 80 °C)" not in pages["dmon"]
    assert "(slowdown 80 °C)" in pages["sim_open_air_3gpu"] and "assumed" not in pages["sim_open_air_3gpu"]
