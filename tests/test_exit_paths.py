"""Every way ``gpud run`` can end or be told something, as real processes: fans end on automatic.

The fake nvidia-settings on PATH is the recording fan backend: every command the daemon sends
is in its log, so "no fan left on manual" is read from what was really sent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpud.daemon import MIN_STALL_S
from tests.test_end_to_end import GPUD, free_port, gpud, scrape, status, wait_for
from tests.test_fan_control_end_to_end import last_command_per_gpu

GPUS = 3


def every_fan_targeted(fake) -> bool:
    targeted = {a.split("]")[0] for a in fake.assignments() if "GPUTargetFanSpeed" in a}
    return targeted >= {f"[fan:{n}" for n in range(2 * GPUS)}


def handed_back(fake) -> bool:
    return last_command_per_gpu(fake.assignments(), 2) == {
        n: f"[gpu:{n}]/GPUFanControlState=0" for n in range(GPUS)
    }


@pytest.mark.slow
def test_sighup_reloads_the_curves_without_letting_go_of_the_fans(fake_nvidia_settings, tmp_path):
    fake, config, port, daemon, log = quiet_curve_daemon(fake_nvidia_settings, tmp_path)
    try:
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        taken = len(fake.assignments())
        config.write_text('[fans]\ncurve = "cool"\n')
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: min(targets(port) or [0]) >= 35, 20, "the cool curve's targets (35 % and up)")
        config.write_text("[fans]\ncurve = 42\n")  # broken: the running settings stay
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration not reloaded" in log.read_text(), 10, "the reload error")
        assert daemon.poll() is None and min(targets(port)) >= 35
        while_running = fake.assignments()[taken:]
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert not any("GPUFanControlState=0" in a for a in while_running)  # never let go meanwhile
    assert handed_back(fake)
    names = [e["event"] for e in events(log)]
    assert names.count("configuration reloaded") == 1


def start(
    tmp_path: Path, port: int, *flags: str, config: Path | None = None, process_group: int | None = None
) -> tuple[subprocess.Popen, Path]:
    """``gpud run --simulate 3`` with its log going to a file (a pipe could fill and block it);
    ``process_group=0`` puts it in a process group of its own, as a shell's job control does."""
    log = tmp_path / f"gpud-{port}.log"
    top = ["--config", str(config)] if config else []
    daemon = subprocess.Popen(
        [*GPUD, *top, "run", "--simulate", str(GPUS), "--listen", f"127.0.0.1:{port}"]
        + ["--log-format", "json", "--interval", "0.5", *flags],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        process_group=process_group,
    )
    return daemon, log


def quiet_curve_daemon(fake_nvidia_settings, tmp_path: Path):
    """A daemon on the quiet curve driving the fake nvidia-settings' fans, its config file at hand
    (to change under it): (fake, config, port, daemon, log)."""
    fake = fake_nvidia_settings(gpus=GPUS)
    config = tmp_path / "gpud.toml"
    config.write_text('[fans]\ncurve = "quiet"\n')
    port = free_port()
    daemon, log = start(tmp_path, port, "--fan-backend", "nvidia-settings", config=config)
    return fake, config, port, daemon, log


