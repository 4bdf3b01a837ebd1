"""What regexp sets for its whole process, in one place: the threads torch computes on, MKL's
reproducible mode, the signal handlers a run and a sweep stop on, the scheduling class of the
drawing process, and an exit that skips the interpreter's teardown. Each part calls these at
its start rather than setting the process up itself."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import threading

log = logging.getLogger("regexp")

STOPPING = "stopping after this epoch to save a checkpoint"
CLOSING = "writing the run's last figures and records first"


def reproducible_products() -> None:
    """Intel MKL's strict reproducible mode, read at its first call (so before any product
    runs): without it, MKL rounds a matrix product by where its output lies in memory, and a
    member of a population, whose output is a slice of the members' one, would round apart
    from its lone run. It costs nothing measurable (docs/exact.md). A user's own setting is
    kept."""
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


def use_threads(threads: int | None) -> None:
    """Train on `threads` torch threads, one unless told: the thread count changes the last
    digits (torch splits products by it), which must not depend on the machine or the
    launcher; and on a busy machine torch's default (a thread per core) spins waiting for the
    core another process holds (docs/benchmarks.md)."""
    import torch

    torch.set_num_threads(threads or 1)


@contextlib.contextmanager
def handling(handler, signals=(signal.SIGINT, signal.SIGTERM)):
    """`handler` for `signals` while the block runs (in the main thread: only it may set
    handlers; elsewhere the block runs with the handlers as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def stop_on_signals(doing: list[str] | None = None):
    """The first SIGINT or SIGTERM asks training to stop once the epoch in progress is done,
    so that the checkpoint holds whole epochs (or, once training is done, lets the run finish
    writing its records); a second one stops at once. `doing[0]` says which, as it changes
    (default: STOPPING). Yields the list of signals received."""
    from regexp.errors import Interrupted

    received: list[int] = []
    doing = doing or [STOPPING]

    taken = threading.Event()  # this thread has run the handler for a second signal

    def handle(signum, frame):
        if received:
            taken.set()
            raise Interrupted(signum)
        received.append(signum)
        name = signal.Signals(signum).name
        log.warning("%s: %s (send it again to stop now)", name, doing[0])

    with handling(handle), _stop_if_stuck(taken):
        yield received


STUCK_SECONDS = 1.0  # how long the main thread may leave a second signal unhandled


@contextlib.contextmanager
def _stop_if_stuck(taken: threading.Event):
    """A second SIGINT or SIGTERM stops the process at once even where its main thread is in
    one long torch operation, during which no Python handler runs (both signals would be
    handled as one once it returns, minutes later). A thread hears every signal through
    Python's wakeup fd; where the main thread has not taken a second one within STUCK_SECONDS,
    the process ends there, as a kill would: its record on disk is whole at any instant
    (every file appended to or replaced at once), and `resume=` goes on from its last
    checkpoint, which an epoch longer than a minute writes at its end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read, write = os.pipe()
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    done = threading.Event()

    def watch() -> None:
        stops = []
        while not done.is_set():
            heard = os.read(read, 64)
            stops += [n for n in heard if n in (signal.SIGINT, signal.SIGTERM)]
            if len(stops) >= 2 and not done.is_set() and not taken.wait(STUCK_SECONDS):
                name = signal.Signals(stops[-1]).name
                os.write(2, f"{name}: stopped now, inside a long operation\n".encode())
                os._exit(128 + stops[-1])

    watcher = threading.Thread(target=watch, name="regexp-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        done.set()
        os.write(write, b"\0")  # (wakes the watcher, which ends)
        watcher.join()
        os.close(read)
        os.close(write)


def yield_to_training() -> None:
    """Run this process (the drawing one) at a priority below training's. Where every core
    trains (a stacked sweep's workers), a frame drawn at once takes the loop's core and its
    caches, which costs the loop more than the frame; as an idle-class process (Linux;
    elsewhere the lowest nice) drawing takes what training leaves."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # (no idle class: macOS; no nice either: Windows)
        with contextlib.suppress(AttributeError, OSError):
            os.nice(19)


def freeze_heap() -> None:
    """Tell the garbage collector to leave every object made so far alone: a forked worker
    then does not walk (and so copy) its server's pages, and an exit does not walk what torch
    and matplotlib made."""
    gc.freeze()


def exit_now(code: int) -> None:
    """Exit with `code` without the interpreter's teardown, whose garbage collection walks every
    object torch and matplotlib made (about half a second) to free memory the OS takes back at
    once. What must reach a file does first: the exit handlers (logging flushes and closes its
    files), then stdout and stderr. Where a thread Python would wait for still runs, or a
    profiler or tracer (coverage) would write its record at the exit, the normal exit."""
    from regexp.adapters import stdlib

    freeze_heap()
    waits = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    watched = sys.getprofile() is not None or sys.gettrace() is not None
    if waits or watched or not stdlib.can_run_exit_handlers():
        sys.exit(code)
    stdlib.run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`regexp train --help | head`)
            pass
    os._exit(code)


@contextlib.contextmanager
def on_one_thread():
    """torch on one thread while the block runs, then as it was."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def ignore_interrupts() -> None:
    """Ctrl-C reaches the whole process group; a helper process (the drawing one) lets its
    parent decide when it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def become_worker(environ: dict) -> None:
    """Set up a sweep's worker process: the launcher's environment of now, as a spawned
    process has it (a fork server's is that of when it started), and a process group of its
    own (a terminal's Ctrl-C reaches the launcher, which passes it on, so that each worker
    hears it once)."""
    os.environ.clear()
    os.environ.update(environ)
    os.setpgrp()


# The one message that crosses processes: `regexp train -m resume=SWEEP_DIR` tells the jobs
# it launches, in whatever process or machine a launcher runs them, which sweep goes on and
# whether its failed jobs rerun. The environment is what every launcher carries to its jobs
# (Hydra's basic and joblib ones, submitit's on a cluster, the stacked launcher's workers);
# a job's config would carry it into the run's record and its name.
RESUMED_SWEEP, RERUN_FAILED = "REGEXP_RESUMED_SWEEP", "REGEXP_RERUN_FAILED"


@contextlib.contextmanager
def telling_jobs_of_resumed_sweep(sweep: str, rerun_failed: bool):
    with environment({RESUMED_SWEEP: sweep, RERUN_FAILED: "1" if rerun_failed else ""}):
        yield


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """`values` in the environment while the block runs, then each variable as it was (unset
    where it was unset)."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resumed_sweep_told() -> tuple[str | None, bool]:
    """The sweep this job's command resumes (None outside one), and whether failed jobs rerun."""
    return os.environ.get(RESUMED_SWEEP) or None, bool(os.environ.get(RERUN_FAILED))
