"""The processes of `callcenter serve` / `demo`: children started, restarted when they die, and never
outliving the parent, however it ends.

Layers, each enough on its own in the common case:

1. Signals. The parent owns SIGTERM, SIGINT and SIGHUP (`Signals`): the first one stops the
   supervisor (no more restarts; children get SIGTERM, then SIGKILL after a grace period) and asks the
   web server to finish; outside the web server's run it raises `Shutdown`, so every `with` block
   unwinds. (uvicorn's own handlers are off: they re-raise SIGTERM after shutting down, which killed
   the parent before its clean-up ran, and the children were orphaned.)
2. One process group. Children stay in the parent's group: Ctrl-C in a terminal, or
   `kill -- -PGID`, reaches every one of them.
3. PR_SET_PDEATHSIG (Linux). Each child asks the kernel for SIGTERM when its parent ends, even by
   SIGKILL (`follow_parent`); the embedded redis-server gets it before exec.
4. A watchdog in each child (`follow_parent`): when `os.getppid()` is no longer the parent, the child
   sends itself SIGTERM, again each second (an rq worker busy with a job stops cold on the second),
   and exits hard after a grace period. It covers systems without prctl and a child slow to stop.

A child that dies while the parent runs is started again after a backoff that doubles with each quick
death (1 s, 2 s, 4 s ... at most 30 s) and starts over once a child has run for 30 s; every death and
restart is logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType

from callcenter.jobs import die_with_parent

log = logging.getLogger("callcenter.processes")

# Set by the supervisor in each child's environment: the pid the child follows (`follow_parent`).
PARENT_ENV = "CALLCENTER_PARENT_PID"


class Shutdown(SystemExit):
    """A stop signal reached the parent outside the web server's run: unwind and clean up."""

    def __init__(self, signum: int) -> None:
        super().__init__(0)
        self.signum = signum


class Signals:
    """The parent's SIGTERM / SIGINT / SIGHUP, installed for the life of the `with` block.

    The first signal sets `received` and, while `stopping()` is active, calls its callbacks; else it
    raises `Shutdown`. A repeated signal is logged; while the web server runs it forces its exit.
    """

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._stops: list[Callable[[bool], None]] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Signals:
        for sig in self.HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def stopping(self, stop: Callable[[bool], None]) -> Iterator[None]:
        """While inside, a signal calls `stop(first)` instead of raising (for a loop that ends
        itself, like the web server's). A signal that came before is acted on at once."""
        self._stops.append(stop)
        try:
            if self.received is not None:
                stop(True)
            yield
        finally:
            self._stops.remove(stop)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        first = self.received is None
        if first:
            self.received = sig
            log.warning("%s: stopping (children get SIGTERM, then SIGKILL)", sig.name)
        else:
            log.warning("%s again: already stopping", sig.name)
        for stop in list(self._stops):
            stop(first)
        if first and not self._stops:
            raise Shutdown(signum)