def stop_once_fans_are_driven(daemon: subprocess.Popen, fake, sent: int) -> None:
    """Once every fan has a target, ``sent`` to the daemon: it must exit 0 with every fan handed back."""
    try:
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        daemon.send_signal(sent)
        assert daemon.wait(timeout=20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert handed_back(fake)


@contextlib.contextmanager
def killed_if_left(daemon: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """The daemon, killed on the way out if a failed check left it running."""
    try:
        yield daemon
    finally:
        if daemon.poll() is None:
            daemon.kill()


def stopped_by_sigterm(daemon: subprocess.Popen) -> None:
    """SIGTERM ends the daemon cleanly, within systemd's stop timeout."""
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=20) == 0


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def gpus_up(port: int) -> list[bool] | None:
    result = status(port, "--json")
    return [g["up"] for g in json.loads(result.stdout)["gpus"]] if result.returncode in (0, 1) else None


def targets(port: int) -> list[int] | None:
    result = status(port, "--json")
    if result.returncode not in (0, 1):
        return None
    document = json.loads(result.stdout)
    return [f["target_pct"] for g in document["gpus"] for f in g["fans"] if f["target_pct"] is not None]


@pytest.mark.slow
def test_after_sigkill_gpud_fans_reset_hands_every_fan_back(fake_nvidia_settings, tmp_path):
    fake = fake_nvidia_settings(gpus=GPUS)
    daemon, _ = start(tmp_path, free_port(), "--fan-backend", "nvidia-settings")
    try:
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert not handed_back(fake)  # nothing in the process could run
    result = gpud("fans", "reset", "--fan-backend", "nvidia-settings")
    assert result.returncode == 0, result.stderr
    assert handed_back(fake)


@pytest.mark.slow
def test_under_driver_faults_the_daemon_lives_reports_and_counts_them(tmp_path):
    port = free_port()
    faults = "random:rate=0.05,seed=2;lost:gpu=1,at=20,for=30"
    daemon, log = start(tmp_path, port, "--fan-backend", "nvml", "--sim-speed", "10", "--faults", faults)
    try:
        wait_for(lambda: gpus_up(port) == [True, False, True], 30, "GPU 1 down, the others up")
        wait_for(lambda: gpus_up(port) == [True, True, True], 30, "GPU 1 back")
        metrics = scrape(port)
        assert 'gpud_nvml_errors_total{call="' in metrics and 'error="GpuIsLost"' in metrics
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    logged = events(log)
    changes = [e["event"] for e in logged if e.get("gpu") == 1 and e["event"] in ("gpu down", "gpu back")]
    assert changes[:2] == ["gpu down", "gpu back"] and len(changes) < 10  # on change, not every tick
    # every GPU gpud took the fans of ends with them back with the driver, however often random faults
    # made it hand back and take again (a GPU a random NotSupported left monitor-only was never taken)
    ownership = ("fan control taken", "fans handed back to the driver")
    said = {
        gpu: [e["event"] for e in logged if e.get("gpu") == gpu and e["event"] in ownership]
        for gpu in range(GPUS)
    }
    assert any(said.values()) and all(not s or s[-1] == ownership[1] for s in said.values()), said


@pytest.mark.parametrize("spec", ["lost:gpu=x", "nonsense"])
def test_a_bad_faults_spec_is_a_usage_error_naming_it(spec):
    result = gpud("run", "--simulate", "--faults", spec)
    assert result.returncode == 2
    assert result.stderr.startswith("gpud: --faults: fault") and "Traceback" not in result.stderr


def test_faults_need_the_simulated_gpus():
    result = gpud("run", "--faults", "lost:gpu=1")
    assert result.returncode == 2 and "--simulate" in result.stderr


def record_errors(port: int) -> float:
    metrics = scrape(port) or ""
    found = [line.split()[-1] for line in metrics.splitlines() if line.startswith("gpud_record_errors_total")]
    return float(found[0]) if found else 0.0


@pytest.mark.slow
def test_recording_onto_a_full_disk_fails_no_tick_and_the_exit_is_clean(fake_nvidia_settings, tmp_path):
    fake = fake_nvidia_settings(gpus=GPUS)
    port = free_port()
    daemon, log = start(tmp_path, port, "--fan-backend", "nvidia-settings", "--record", "/dev/full")
    try:
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        wait_for(lambda: record_errors(port) >= 1, 10, "gpud_record_errors_total counting")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    names = [e["event"] for e in events(log)]
    assert names.count("recording disabled: cannot write the trace; trying again") == 1
    assert "tick failed" not in names
    assert handed_back(fake)


def test_an_unwritable_record_path_is_a_usage_error_before_any_fan_is_touched(fake_nvidia_settings, tmp_path):
    fake = fake_nvidia_settings(gpus=GPUS)
    path = tmp_path / "gone" / "trace.jsonl"
    result = gpud("run", "--simulate", str(GPUS), "--fan-backend", "nvidia-settings", "--record", str(path))
    assert result.returncode == 2
    assert result.stderr == f"gpud: cannot write {path}: the folder {path.parent} does not exist\n"
    assert fake.calls() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "sent",
    [signal.SIGPWR, signal.SIGALRM, signal.SIGQUIT, signal.SIGVTALRM, signal.SIGRTMIN + 2],
    ids=["SIGPWR", "SIGALRM", "SIGQUIT", "SIGVTALRM", "SIGRTMIN+2"],
)
def test_signals_that_would_kill_the_process_stop_it_cleanly(fake_nvidia_settings, tmp_path, sent):
    fake = fake_nvidia_settings(gpus=GPUS)
    daemon, log = start(tmp_path, free_port(), "--fan-backend", "nvidia-settings")
    stop_once_fans_are_driven(daemon, fake, sent)
    assert any(e["event"] == "stopping" for e in events(log))


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGUSR1, signal.SIGUSR2], ids=["SIGUSR1", "SIGUSR2"])
def test_the_user_signals_are_ignored_and_the_fans_stay_under_control(fake_nvidia_settings, tmp_path, sent):
    fake = fake_nvidia_settings(gpus=GPUS)
    port = free_port()
    daemon, log = start(tmp_path, port, "--fan-backend", "nvidia-settings")
    with killed_if_left(daemon):
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        daemon.send_signal(sent)
        wait_for(lambda: "signal ignored" in log.read_text(), 10, "the signal noted in the log")
        assert daemon.poll() is None and not handed_back(fake)
        stopped_by_sigterm(daemon)
    assert handed_back(fake)


