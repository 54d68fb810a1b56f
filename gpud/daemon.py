"""The loop: one tick every interval, on a drift-free schedule; process concerns around it.

One tick is sample → decide → apply fan targets (→ record with ``--record``) → publish. Signal
handlers only note the signal, taking no lock (a handler that logged would deadlock on the
logger's lock if the signal came while the main thread writes a line); the loop notices a stop at
once and says it, so SIGTERM/SIGINT (and SIGABRT, from systemd's watchdog) end the process within a
fraction of a second, even when they came ignored from the parent (``cmd &`` in a script ignores
SIGINT and SIGQUIT): left ignored, they would leave SIGKILL, which hands no fan back, the only way
to stop it. SIGHUP reloads the configuration, read off the loop
(:mod:`gpud.reloader`) and applied between ticks, fans staying under control throughout; a
configuration that does not load, or is not read within a few seconds, is reported and the running
one kept.

Fail-safe: fans gpud took over go back to the driver's automatic control when the loop ends for
any reason (signal, an exception escaping it), when ticks keep failing, and — from a separate
thread — when no tick completes for a while (the loop is stuck). The watchdog then publishes what
it did, so ``/metrics`` and ``/status`` say the fans are the driver's while the loop is stuck; the
published state carries the time of its tick, so they say how old the rest is.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType
from typing import Any

import structlog

from gpud.decide.controller import Controller, DecideSettings, Decision
from gpud.errors import GpudError
from gpud.exporter import Metrics
from gpud.exposition import Exposition
from gpud.fans.control import EXIT_DEADLINE_S, ControlMode, FanControl, GpuFanControl
from gpud.history import History
from gpud.reloader import READ_LIMIT_S, Reloader
from gpud.sdnotify import SystemdNotifier
from gpud.signalsafe import SignalSafeFlag
from gpud.source import TelemetrySource
from gpud.state import DaemonState
from gpud.telemetry import GpuInfo
from gpud.trace.recorder import TraceRecorder
from gpud.watchdog import StallWatchdog

log = structlog.get_logger("gpud.daemon")

# Every signal whose default action would end the process with fans on manual stops it cleanly
# instead. SIGABRT is what systemd sends when its watchdog fires (WatchdogSignal=); SIGPWR is
# init's "the power is failing"; SIGALRM, SIGVTALRM, SIGPROF and SIGXCPU are timers and limits gpud
# never sets, so one arriving was sent by someone; real-time signals have no meaning to gpud.
STOP_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGABRT,
    signal.SIGQUIT,
    signal.SIGPWR,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGXCPU,
    signal.SIGIO,
    signal.SIGSTKFLT,
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1),
)
# The user signals are conventions (reopen logs, dump state) for something gpud does not do: a stray
# one is logged and the fans stay under control.
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
# Signals the kernel raises for a call gpud makes, ignored in the kernel (SIG_IGN) so that the call
# goes on, where their default action ends or stops the process with fans on manual: SIGXFSZ (a
# file past its size limit) makes the write fail with EFBIG, which the recorder handles; SIGTTOU (a
# gpud in the background of a terminal writing to it, under `stty tostop`, or setting its modes)
# lets the write through; SIGTTIN (reading it) makes the read fail with EIO. Not handled in Python:
# the call would raise the signal again at each retry, for ever, the loop never reaching a tick.
# Sent with kill, each does nothing.
KERNEL_IGNORED_SIGNALS = (signal.SIGXFSZ, signal.SIGTTOU, signal.SIGTTIN)
# Ctrl-Z on a terminal: left to its default action, it stops the process at once, fans on manual at
# whatever speed they had, the stall watchdog stopped with it. Taken, the loop hands the fans back
# first and then stops itself (SIGSTOP), unless a GPU's fans would not go back (then it says so and
# goes on); after SIGCONT its next tick takes them again.
SUSPEND_SIGNAL = signal.SIGTSTP
MIN_STALL_S = 10.0  # the stall watchdog's limit: this, or five intervals when longer
FAILED_TICKS_BEFORE_HAND_BACK = 3


def _name(signum: int) -> str:
    """``SIGTERM``, or ``SIGRTMIN+3`` for a real-time signal."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


