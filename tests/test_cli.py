"""The command line as a person types it: global options on either side of the command, help, exit codes."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpud.cli import build_parser, main
from gpud.telemetry import GpuInfo
from gpud.trace.format import TraceHeader, header_line

FIXTURES = Path(__file__).parent / "trace" / "fixtures"
TRACE = FIXTURES / "sim_open_air_3gpu.jsonl"
GPUD = [sys.executable, "-m", "gpud"]


def leaf_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command line that names a handler: ``("run",)``, ``("fans", "reset")`` ..."""
    found = []
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for name, sub in action.choices.items():
            found += [(*words, name)] if sub._subparsers is None else leaf_commands(sub, (*words, name))
    return found


LEAVES = leaf_commands(build_parser())


@pytest.fixture
def configs(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[fans]\ncurve = "quiet"\n')
    broken = tmp_path / "broken.toml"
    broken.write_text("[fans]\ncurve = 42\n")
    return good, broken


def test_every_command_is_found():
    assert {"run", "status", "import", "replay", "record", "diagnose", "calibrate", "simulate"} <= {
        leaf[0] for leaf in LEAVES
    }
    assert {("fans", "reset"), ("setup", "coolbits"), ("check-config",)} <= set(LEAVES)


@pytest.mark.parametrize("words", LEAVES, ids=" ".join)
def test_every_command_has_help_with_the_global_options(words, capsys):
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    # from the usage on: a driver call an earlier test left hung may log its return meanwhile
    out = out[out.find("usage: gpud") :]
    assert out.startswith(f"usage: gpud {' '.join(words)} ")
    for option in ("--config FILE", "--log-format FORMAT", "--log-level LEVEL"):
        assert option in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{broken}", "replay", "{trace}"],
        ["replay", "{trace}", "--config", "{broken}"],
        ["--config", "{good}", "replay", "{trace}", "--config", "{broken}"],
    ],
    ids=["before", "after", "later-wins"],
)
def test_replay_reads_the_config_given_before_or_after_it(argv, configs, capsys):
    good, broken = configs
    argv = [a.format(good=good, broken=broken, trace=TRACE) for a in argv]
    assert main(argv) == 2
    assert str(broken) in capsys.readouterr().err


def test_replay_takes_the_later_config_when_given_twice(configs, capsys):
    good, broken = configs
    assert main(["--config", str(broken), "replay", str(TRACE), "--config", str(good)]) == 0
    assert "GPU" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--config", "{good}", "check-config"], "good"),
        (["check-config", "--config", "{good}"], "good"),
        (["--config", "{broken}", "check-config", "--config", "{good}"], "good"),
        (["--config", "{good}", "check-config", "--config", "{other}"], "other"),
    ],
    ids=["before", "after", "later-wins", "later-wins-again"],
)
def test_check_config_reads_the_config_given_before_or_after_it(argv, shown, configs, tmp_path, capsys):
    good, broken = configs
    other = tmp_path / "other.toml"
    other.write_text("interval_s = 2.0\n")
    paths = {"good": good, "broken": broken, "other": other}
    assert main([a.format(**paths) for a in argv]) == 0
    assert capsys.readouterr().out.startswith(f"# {paths[shown]}: ok")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--log-level", "debug", "record", "-o", "t"], ("debug", None)),
        (["record", "-o", "t", "--log-level", "debug", "--log-format", "json"], ("debug", "json")),
        (["--log-level", "error", "fans", "reset", "--log-level", "debug"], ("debug", None)),
        (["simulate"], (None, None)),
    ],
)
def test_log_options_are_taken_on_either_side_the_later_winning(argv, expected):
    args = build_parser().parse_args(argv)
    assert (args.log_level, args.log_format) == expected


def test_log_options_shape_the_settings_a_command_runs_with():
    from gpud.commands.shared import flagged_settings

    args = build_parser().parse_args(["record", "-o", "t", "--simulate", "--log-level", "warning"])
    assert flagged_settings(args).log_level == "warning"


def test_the_help_says_what_each_exit_status_means(capsys):
    """Scripts branch on them; only status, diagnose, import and a few others said theirs."""
    with pytest.raises(SystemExit):
        main(["--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert re.search(
        r"Exit status: 0 done; 1 failed .*; 2 a bad argument, .*, or no daemon answered .*; 130 interrupted", said
    ), said


def test_an_unknown_log_level_is_refused_as_usage(capsys):
    with pytest.raises(SystemExit) as done:
        main(["replay", str(TRACE), "--log-level", "loud"])
    assert done.value.code == 2
    assert "--log-level" in capsys.readouterr().err


def gpud(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GPUD, *argv], capture_output=True, text=True, check=False, timeout=60)