def process_state(pid: int) -> str:
    """The kernel's one-letter state of a process: ``T`` stopped, ``S`` sleeping ..."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


@pytest.mark.slow
def test_ctrl_z_hands_the_fans_back_before_the_process_stops_and_sigcont_takes_them_again(
    fake_nvidia_settings, tmp_path
):
    # A job of its own, as a terminal's Ctrl-Z finds it: the kernel stops it (a process group
    # with no parent in the session outside it, such as a service's, never gets SIGTSTP acted on).
    fake = fake_nvidia_settings(gpus=GPUS)
    daemon, log = start(tmp_path, free_port(), "--fan-backend", "nvidia-settings", process_group=0)
    with killed_if_left(daemon):
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        daemon.send_signal(signal.SIGTSTP)
        wait_for(lambda: process_state(daemon.pid) == "T", 10, "the daemon stopped")
        assert handed_back(fake)  # stopped with its fans on the driver's schedule, not where they were
        time.sleep(MIN_STALL_S + 1)  # longer than the stall watchdog's limit
        sent = len(fake.assignments())
        daemon.send_signal(signal.SIGCONT)
        wait_for(lambda: not handed_back(fake), 10, "the fans taken again after SIGCONT")
        assert any("GPUTargetFanSpeed" in a for a in fake.assignments()[sent:])
        stopped_by_sigterm(daemon)
    assert handed_back(fake)
    names = [e["event"] for e in events(log)]
    assert "loop stalled: no tick completed" not in names  # the watchdog knew it was on purpose
    assert any(name.startswith("suspended (SIGTSTP)") for name in names)


def taken(log: Path, gpu: int) -> int:
    """How often the log says gpud took the GPU's fans."""
    return sum(1 for e in events(log) if e["event"] == "fan control taken" and e["gpu"] == gpu)


def refusals(log: Path) -> list[dict]:
    return [e for e in events(log) if e["event"].startswith("not suspended (SIGTSTP)")]