class SignalInbox:
    """What the signals asked of gpud, noted by handlers that take no lock, for the loop to act on.

    ``gpud run`` installs it first thing, before it discovers the GPUs and probes their fans
    (seconds; up to 20 s each where a GPU's driver calls hang): left to their default action
    meanwhile, a SIGHUP (``systemctl reload`` while the service starts) or a SIGUSR1 would end
    gpud. What comes before the loop runs is held for it: a stop signal ends the start (a wait for
    a GPU that hangs, through ``stop``: :class:`gpud.callguard.Stopped`) or the loop before its
    first tick, so no fan is taken; a SIGHUP reloads the configuration at the first tick; a SIGTSTP
    suspends after it.
    """

    def __init__(self) -> None:
        self.stop = SignalSafeFlag()
        self.stop_signal: int | None = None  # the first stop signal that came
        self.reload_requested = False
        self.suspend_requested = False
        self.ignored_counts = dict.fromkeys(IGNORED_SIGNALS, 0)  # since start; a handler only adds
        self.ignoring: list[int] = []  # the IGNORED_SIGNALS whose handler is ours
        self.inherited_ignored: list[str] = []  # the stop signals that came ignored from the parent

    def install(self) -> None:
        """:data:`STOP_SIGNALS` stop the loop cleanly (and so hand the fans back); SIGHUP reloads.

        A handler the embedding program set (the bench's SIGUSR1) is left alone. A stop signal
        ignored when gpud started (SIG_IGN, inherited from the parent) is taken all the same (the
        loop says so: logging may not be set up yet): ignored, it would leave SIGKILL, which hands
        no fan back, the only way out.
        """
        if signal.getsignal(SUSPEND_SIGNAL) is signal.SIG_DFL:  # ignored by the parent: Ctrl-Z does nothing
            signal.signal(SUSPEND_SIGNAL, self._suspend)
        for signals, handler in ((STOP_SIGNALS, self._stop), (IGNORED_SIGNALS, self._ignore)):
            for signum in signals:
                current = signal.getsignal(signum)
                if current is signal.SIG_IGN and handler == self._stop:
                    self.inherited_ignored.append(_name(signum))
                elif current not in (signal.SIG_DFL, signal.default_int_handler, None):
                    continue
                signal.signal(signum, handler)
                if handler == self._ignore:
                    self.ignoring.append(signum)
        for signum in KERNEL_IGNORED_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, self._reload)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        self.stop.set()

    def _ignore(self, signum: int, frame: FrameType | None) -> None:
        self.ignored_counts[signum] += 1

    def _suspend(self, signum: int, frame: FrameType | None) -> None:
        self.suspend_requested = True
        self.stop.wake()

    def _reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload_requested = True

    def say_stopping(self) -> None:
        """The "stopping" line, naming the stop signal that came (if one did)."""
        signum = self.stop_signal
        log.info("stopping", **({"signal": _name(signum)} if signum is not None else {}))