def test_a_usage_error_is_exit_2_in_one_line():
    done = gpud("diagnose", "--trace", str(TRACE), "--since", "soon")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["gpud: --since soon: expected a duration like 90s, 30m, 2h or 1d"]


def test_a_terminal_whose_encoding_lacks_a_symbol_gets_its_ascii_stand_in_not_a_traceback():
    """A shell whose locale is not UTF-8 cannot encode ``±`` (ASCII) or ``→`` (ISO-8859-1 either):
    replay's table ended in a ``UnicodeEncodeError`` traceback, exit 1."""
    done = subprocess.run(
        [*GPUD, "replay", str(TRACE)],
        capture_output=True,
        check=False,
        timeout=60,
        env=os.environ | {"PYTHONIOENCODING": "ascii"},
    )
    assert (done.returncode, done.stderr) == (0, b"")
    assert "neighbours +1.56 +/-0.08 degC/100 W" in done.stdout.decode("ascii")


@pytest.mark.parametrize(
    ("closed", "argv"),
    [
        (">&-", ["replay", str(TRACE)]),  # ended in an AttributeError on sys.stdout, exit 1
        ("2>&-", ["record", "--simulate", "1", "-o", "{tmp}/t.jsonl", "--duration", "1"]),  # could not start
    ],
)
def test_a_command_started_with_a_standard_stream_closed_runs_as_if_it_were_dev_null(tmp_path, closed, argv):
    command = [*GPUD, *(arg.format(tmp=tmp_path) for arg in argv)]
    done = subprocess.run(
        ["bash", "-c", f'"$@" {closed}', "bash", *command], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert closed == ">&-" or done.stdout.startswith(f"{tmp_path}/t.jsonl: 1 tick of 1 GPU")


def test_a_broken_config_is_exit_2_naming_the_file_without_a_traceback(configs):
    _, broken = configs
    done = gpud("replay", str(TRACE), "--config", str(broken))
    assert done.returncode == 2
    assert done.stderr.startswith(f"gpud: invalid config file {broken}")
    assert "Traceback" not in done.stderr


def test_no_driver_is_exit_1_with_the_simulate_hint():
    done = gpud("setup", "coolbits")
    if done.returncode == 0:
        pytest.skip("an NVIDIA driver answers on this machine")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("gpud: cannot use NVML") and line.endswith("gpud setup coolbits --simulate")


def help_text(words: tuple[str, ...]) -> str:
    parser = build_parser()
    for word in words:
        parser = next(a for a in parser._subparsers._group_actions).choices[word]
    return parser.format_help()


def sub_parser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in words:
        parser = next(a for a in parser._subparsers._group_actions).choices[word]
    return parser


@pytest.mark.parametrize("words", LEAVES, ids=" ".join)
def test_help_states_every_default_and_has_no_literal_percent_signs(words):
    parser = sub_parser(words)
    text = parser.format_help()
    assert "%%" not in text and "%(" not in text
    if parser.description:
        assert "%%" not in parser.description
    for action in parser._actions:
        takes_value = action.nargs != 0 and action.option_strings and not action.required
        if takes_value and action.dest != "help":
            assert "default" in (action.help or ""), f"{words} {action.option_strings}: no default stated"


def test_import_names_every_format_it_reads():
    text = " ".join(help_text(("import",)).split())
    for name in ("nvidia-smi", "dmon", "GPU-Z", "Afterburner", "gpud trace"):
        assert name in text


README = (Path(__file__).parent.parent / "README.md").read_text()


def readme_synopses() -> list[str]:
    """Every command line in the first column of the README's sub-command table."""
    section = README.split("## Sub-commands", 1)[1].split("\n## ", 1)[0]
    return [
        cell.replace("\\|", "|")
        for line in section.splitlines()
        if line.startswith("| `gpud ")
        for cell in [line.split("`")[1]]
    ]


def synopsis_command(synopsis: str) -> tuple[str, ...]:
    words = tuple(w for w in synopsis.split()[1:3] if not w.startswith(("-", "[")) and w.islower())
    return next(leaf for leaf in sorted(LEAVES, key=len, reverse=True) if words[: len(leaf)] == leaf)


@pytest.mark.parametrize("synopsis", readme_synopses())
def test_every_readme_synopsis_is_true(synopsis):
    parser = sub_parser(synopsis_command(synopsis))
    options = {string: action for action in parser._actions for string in action.option_strings}
    tokens = re.findall(r"(?:(?<=\s)|(?<=\[))(--?[a-z][\w.-]*)(?:[ =](\S+))?", synopsis)
    for flag, value in tokens:
        assert flag in options, (
            f"{synopsis}: {flag} is not an option of gpud {' '.join(synopsis_command(synopsis))}"
        )
        choices = options[flag].choices
        named = value.strip("[]").split("|")
        if choices and len(named) > 1:
            assert sorted(named) == sorted(choices), f"{synopsis}: {flag} {value} vs {sorted(choices)}"


def test_the_readme_lists_every_command():
    listed = {synopsis_command(s) for s in readme_synopses()}
    assert listed == set(LEAVES)


def gpud_to(stdout, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpud", *argv],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("signum", "times"),
    [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)],
    ids=["SIGTERM", "SIGINT, ignored by the parent", "SIGTERM twice, as timeout sends it"],
)
def test_record_stopped_by_a_signal_keeps_the_trace_and_says_so_as_after_ctrl_c(tmp_path, signum, times):
    """``gpud record ... &`` in a script runs with SIGINT ignored, and ``kill`` sends SIGTERM: either
    ends the recording early as Ctrl-C does, the trace closed and summed up, exit 0. ``timeout``
    sends SIGTERM to gpud and then to its process group: the second, in the wind-down, made it exit
    130 saying "interrupted"."""
    trace = tmp_path / "t.jsonl"
    record = [*GPUD, "record", "-o", str(trace), "--simulate", "1", "--duration", "60"]
    ignoring = ["bash", "-c", 'trap "" INT; exec "$@"', "bash", *record, "--log-level", "warning"]
    with subprocess.Popen(ignoring, stdout=subprocess.PIPE, text=True) as child:
        deadline = time.monotonic() + 30
        while not _lines(trace) >= 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the header and a first tick: it is recording
        for _ in range(times):
            child.send_signal(signum)
            time.sleep(0.01)  # the second one while the trace is being closed
        out, _ = child.communicate(timeout=10)
    assert child.returncode == 0
    assert re.fullmatch(rf"{re.escape(str(trace))}: \d+ ticks? of 1 GPU.*\n", out), out
    assert _lines(trace) >= 2


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_results_that_cannot_be_written_are_one_line_and_exit_2(tmp_path):
    trace = tmp_path / "t.jsonl"
    record = ["record", "-o", str(trace), "--simulate", "1", "--sim-speed", "30", "--duration", "2"]
    done = gpud_to(subprocess.PIPE, *record, "--log-level", "warning")
    # The trace's own time: 30 s at 30x, a tick a few ms late on a loaded machine reading 30.1 s.
    said = rf"{re.escape(str(trace))}: 2 ticks of 1 GPU over 30(\.\d)? s, one every 30(\.\d)? s\n"
    assert re.fullmatch(said, done.stdout), done.stdout
    no_space = "No space left on device"
    for command in (["replay", str(trace)], ["replay", str(trace), "--json"], ["check-config"]):
        with open("/dev/full", "w") as full:
            done = gpud_to(full, *command)
        assert (done.returncode, done.stderr) == (2, f"gpud: cannot write the standard output: {no_space}\n")
    for command in (
        ["report", str(trace), "-o", "/dev/full"],
        ["setup", "coolbits", "--simulate", "--write", "/dev/full"],
    ):
        done = gpud_to(subprocess.PIPE, *command, "--log-level", "error")
        assert (done.returncode, done.stderr) == (2, f"gpud: cannot write /dev/full: {no_space}\n"), command