def ctrl_z(daemon: subprocess.Popen, log: Path) -> bool:
    """SIGTSTP, then what came of it: True once the daemon stopped, False once it said it would not."""
    before = len(refusals(log))
    daemon.send_signal(signal.SIGTSTP)
    return wait_for(
        lambda: "stopped" if process_state(daemon.pid) == "T" else "refused" * (len(refusals(log)) > before),
        10,
        "the daemon stopped, or its refusal in the log",
    ) == "stopped"


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    ["error:error=Unknown,call=nvmlDeviceSetDefaultFanSpeed_v2", "hang:call=nvmlDeviceSetDefaultFanSpeed_v2"],
    ids=["refused", "hung"],
)
def test_ctrl_z_does_not_stop_the_daemon_while_a_gpus_fans_cannot_be_handed_back(tmp_path, fault):
    # From 3 s of simulated time (after the start's probes, which hand back too), for 10 s, GPU 1's
    # driver refuses to take its fans back, or the command hangs (5 s, past the 2 s a hand-back waits).
    faults = f"{fault},gpu=1,at=3,for=10"
    daemon, log = start(tmp_path, free_port(), "--fan-backend", "nvml", "--faults", faults, process_group=0)
    with killed_if_left(daemon):
        wait_for(lambda: all(taken(log, gpu) for gpu in range(GPUS)), 30, "every GPU's fans taken")
        time.sleep(3.5)  # the simulated library started before that: its faults are on now
        assert not ctrl_z(daemon, log)
        assert refusals(log)[-1]["gpus"] == [1] and refusals(log)[-1]["level"] == "error"
        wait_for(lambda: taken(log, 0) == 2, 10, "GPU 0's fans, handed back, taken again")
        assert process_state(daemon.pid) != "T"
        started = time.monotonic()
        while not ctrl_z(daemon, log):  # a later Ctrl-Z tries again, and once the fault has passed ...
            assert time.monotonic() - started < 30
            time.sleep(1)
        logged = events(log)
        names = [e["event"] for e in logged]
        refused = max(n for n, name in enumerate(names) if name.startswith("not suspended (SIGTSTP)"))
        suspended = names.index("suspended (SIGTSTP): fans handed back to the driver until SIGCONT")
        back = [e["gpu"] for e in logged[refused:suspended] if e["event"] == "fans handed back to the driver"]
        assert 1 in back  # ... the daemon stops, GPU 1's fans with the driver at last
        # Each refusal held the loop while it handed the fans back (2 s where that hangs): its own
        # time, which is no stop of the process.
        assert "ticks missed: the daemon did not run (stopped, or starved of CPU)" not in names[:suspended]
        daemon.send_signal(signal.SIGCONT)
        retaken = taken(log, 1)
        wait_for(lambda: taken(log, 1) > retaken, 10, "the fans taken again after SIGCONT")
        stopped_by_sigterm(daemon)


def threads(pid: int) -> int:
    """How many threads the process has: more than one once gpud's discovery has started."""
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sent", "said"),
    [
        (signal.SIGHUP, "configuration reloaded"),
        (signal.SIGUSR1, "signal ignored: it means nothing to gpud"),
        (signal.SIGTERM, "stopping"),
    ],
    ids=["SIGHUP", "SIGUSR1", "SIGTERM"],
)
def test_a_signal_while_the_gpus_are_discovered_is_held_for_the_loop(tmp_path, sent, said):
    # Every GPU's name takes 4 s to read: discovery, on threads of its own, is under way for that long.
    hang = "hang:call=nvmlDeviceGetName,seconds=4,for=1"
    daemon, log = start(tmp_path, free_port(), "--fan-backend", "nvml", "--faults", hang)
    with killed_if_left(daemon):
        wait_for(lambda: threads(daemon.pid) > 1, 20, "discovery under way")
        daemon.send_signal(sent)
        wait_for(lambda: said in [e["event"] for e in events(log)] or daemon.poll() is not None, 30, said)
        if sent is signal.SIGTERM:
            assert daemon.wait(timeout=10) == 0
        else:
            assert daemon.poll() is None
            wait_for(lambda: taken(log, 0), 10, "the fans taken")
            stopped_by_sigterm(daemon)
    names = [e["event"] for e in events(log)]
    assert said in names
    assert names.count("fan control taken") == (0 if sent is signal.SIGTERM else GPUS)
    assert names[-1] == "stopped"