class Daemon:
    """Runs ticks until stopped; publishes each tick's result as a new :class:`DaemonState`.

    ``exposition`` is ``/metrics`` of the published state: told of each tick, it renders ahead of
    the scrapes that come often (:mod:`gpud.exposition`). ``signals`` is where the signal handlers
    note what came: one installed before the daemon was made holds what came meanwhile.
    """

    def __init__(
        self,
        source: TelemetrySource,
        source_name: str,
        interval_s: float,
        notifier: SystemdNotifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        recorder: TraceRecorder | None = None,
        decide: DecideSettings | None = None,
        fans: FanControl | None = None,
        energy_price: tuple[float, str] | None = None,
        reload: Callable[[], DecideSettings] | None = None,
        per_job_metrics: bool = False,
        listen: str | None = None,
        signals: SignalInbox | None = None,
    ) -> None:
        """``energy_price`` (per kWh, currency) prices the GPUs' energy in ``gpud_energy_cost_total``;
        ``per_job_metrics`` exports GPU memory per job too.

        ``reload`` loads the configuration again on SIGHUP; it raises :class:`GpudError` when it cannot.
        ``listen`` (HOST:PORT) is where the daemon is served, for the "started" line.
        """
        decide = decide or DecideSettings()
        self._source = source
        self._controller = Controller(source.gpus, decide, max_gap_s=max(5.0, 3 * interval_s))
        self._fans = fans
        self._failing_ticks = 0
        self._watchdog = StallWatchdog(max(MIN_STALL_S, 5 * interval_s), self._hand_fans_back)
        self._interval_s = interval_s
        self._notifier = notifier or SystemdNotifier()
        self._clock = clock
        self._recorder = recorder
        self._signals = signals or SignalInbox()
        self._ignored_logged = dict.fromkeys(IGNORED_SIGNALS, 0)
        self._reloader = Reloader(reload) if reload is not None else None
        self._listen = listen
        self._publishing = threading.Lock()  # the loop's ticks and the watchdog both replace the state
        self._ready = False
        self._tick_errors = 0
        self.history = History(every_s=max(30.0, interval_s))
        self.state = DaemonState(
            hostname=socket.gethostname(),
            source=source_name,
            interval_s=interval_s,
            started_at=time.time(),
            gpus=source.gpus,
            fan_control=fans.report() if fans is not None else (),
        )
        self.metrics = Metrics(energy_price, per_job_metrics)
        self.exposition = Exposition(self.metrics.render, self.current, interval_s)

    def current(self) -> DaemonState | None:
        """The last published state, or ``None`` before the first tick."""
        return self.state if self.state.snapshot is not None else None

    def stop(self) -> None:
        """Ask the loop to finish after the current tick (safe from a signal handler)."""
        self._signals.stop.set()

    def request_reload(self) -> None:
        """Reload the configuration before the next tick (safe from a signal handler)."""
        self._signals.reload_requested = True

    def install_signal_handlers(self) -> None:
        """Install the handlers of :class:`SignalInbox` (``gpud run`` installs its own earlier)."""
        self._signals.install()

    def run(self) -> None:
        """Tick on schedule until :meth:`stop`; tells systemd READY, WATCHDOG and STOPPING.

        However it ends, every fan gpud took over is handed back to the driver.
        """
        served = {"listen": self._listen} if self._listen is not None else {}
        if self._signals.inherited_ignored:
            log.warning(
                "signals ignored by the parent are handled: each stops gpud cleanly, fans handed back",
                signals=self._signals.inherited_ignored,
            )
        log.info(
            "started",
            gpus=len(self._source.gpus),
            source=self.state.source,
            interval_s=self._interval_s,
            **served,
        )
        next_at, signals = self._clock(), self._signals
        handing_back_s = 0.0  # the loop's own time since the last deadline, spent on SIGTSTP's hand-back
        self._watchdog.start()
        try:
            while not signals.stop.is_set():
                self._log_ignored_signals()
                self._finish_reload()
                if signals.reload_requested:
                    signals.reload_requested = False
                    self._start_reload()
                started = self._clock()
                if self._tick_safely():
                    self._watchdog.beat()
                    self._notifier.notify("WATCHDOG=1")
                    if not self._ready:
                        self._ready = True
                        self._notifier.notify("READY=1")
                next_at = self._next_deadline(next_at, self._clock() - started, handing_back_s)
                handing_back_s = 0.0
                while not signals.stop.wait(max(0.0, next_at - self._clock())) and signals.suspend_requested:
                    handing_back_s += self._suspend()
            signals.say_stopping()
        finally:
            self._watchdog.stop()
            self.exposition.stop()
            self._notifier.notify("STOPPING=1")
            if self._fans is not None:
                self._fans.restore(EXIT_DEADLINE_S)
            log.info("stopped")
            self._keep_ignoring()

    def _suspend(self) -> float:
        """SIGTSTP: the fans back to the driver, then the process stopped (SIGSTOP) until SIGCONT.

        Where a GPU's fans could not be handed back (the driver refused, or the command hung) the
        process does not stop: stopped, it would leave them on manual, at full speed or wherever
        they were, with nobody watching the temperature. It goes on driving them, and a later
        SIGTSTP tries again. The stall watchdog is told before the stop: it stops with the process,
        and on waking it would take the time spent stopped for a stuck loop.

        Returns the seconds spent handing the fans back (up to 2 s, the hand-back's deadline, where a
        GPU's hangs): the loop's own time, which the next deadline tells from time stopped.
        """
        self._signals.suspend_requested = False
        started = self._clock()
        if self._fans is not None:
            handed_back = self._fans.restore()
            report = self._fans.report()
            self._publish(fan_control=report)
            if not handed_back:
                log.error(
                    "not suspended (SIGTSTP): fans could not be handed back to the driver, and stopped "
                    "gpud would leave them on manual; it goes on driving them, SIGTSTP again to retry",
                    gpus=[c.index for c in report if c.mode in (ControlMode.MANUAL, ControlMode.UNREACHABLE)],
                )
                return self._clock() - started
        handing_back_s = self._clock() - started
        log.warning("suspended (SIGTSTP): fans handed back to the driver until SIGCONT")
        self._watchdog.pause()
        os.kill(os.getpid(), signal.SIGSTOP)
        self._watchdog.beat()
        log.info("continued (SIGCONT): fans taken again at the next tick")
        return handing_back_s

    def _keep_ignoring(self) -> None:
        """Ignore the user signals for good: on its way out the interpreter puts a signal handled in
        Python back to its default action, and a SIGUSR1 then would end gpud with a failure status."""
        if threading.current_thread() is threading.main_thread():
            for signum in self._signals.ignoring:
                signal.signal(signum, signal.SIG_IGN)

    def _log_ignored_signals(self) -> None:
        """The ignored signals that came since the last tick, one line per signal however often it came."""
        for signum, count in self._signals.ignored_counts.items():
            if count > self._ignored_logged[signum]:
                times, self._ignored_logged[signum] = count - self._ignored_logged[signum], count
                log.warning("signal ignored: it means nothing to gpud", signal=_name(signum), times=times)

    def _start_reload(self) -> None:
        if self._reloader is None:
            log.warning("nothing to reload: gpud was started without a configuration to read again")
            return
        refused = self._reloader.start()
        if refused is not None:
            log.error("SIGHUP ignored: configuration not reloaded; the running one is kept", error=refused)

    def _finish_reload(self) -> None:
        """Apply the configuration a SIGHUP's read gave, once it is done (on the loop: the controller is its)."""
        reloaded = self._reloader.poll() if self._reloader is not None else None
        if reloaded is None:
            return
        not_reloaded = "configuration not reloaded; the running one is kept"
        if reloaded.gave_up:
            log.error(
                not_reloaded, error=f"reading it took more than {READ_LIMIT_S:g} s (a FIFO, a hung mount?)"
            )
        elif isinstance(reloaded.error, GpudError):
            log.error(not_reloaded, error=str(reloaded.error))
        elif reloaded.error is not None:
            log.error(not_reloaded, exc_info=reloaded.error)
        else:
            self._controller.reconfigure(reloaded.value)
            log.info("configuration reloaded", curve=reloaded.value.fans.curve)

    def _hand_fans_back(self) -> None:
        """The stall watchdog's action: fans back to the driver, and that published, the loop being stuck."""
        if self._fans is not None:
            self._fans.restore()
            self._publish(fan_control=self._fans.report())

    def _publish(self, **changes: Any) -> None:
        """The published state with ``changes``: one assignment, under the lock the two writers share."""
        with self._publishing:
            self.state = replace(self.state, **changes)

    def _next_deadline(self, previous: float, tick_s: float, handing_back_s: float = 0.0) -> float:
        """The next slot on the fixed grid; slots already missed are skipped, not caught up.

        The loop's own time since ``previous`` tells why slots were missed: ``tick_s``, how long the
        tick took, and ``handing_back_s``, how long a SIGTSTP's hand-back held the loop (one that
        hangs, up to 2 s, and then the Ctrl-Z refused). Only what is left, half an interval or more,
        is a daemon that did not run (SIGSTOP, no CPU); otherwise the larger of the two is said.
        """
        next_at = previous + self._interval_s
        now = self._clock()
        if next_at < now:
            missed = int((now - next_at) // self._interval_s) + 1
            late_s = now - previous - tick_s - handing_back_s  # the time the loop was not running
            held = {"hand_back_s": round(handing_back_s, 2)} if handing_back_s else {}
            if late_s >= self._interval_s / 2:
                log.warning(
                    "ticks missed: the daemon did not run (stopped, or starved of CPU)",
                    skipped=missed,
                    late_s=round(late_s, 1),
                    tick_s=round(tick_s, 2),
                    **held,
                )
            elif handing_back_s > tick_s:
                log.warning(
                    "ticks missed: the loop was handing the fans back (SIGTSTP)",
                    skipped=missed,
                    tick_s=round(tick_s, 2),
                    **held,
                )
            else:
                log.warning("tick overran its interval", skipped=missed, tick_s=round(tick_s, 2), **held)
            next_at += missed * self._interval_s
        return next_at

    def _tick_safely(self) -> bool:
        try:
            self.tick()
        except Exception:
            self._tick_errors += 1
            self._failing_ticks += 1
            log.exception("tick failed")
            if self._failing_ticks == FAILED_TICKS_BEFORE_HAND_BACK and self._fans is not None:
                log.error("ticks keep failing: fans handed back to the driver", ticks=self._failing_ticks)
                self._fans.restore()
            return False
        self._failing_ticks = 0
        return True

    def tick(self) -> None:
        """Sample every GPU, decide, set fans, record, publish; observed in ``gpud_tick_duration_seconds``.

        Recording never raises: a trace that cannot be written is counted, not a failed tick.
        """
        started = time.perf_counter()
        snapshot = self._source.sample()
        if self._source.gpus is not self.state.gpus:
            self._learn(self._source.gpus)
        decision = self._controller.step(snapshot)
        fan_control = self._fans.apply(decision, snapshot) if self._fans is not None else ()
        self._read_again_where_fans_changed_hands(fan_control)
        self._log_changes(decision)
        if self._recorder is not None:
            self._recorder.write(snapshot)
        self._publish(
            snapshot=snapshot,
            decision=decision,
            fan_control=fan_control,
            nvml_errors=dict(self._source.error_counts()),
            tick_errors=self._tick_errors,
            record_errors=self._recorder.errors if self._recorder is not None else 0,
            ticked_at=time.time(),
        )
        self.history.add(snapshot)
        self.metrics.tick_duration.observe(time.perf_counter() - started)
        self.exposition.published()

    def _read_again_where_fans_changed_hands(self, fan_control: tuple[GpuFanControl, ...]) -> None:
        """A GPU whose fans gpud just took or handed back has its fans' control policy read afresh at the
        next tick: read with the slow facts, it would otherwise be reported as it was before the change for
        up to ``SLOW_EVERY`` ticks, and ``gpud diagnose`` would take gpud's own curve for the stock one."""
        before = {c.index: c.mode is ControlMode.MANUAL for c in self.state.fan_control}
        for control in fan_control:
            if before.get(control.index, False) is not (control.mode is ControlMode.MANUAL):
                self._source.read_again(control.index)

    def _learn(self, gpus: tuple[GpuInfo, ...]) -> None:
        """The source learnt more about its GPUs (one opened, or its fans counted, after a failed start)."""
        self._controller.learn(gpus)
        if self._fans is not None:
            self._fans.learn(gpus, self._source.incomplete.keys())
        self._publish(gpus=gpus)

    def _log_changes(self, decision: Decision) -> None:
        """Log throttle intervals as they start and end (with hysteresis), not every tick."""
        previous = {gpu.index: gpu for gpu in self.state.decision.gpus} if self.state.decision else {}
        for gpu in decision.gpus:
            before = previous.get(gpu.index)
            if gpu.episode is not None and (before is None or before.episode is None):
                log.warning("throttle started", gpu=gpu.index, cause=gpu.episode.cause.value)
        for interval in decision.ended:
            log.info(
                "throttle ended",
                gpu=interval.gpu,
                cause=interval.cause.value,
                seconds=round(interval.end - interval.start, 1),
                clock_lost=None if interval.clock_lost is None else round(interval.clock_lost, 3),
            )