@pytest.mark.parametrize(
    "command",
    [
        ["replay", "IN"],
        ["diagnose", "--trace", "IN"],
        ["report", "IN", "-o", "r.html"],
        ["import", "IN", "-o", "t.jsonl"],
        ["calibrate", "IN", "-o", "m.json"],
    ],
)
def test_an_input_that_cannot_be_read_is_a_usage_error_not_a_finding(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    for missing in (tmp_path / "nope.jsonl", tmp_path):  # diagnose's exit 1 would mean "a critical finding"
        assert main([str(missing) if word == "IN" else word for word in command]) == 2
        assert capsys.readouterr().err.startswith(f"gpud: cannot read {missing}: ")


@pytest.mark.parametrize(
    "command",
    [["import", "IN", "-o", "IN"], ["report", "IN", "-o", "IN"], ["report", "--trace", "IN", "-o", "./IN"]],
)
def test_an_output_that_is_the_log_being_read_is_refused_and_the_log_kept(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "IN"
    shutil.copy(FIXTURES / "query_throttle_by_clocks.csv", log)
    before = log.read_bytes()
    assert main(command) == 2
    output = Path(command[-1])  # as argparse made it: ./IN is IN
    assert capsys.readouterr().err == (
        f"gpud: cannot write {output}: it is the file being read; write the result to another file\n"
    )
    assert log.read_bytes() == before


@pytest.mark.parametrize(
    "command",
    [
        ["import", str(TRACE), "-o", "-"],
        ["report", str(TRACE), "-o", "-"],
        ["calibrate", str(TRACE), "-o", "-"],
        ["record", "--simulate", "1", "--duration", "1", "-o", "-"],
        ["setup", "coolbits", "--simulate", "1", "--write", "-"],
        ["simulate", "--gpus", "1", "--duration", "10", "--report", "-"],
    ],
)
def test_an_output_named_dash_is_refused_not_written_as_a_file_named_dash(tmp_path, capsys, monkeypatch, command):
    """``-o -`` is the standard output to many tools; gpud wrote a file named "-" where it was run."""
    monkeypatch.chdir(tmp_path)
    assert main(command) == 2
    assert capsys.readouterr().err == (
        "gpud: cannot write -: gpud writes its results to a file, not to the standard output: name one\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_diagnose_takes_its_trace_as_report_and_replay_do_or_as_an_option(capsys):
    log = str(FIXTURES / "query_throttle_by_clocks.csv")
    assert main(["diagnose", log]) == 1  # a critical finding
    positional = capsys.readouterr().out
    assert main(["diagnose", "--trace", log]) == 1
    assert capsys.readouterr().out == positional and "GPU 1 throttles (other)" in positional


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["run", "--simulte"],
            "unrecognized arguments: --simulte (did you mean --simulate?) (see gpud run --help)",
        ),
        (
            ["record", "-o", "t.jsonl", "--durtion", "5"],
            "unrecognized arguments: --durtion 5 (did you mean --duration?) (see gpud record --help)",
        ),
        (
            ["status", "--jsn", "--brif"],
            "unrecognized arguments: --jsn --brif (did you mean --json for --jsn, --brief for --brif?)"
            + " (see gpud status --help)",
        ),
        (["fans", "reset", "--bogus"], "unrecognized arguments: --bogus (see gpud fans reset --help)"),
        (["replay", "a.jsonl", "b.jsonl"], "unrecognized arguments: b.jsonl (see gpud replay --help)"),
        # A command's option before the command: it said "--simulate (did you mean --simulate?)", and
        # took an option's value for the command ("invalid choice: '9877'").
        (["--simulate", "run"], "--simulate goes after the command: gpud run --simulate ... (see gpud run --help)"),
        (["--url", "9877", "status"], "--url goes after the command: gpud status --url ... (see gpud status --help)"),
        (
            ["-o", "t.jsonl", "import", "log.csv"],
            "-o goes after the command: gpud import -o ... (see gpud import --help)",
        ),
        (
            ["--simulate=2", "fans", "reset"],
            "--simulate goes after the command: gpud fans reset --simulate ... (see gpud fans reset --help)",
        ),
    ],
)
def test_what_a_command_does_not_take_is_refused_by_its_own_help_with_the_likely_spelling(argv, line, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert capsys.readouterr() == ("", f"gpud: {line}\n")


@pytest.mark.parametrize(("source", "host_judged"), [("nvml", True), ("simulated", False)])
def test_diagnose_judges_this_host_only_beside_its_own_gpus(tmp_path, capsys, source, host_judged):
    """A trace recorded here is judged with this machine's RAM; one of simulated GPUs is not: the
    host's RAM and cores say nothing about cards it does not have."""
    petabyte = 1 << 50  # more than any host's RAM: the notice is certain where the host is judged
    info = GpuInfo(0, "GPU-0", "RTX 3090", "00:17:00.0", "550", memory_total_bytes=petabyte)
    sample = {"index": 0, "temperature_c": 50.0, "gpu_util_pct": 99.0}
    ticks = [{"t": 1000.0 + second, "gpus": [sample]} for second in range(5)]
    trace = tmp_path / "here.jsonl"
    lines = [header_line(TraceHeader(socket.gethostname(), (info,), source)), *map(json.dumps, ticks)]
    trace.write_text("\n".join(lines) + "\n")
    assert main(["diagnose", str(trace), "--json"]) == 0
    kinds = {finding["kind"] for finding in json.loads(capsys.readouterr().out)["findings"]}
    assert ("host-memory" in kinds) is host_judged


@pytest.mark.parametrize(
    ("command", "to"),
    [
        (["replay", "IN"], "judge"),
        (["diagnose", "--trace", "IN"], "judge"),
        (["report", "IN", "-o", "r.html"], "report on"),
        (["import", "IN", "-o", "t.jsonl"], "import"),
    ],
)
def test_a_trace_without_ticks_is_said_so_in_one_line(tmp_path, capsys, monkeypatch, command, to):
    monkeypatch.chdir(tmp_path)
    trace = tmp_path / "header-only.jsonl"
    trace.write_text(
        header_line(TraceHeader("h", (GpuInfo(0, "GPU-0", "RTX 3090", "00:17:00.0", "550"),), "gpud")) + "\n"
    )
    assert main([str(trace) if word == "IN" else word for word in command]) == 2  # not "no findings"
    assert capsys.readouterr() == ("", f"gpud: {trace}: no ticks in it: nothing to {to}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["header-only.jsonl"]  # no output written