@pytest.mark.slow
@pytest.mark.parametrize(
    "hang",
    ["hang:call=nvmlDeviceGetName,gpu=1,seconds=60", "hang:call=nvmlDeviceGetMinMaxFanSpeed,gpu=2,seconds=60"],
    ids=["discovery", "fan probe"],
)
def test_sigterm_while_a_gpu_hangs_at_start_stops_gpud_at_once_not_after_the_start_ups_wait(tmp_path, hang):
    # Discovery and the fan probes each wait up to 20 s for a GPU that hangs: together twice
    # systemd's TimeoutStopSec=20, past which `systemctl stop` kills gpud instead.
    daemon, log = start(tmp_path, free_port(), "--fan-backend", "nvml", "--faults", hang)
    with killed_if_left(daemon):
        wait_for(lambda: threads(daemon.pid) > 1, 20, "discovery under way")
        time.sleep(1)
        sent = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        took = time.monotonic() - sent
    assert took < 3
    names = [e["event"] for e in events(log)]
    assert names[-2:] == ["stopping", "stopped"] and "fan control taken" not in names
    assert not any("hung" in name for name in names[names.index("stopping"):])


# A shell's `COMMAND &`: the command a job of its own, in the background of the shell's terminal.
BACKGROUND_JOB = (
    "import subprocess, sys; job = subprocess.Popen(sys.argv[2:], process_group=0); "
    "open(sys.argv[1], 'w').write(str(job.pid)); sys.exit(job.wait())"
)


@pytest.mark.slow
def test_gpud_in_the_background_of_a_terminal_is_never_stopped_by_it(fake_nvidia_settings, tmp_path):
    # Under `stty tostop` a background job's write to its terminal raises SIGTTOU, whose default
    # action stopped gpud at its next log line; SIGTTIN (a read) and either sent with kill too.
    fake = fake_nvidia_settings(gpus=GPUS)
    port, job = free_port(), tmp_path / "job.pid"
    argv = [*GPUD, "run", "--simulate", str(GPUS), "--listen", f"127.0.0.1:{port}", "--interval", "0.5"]
    argv += ["--log-format", "json", "--fan-backend", "nvidia-settings"]
    shell, terminal = pty.fork()  # the child leads a session whose terminal is the pty: a login shell
    if shell == 0:
        try:
            os.execv(sys.executable, [sys.executable, "-c", BACKGROUND_JOB, str(job), *argv])
        finally:
            os._exit(127)
    shown = bytearray()

    def show() -> None:
        with contextlib.suppress(OSError):  # EIO once nothing has the terminal open
            while chunk := os.read(terminal, 65536):
                shown.extend(chunk)

    threading.Thread(target=show, daemon=True).start()
    exits: list[int] = []
    try:
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        pid = int(job.read_text())
        modes = termios.tcgetattr(terminal)
        modes[3] |= termios.TOSTOP
        termios.tcsetattr(terminal, termios.TCSANOW, modes)
        os.kill(pid, signal.SIGUSR1)  # said in the log at the next tick: a write to the terminal
        wait_for(lambda: b"signal ignored" in shown or process_state(pid) == "T", 10, "the log line")
        assert process_state(pid) != "T", "stopped with its fans on manual"
        os.kill(pid, signal.SIGTTOU)
        os.kill(pid, signal.SIGTTIN)
        ticks = metric(port, "gpud_tick_duration_seconds_count")[0]
        time.sleep(2)
        assert process_state(pid) != "T" and metric(port, "gpud_tick_duration_seconds_count")[0] - ticks >= 2
        assert not handed_back(fake)
        os.kill(pid, signal.SIGTERM)
        exits.append(os.waitstatus_to_exitcode(os.waitpid(shell, 0)[1]))
    finally:
        if not exits:  # left running, or stopped, by a failed check
            for left in ([int(job.read_text())] if job.exists() else []) + [shell]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(left, signal.SIGKILL)
            os.waitpid(shell, 0)
    assert exits == [0] and handed_back(fake)


def metric(port: int, name: str) -> list[float]:
    """Every value of one family (all its series) from a scrape; empty when unreachable."""
    metrics = scrape(port) or ""
    return [float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name)]