# --- the supervisor -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildSpec:
    """A child process: a name for the logs, its command line and environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None


@dataclass
class Backoff:
    """Delay before restarting a child that died after running `ran_s` seconds: doubles with each
    quick death, back to `initial_s` once a child has run `stable_s`.

    >>> b = Backoff(initial_s=1, max_s=5, stable_s=30)
    >>> [b.next_delay(ran_s=0.5) for _ in range(4)], b.next_delay(ran_s=60)
    ([1, 2, 4, 5], 1)
    """

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 30.0
    _current: float = field(default=0.0, repr=False)

    def next_delay(self, *, ran_s: float) -> float:
        if ran_s >= self.stable_s or not self._current:
            self._current = self.initial_s
        delay = self._current
        self._current = min(self._current * 2, self.max_s)
        return delay


@dataclass
class _Child:
    spec: ChildSpec
    backoff: Backoff
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    starts: int = 0
    pidfd: int | None = None


class Supervisor:
    """Start the children, restart any that dies (with backoff), stop them all at the end.

    One thread starts and watches every child: PR_SET_PDEATHSIG fires when the *thread* that forked
    a child ends, so that thread lives until its children are gone. It waits on each child's pidfd
    (Linux), not on a timer, so a death is seen at once.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        stable_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = [_Child(spec, Backoff(backoff_s, backoff_max_s, stable_s)) for spec in specs]
        self.stop_timeout_s = stop_timeout_s
        self.clock = clock
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    # --- the caller's side

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def begin_stop(self, first: bool = True) -> None:
        """Stop restarting and stop the children now (safe in a signal handler: a flag and a write)."""
        self._stopping = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def stop(self) -> None:
        """Stop the children (SIGTERM, then SIGKILL after `stop_timeout_s`) and wait for them."""
        self.begin_stop()
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def pids(self) -> dict[str, int]:
        return {c.spec.name: c.proc.pid for c in self.children if c.proc is not None}

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- the thread

    def _run(self) -> None:
        try:
            for child in self.children:
                self._spawn(child)
            self._started.set()
            while not self._stopping:
                self._watch_once()
        except Exception:
            log.exception("supervisor failed; stopping the children")
        finally:
            self._started.set()
            self._terminate_all()

    def _spawn(self, child: _Child) -> None:
        env = dict(child.spec.env if child.spec.env is not None else os.environ)
        env[PARENT_ENV] = str(os.getpid())
        child.proc = subprocess.Popen(list(child.spec.argv), env=env)
        child.started_at = self.clock()
        child.restart_at = None
        child.starts += 1
        child.pidfd = _pidfd(child.proc.pid)
        if child.starts > 1:
            log.warning("%s restarted (pid %d, start #%d)", child.spec.name, child.proc.pid, child.starts)
        else:
            log.info("%s started (pid %d)", child.spec.name, child.proc.pid)

    def _watch_once(self) -> None:
        now = self.clock()
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                self._died(child, now)
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)
        pending = [c.restart_at for c in self.children if c.proc is None and c.restart_at is not None]
        timeout = max(0.0, min(pending) - now) if pending else None
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            fds = [c.pidfd for c in self.children if c.proc is not None and c.pidfd is not None]
            for fd in fds:
                sel.register(fd, selectors.EVENT_READ)
            if len(fds) < sum(c.proc is not None for c in self.children):
                timeout = 0.5 if timeout is None else min(timeout, 0.5)  # no pidfd: look twice a second
            for key, _ in sel.select(timeout):
                if key.fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 64)

    def _died(self, child: _Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        ran = now - child.started_at
        delay = child.backoff.next_delay(ran_s=ran)
        log.error(
            "%s (pid %d) died (%s) after %.1f s; restart in %.1f s",
            child.spec.name,
            child.proc.pid,
            how,
            ran,
            delay,
        )
        self._close_pidfd(child)
        child.proc = None
        child.restart_at = now + delay

    def _terminate_all(self) -> None:
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop within %.0f s: SIGKILL", proc.pid, self.stop_timeout_s)
                proc.kill()
                proc.wait()
        for child in self.children:
            self._close_pidfd(child)
            child.proc = None

    @staticmethod
    def _close_pidfd(child: _Child) -> None:
        if child.pidfd is not None:
            os.close(child.pidfd)
            child.pidfd = None


def _pidfd(pid: int) -> int | None:
    """A file descriptor that becomes readable when `pid` exits (Linux 5.3+), else None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


# --- the child's side -----------------------------------------------------------------------------


def follow_parent(*, grace_s: float = 5.0, check_s: float = 0.5) -> bool:
    """In a supervised child (PARENT_ENV set): die with the parent. Asks the kernel for SIGTERM when
    the parent ends, and watches `os.getppid()`: once the parent is gone, SIGTERM to ourselves each
    second, then exit after `grace_s`. False (and nothing done) when not supervised."""
    raw = os.environ.get(PARENT_ENV, "")
    if not raw.isdigit():
        return False
    parent = int(raw)
    die_with_parent(signal.SIGTERM, parent=parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(check_s)
        log.error("parent process %d is gone: stopping", parent)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
        log.error("still running %.0f s after the parent died: exiting now", grace_s)
        sys.stderr.flush()
        os._exit(70)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()
    return True