@pytest.mark.slow
def test_a_wedged_x_server_neither_stops_the_ticks_nor_holds_up_sigterm(fake_nvidia_settings, tmp_path):
    # After a few commands every nvidia-settings call hangs, ignores SIGTERM and leaves a helper
    # holding its output pipes open: what a wedged X server looks like from gpud.
    fake = fake_nvidia_settings(gpus=GPUS, hang_after=8, hang_s=60, hold_pipes=True)
    port = free_port()
    daemon, log = start(tmp_path, port, "--fan-backend", "nvidia-settings", "--sim-speed", "10")
    try:
        wait_for(
            lambda: metric(port, "gpud_gpu_fan_commands_hung") == [1.0] * GPUS,
            30,
            "every GPU's commands hung",
        )
        ticks = metric(port, "gpud_tick_duration_seconds_count")[0]
        time.sleep(3)
        assert metric(port, "gpud_tick_duration_seconds_count")[0] - ticks >= 4  # 0.5 s ticks go on
        assert all(up for up in gpus_up(port))
        sent = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
        took = time.monotonic() - sent
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert took < 12  # the hand-back deadline is 10 s of systemd's 20
    logged = events(log)
    hung = [e for e in logged if e["event"] == "fan command hung; gpu skipped until it returns"]
    assert sorted(e["gpu"] for e in hung[:GPUS]) == list(range(GPUS))
    assert any(e["event"].startswith("fans not handed back in time") for e in logged)
    started = time.monotonic()
    result = gpud("fans", "reset", "--fan-backend", "nvidia-settings")
    assert time.monotonic() - started < 10  # ExecStopPost= shares TimeoutStopSec= with the daemon
    assert result.returncode == 1 and "nvidia-settings" in result.stdout, result.stdout
    assert len(fake.calls()) > 8


@pytest.mark.slow
def test_a_gpu_reset_under_the_daemon_is_noticed_and_its_fans_taken_again(tmp_path):
    port = free_port()
    daemon, log = start(
        tmp_path, port, "--fan-backend", "nvml", "--sim-speed", "10", "--faults", "reset:gpu=1,at=40"
    )
    try:
        wait_for(lambda: "taken back by the driver" in log.read_text(), 30, "the reset noticed")
        taken_back = 'gpud_fan_errors_total{error="TakenBack",gpu="1"'
        wait_for(lambda: taken_back in (scrape(port) or ""), 10, "the take-back counted")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    logged = events(log)
    reset_at = next(e for e in logged if e["event"].startswith("fan control taken back"))
    assert reset_at["gpu"] == 1 and reset_at["fans"] == [0, 1]
    assert [e["event"] for e in logged].count("fans handed back to the driver") == GPUS


@pytest.mark.slow
def test_sigterm_amid_a_storm_of_signals_and_log_lines_still_stops_the_daemon(fake_nvidia_settings, tmp_path):
    # A signal handler that logs deadlocks when the signal lands while the main thread is writing a
    # log line: the logger's lock is not reentrant, and a write blocked on a full pipe (or journald's
    # socket) runs the handler when the signal interrupts it. Here stderr is a pipe of one page that
    # nobody reads until after the SIGTERM, amid SIGUSR1s sent as fast as they go (each a log line).
    fake = fake_nvidia_settings(gpus=GPUS)
    daemon = subprocess.Popen(
        [*GPUD, "run", "--simulate", str(GPUS), "--listen", f"127.0.0.1:{free_port()}", "--interval", "0.5"]
        + ["--log-format", "json", "--log-level", "debug", "--fan-backend", "nvidia-settings"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    fcntl.fcntl(daemon.stderr.fileno(), fcntl.F_SETPIPE_SZ, 4096)

    def storm() -> None:
        started = time.monotonic()
        terminated = False
        while time.monotonic() - started < 4:
            os.kill(daemon.pid, signal.SIGUSR1)
            if not terminated and time.monotonic() - started > 2:
                os.kill(daemon.pid, signal.SIGTERM)
                terminated = True
            time.sleep(0.0002)  # thousands a second, leaving the daemon the CPU to run

    try:
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        storming = threading.Thread(target=storm)
        storming.start()
        storming.join()  # the daemon is reaped only after this: its pid is never another process's
        _, stderr = daemon.communicate(timeout=20)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0
    assert handed_back(fake)
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [e.get("signal") for e in logged if e["event"] == "stopping"] == ["SIGTERM"]
    ignored = [
        e["times"] for e in logged if e["event"].startswith("signal ignored") and e["signal"] == "SIGUSR1"
    ]
    assert sum(ignored) > 1000


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signals_that_came_ignored_from_the_parent_still_stop_it_cleanly(
    fake_nvidia_settings, tmp_path, sent
):
    # `gpud run &` in a script starts it with SIGINT and SIGQUIT ignored; a supervisor may ignore
    # SIGTERM. Inherited, SIG_IGN would leave SIGKILL, which hands no fan back, the only way out.
    fake = fake_nvidia_settings(gpus=GPUS)
    log = tmp_path / "gpud.log"
    command = [*GPUD, "run", "--simulate", str(GPUS), "--listen", f"127.0.0.1:{free_port()}"]
    command += ["--log-format", "json", "--interval", "0.5", "--fan-backend", "nvidia-settings"]
    daemon = subprocess.Popen(
        ["bash", "-c", 'trap "" TERM INT QUIT; exec "$@"', "bash", *command],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    stop_once_fans_are_driven(daemon, fake, sent)
    logged = events(log)
    said = [
        e["signals"] for e in logged if e["event"].startswith("signals ignored by the parent are handled")
    ]
    assert said == [["SIGTERM", "SIGINT", "SIGQUIT"]]  # once, at start
    assert [e.get("signal") for e in logged if e["event"] == "stopping"] == [sent.name]


@pytest.mark.slow
def test_sighup_with_the_config_replaced_by_a_fifo_neither_stops_the_ticks_nor_sigterm(
    fake_nvidia_settings, tmp_path
):
    fake, config, port, daemon, log = quiet_curve_daemon(fake_nvidia_settings, tmp_path)
    with killed_if_left(daemon):
        wait_for(lambda: every_fan_targeted(fake), 30, "a target for every fan")
        config.unlink()
        os.mkfifo(config)  # read, it would wait for a writer that never comes
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration not reloaded" in log.read_text(), 10, "the reload refused")
        ticks = metric(port, "gpud_tick_duration_seconds_count")[0]
        time.sleep(3)
        assert metric(port, "gpud_tick_duration_seconds_count")[0] - ticks >= 4  # 0.5 s ticks go on
        stopped_by_sigterm(daemon)
    assert handed_back(fake)
    refused = [e for e in events(log) if e["event"] == "configuration not reloaded; the running one is kept"]
    assert [e["error"] for e in refused] == [
        f"config file {config}: cannot read it: a FIFO, not a regular file"
    ]


@pytest.mark.slow
def test_a_driver_call_hung_at_exit_leaves_nvml_open_once_every_fan_is_handed_back(tmp_path):
    # GPU 1's process list hangs for a minute: the process thread is still in it when gpud stops,
    # and nvmlShutdown under it could block the exit or crash it.
    hang = "hang:call=nvmlDeviceGetComputeRunningProcesses*,gpu=1,seconds=60"
    daemon, log = start(tmp_path, free_port(), "--fan-backend", "nvml", "--faults", hang)
    with killed_if_left(daemon):
        wait_for(
            lambda: [e["event"] for e in events(log)].count("fan control taken") == GPUS, 30, "every fan taken"
        )
        sent = time.monotonic()
        stopped_by_sigterm(daemon)
        took = time.monotonic() - sent
    assert took < 10
    logged = events(log)
    names = [e["event"] for e in logged]
    left_open = names.index("nvml left open for the process's exit: calls into it still in progress")
    handed_back_at = [n for n, name in enumerate(names) if name == "fans handed back to the driver"]
    assert len(handed_back_at) == GPUS and max(handed_back_at) < names.index("stopped") < left_open
    assert "gpud-processes: nvmlDeviceGetComputeRunningProcesses" in logged[left_open]["calls"]
    assert "gpud-processes" in logged[left_open]["threads"] and logged[left_open]["level"] == "warning"
