"""`hydra/launcher=stacked`: a sweep's jobs trained as populations.

Every job is set up as Hydra's basic launcher sets it up (its run dir, its .hydra/ files, its
log), and checked; the jobs are then grouped by what cannot differ within a population
(run.jobs.population_key), each group split into populations of at most `max_members`, and
each population trained as one stacked model, writing each job's run dir exactly as a lone
run would. A job whose config is refused fails alone, in one line; the rest train.

One population trains in this process; several train in `n_jobs` worker processes of one
torch thread each, a population at a time per worker: on a CPU, two processes of one thread
share two cores better than one process of two threads (which gains nothing for these small
nets and collapses when other work shares the cores), and a population per process is also
the shape that scales out. A group of jobs is split so that every worker has a population,
as long as each keeps a few members (stacking pays most at 4 to 8 members on a CPU). The
workers fork from a server that imports torch once (sweep/preload.py), on the other core
while this process sets up the jobs.

Why it is long: a Hydra launcher is three jobs that share its state: setting jobs up as
Hydra does (with ComposeOnce, Hydra's composition once per choice of groups), planning
populations, and running them in worker processes that hear signals and report progress.
"""

import contextlib
import copy
import itertools
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from regexp import process
from regexp.adapters import hydra as hydra_adapter
from regexp.adapters import stdlib

log = logging.getLogger("regexp")


@dataclass
class StackedLauncherConf:
    # (Hydra takes a plugin from the hydra_plugins package only: its adapter there holds it)
    _target_: str = "hydra_plugins.regexp_stacked_launcher.stacked_launcher.StackedLauncher"
    # The most members one population holds; a larger group of jobs is split into populations
    # of about equal size. On a CPU a lesson-24 member-epoch costs least at about 8 members
    # (past a few, a stacked step is bound by arithmetic); on a GPU larger populations pay, as
    # far as memory allows.
    max_members: int = 8
    # Worker processes, a population at a time each; null: one per core; 1: this process.
    n_jobs: int | None = None
    threads: int | None = None  # torch's threads per process; null: 1, regexp's default


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="regexp"
)


class StackedLauncher(Launcher):
    def __init__(
        self, max_members: int = 8, n_jobs: int | None = None, threads: int | None = None
    ) -> None:
        from regexp.components.options import need

        # (checked before any job is set up: 0 members made 0 populations, every job "never
        # trained"; -1 threads reached torch)
        key = "hydra.launcher."
        need(max_members >= 1, key + "max_members", max_members, "an integer >= 1")
        need(n_jobs is None or n_jobs >= 1, key + "n_jobs", n_jobs, "null (a core each) or >= 1")
        need(threads is None or threads >= 1, key + "threads", threads, "null (1) or >= 1")
        self.max_members, self.threads = max_members, threads
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        # The sweeper composes every job to check the batch, then this launcher composes each
        # again: through one cache, shared by both (the same HydraContext).
        if not isinstance(hydra_context.config_loader, ComposeOnce):
            hydra_context.config_loader = ComposeOnce(hydra_context.config_loader)
        self.config, self.hydra_context = config, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        # Worker processes start (and import torch) while the jobs are set up here, when the
        # sweep is large enough for populations to be split among them.
        pool = self._pool(early_workers(self.n_jobs, len(job_overrides)))
        try:
            with self.hydra_context.config_loader.launching():
                return self._launch(job_overrides, initial_job_idx, pool)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _launch(self, job_overrides, initial_job_idx: int, pool) -> list[JobReturn]:
        from regexp.run import jobs, outcomes
        from regexp.run.outcomes import Outcome

        assert self.config is not None and self.hydra_context is not None
        returns = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            # As the basic launcher runs a job, with a task that sets it up and stops there.
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=jobs.member_of,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
            # (as the basic launcher: the next job's line is the sweep's, not in this job's log)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        ready = [
            i
            for i, r in enumerate(returns)
            if r.status == JobStatus.COMPLETED and not isinstance(r.return_value, Outcome)
        ]  # (an Outcome: a job of a resumed sweep that had ended, skipped)
        for r in returns:
            if r.status != JobStatus.COMPLETED:  # refused: its summary.json says why, as the
                # basic launcher says it
                where = r.hydra_cfg.hydra.runtime.output_dir
                failure = hydra_adapter.failure_of(r)
                log.error("job failed: %s (in %s)", outcomes.one_line(failure), where)
                r.return_value, r.status = jobs.outcome(failure), JobStatus.COMPLETED
        groups: dict[tuple, list[int]] = {}
        for i in ready:
            member = returns[i].return_value
            key = (jobs.population_key(member.conf), member.start_epoch)
            groups.setdefault(key, []).append(i)
        populations = plan(list(groups.values()), self.max_members, self.n_jobs)
        sizes = sorted({len(p) for p in populations})
        workers = min(self.n_jobs, len(populations))
        log.info(
            "%d jobs in %d population%s of %s%s",
            len(ready),
            len(populations),
            "" if len(populations) == 1 else "s",
            " to ".join(map(str, sizes)) if sizes else "0",
            f", {workers} worker processes" if workers > 1 else "",
        )
        members = [[returns[i].return_value for i in p] for p in populations]
        trained = self._train(members, pool)
        for population, summaries in zip(populations, trained, strict=True):
            for i, summary in zip(population, summaries, strict=True):
                if isinstance(summary, Exception):
                    where = returns[i].hydra_cfg.hydra.runtime.output_dir
                    log.error("job failed: %s (in %s)", outcomes.one_line(summary), where)
                returns[i].return_value = jobs.outcome(summary)
                returns[i].status = JobStatus.COMPLETED
        return returns

    def _train(self, populations: "list[list]", pool) -> "list[list]":
        """Each population's summaries (or the errors that stopped its members), trained in
        the worker processes of `pool` (started now if it is None) or in this process."""
        workers = min(self.n_jobs, len(populations))
        if workers > 1:
            return self._in_workers(populations, pool or self._pool(workers))
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return (train_population(m, threads=self.threads or 1) for m in populations)

    def _pool(self, workers: int) -> futures.ProcessPoolExecutor | None:
        """`workers` processes of one population at a time each, started now (None for fewer
        than two); the pool starts more, up to `n_jobs`, if more populations come."""
        if workers < 2:
            return None
        assert self.config is not None
        context = worker_context()
        # (simple: a put reaches the pipe before it returns, so a worker that says it started
        # a population and dies at once has said so)
        self._updates = context.SimpleQueue()
        pool = futures.ProcessPoolExecutor(
            self.n_jobs,
            mp_context=context,
            initializer=_start_worker,
            initargs=(
                self._updates,
                self.threads or 1,
                self.config.hydra.hydra_logging,
                os.environ.copy(),
                os.getpid(),
            ),
        )
        # A process starts for each task no idle one takes; starting one waits for the fork
        # server to be ready, which this thread does while the jobs are set up.
        threading.Thread(target=_start, args=(pool, workers), daemon=True).start()
        return pool

    def _in_workers(
        self, populations: "list[list]", pool: futures.ProcessPoolExecutor
    ) -> "list[list]":
        """Train `populations` in the worker processes of `pool`; returns each one's
        summaries. A signal is passed on to the workers, which stop after the epoch in
        progress and checkpoint; populations not yet started are not started, and the signal
        is raised here once the workers are done."""
        from regexp.console import PopulationProgress
        from regexp.errors import Interrupted
        from regexp.run import rundir

        updates = self._updates
        received: list[int] = []

        def forward(signum, frame):
            first = not received
            received.append(signum)
            if first:
                log.warning(
                    "%s: stopping every population after this epoch to save checkpoints "
                    "(send it again to stop now)",
                    signal.Signals(signum).name,
                )
            for f in pending:
                f.cancel()
            for worker in stdlib.pool_processes(pool):
                if worker.is_alive():
                    os.kill(worker.pid, signum)

        progress = PopulationProgress([(len(p), p[0].conf.train.epochs, 0) for p in populations])
        pending: set = set()
        started: dict[int, int] = {}  # population -> the pid of the worker that took it
        workers: dict[int, object] = {}  # pid -> the worker process, which tells how it ended
        before = [[rundir.stamp(m.run_dir) for m in p] for p in populations]
        with process.handling(forward):
            try:
                done = [pool.submit(_train, i, p) for i, p in enumerate(populations)]
                pending = set(done)
                while pending:
                    _drain(updates, progress, started)
                    workers.update({w.pid: w for w in stdlib.pool_processes(pool)})
                    _, pending = futures.wait(pending, timeout=0.1)
                _drain(updates, progress, started)
            finally:
                workers.update({w.pid: w for w in stdlib.pool_processes(pool)})
                progress.close()
                pool.shutdown(wait=True, cancel_futures=True)  # (the signal reaches every worker)
        stopped = [f.exception() for f in done if not f.cancelled() and f.exception()]
        if received or any(isinstance(e, Interrupted) for e in stopped):
            raise Interrupted(received[0] if received else stopped[0].signum)
        broken = [isinstance(f.exception(), futures.BrokenExecutor) for f in done]
        if not any(broken) and stopped:
            raise stopped[0]
        trained = [None if b else f.result() for f, b in zip(done, broken, strict=True)]
        if any(broken):
            # (the pool ends its other workers with SIGTERM; the one that broke it died else)
            # (a worker never seen alive, gone between two looks, died too)
            ended = {p: getattr(workers.get(pid), "exitcode", None) for p, pid in started.items()}
            died = {p for p, code in ended.items() if code != -signal.SIGTERM}
            return self._after_a_worker_died(populations, trained, before, died)
        return trained

    def _after_a_worker_died(self, populations, trained, before, died) -> "list[list]":
        """A worker process that dies (SIGKILL, the kernel's out-of-memory killer) breaks the
        pool, which stops the other workers (a SIGTERM: each population saves its checkpoints
        after its epoch). Its population ends interrupted, for `-m resume=`, whether it was
        being set up or trained (never handed to a worker again: one that kills its worker as
        it is set up would do so each time); the populations stopped go on from their
        checkpoints and those not started (or ended by the pool as they were set up) start, in
        a new pool. `trained`: each population's summaries, None where the pool broke;
        `before`: each member's rundir.stamp before they were handed to the pool, which tells
        what it did; `died`: the populations whose worker died."""
        from dataclasses import replace

        from regexp.run import rundir

        again = []  # (population, member, as it trains again) of each member that does
        for p, members in enumerate(populations):
            if trained[p] is not None:
                continue
            now = [rundir.stamp(m.run_dir) for m in members]
            closed = [n[0] != b[0] for n, b in zip(now, before[p], strict=True)]  # a summary
            killed = p in died and not any(closed)
            trained[p] = [rundir.summary_of(m.run_dir) for m in members]
            for i, m in enumerate(members):
                if killed:
                    trained[p][i] = killed_summary(m, "its worker process died")
                elif not closed[i]:  # not started: it starts
                    again.append((p, i, m))
                elif trained[p][i].get("status") == "interrupted":  # stopped: it goes on
                    conf = replace(m.conf, resume=str(m.run_dir))
                    again.append((p, i, replace(m, conf=conf, start_epoch=trained[p][i]["epochs"])))
        groups: dict[tuple, list] = {}
        for p, i, m in again:
            groups.setdefault((p, m.start_epoch), []).append((p, i, m))
        rerun = [[m for _, _, m in g] for g in groups.values()]
        if rerun:
            workers = min(self.n_jobs, len(rerun))
            results = (
                self._in_workers(rerun, self._pool(workers))
                if workers > 1
                else [train_population(r, threads=self.threads or 1) for r in rerun]
            )
            for group, summaries in zip(groups.values(), results, strict=True):
                for (p, i, _), summary in zip(group, summaries, strict=True):
                    trained[p][i] = summary
        return trained


# A worker process's channel to the launcher's progress display, and the launcher's torch
# threads (set once as it starts).
_updates = None
_threads = 1
_ended = threading.Event()  # set once the launcher is gone


def worker_context():
    """Processes forked from a server that has imported torch and the training code (and has
    neither torch's thread pools nor CUDA started: only imported). It starts now, once per
    process, and imports as the jobs are set up. Where there is no fork (Windows), spawned."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows: spawned
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    # torch imported once, while the jobs are set up, not once per worker (3 s of CPU each)
    context.set_forkserver_preload(["regexp.sweep.preload"])
    forkserver.ensure_running()  # (at once; a second call finds it running)
    return context


def _start_worker(updates, threads: int, hydra_logging, environ: dict, launcher: int) -> None:
    """Set up a worker process: the launcher's environment of now, as a spawned process has it
    (the fork server's is that of when it started; multiprocessing sets the working dir), its
    own process group (a terminal's Ctrl-C reaches the launcher, which passes it on, so that
    each worker hears it once), torch's threads, logging as the launcher logs, and a watch on
    the `launcher`'s process, which ends the worker with it."""
    global _updates, _threads
    _threads = threads
    process.become_worker(environ)
    threading.Thread(target=_end_with, args=(launcher,), daemon=True).start()
    _updates = updates
    configure_log(hydra_logging)

    import regexp.run.population  # noqa: F401 (what every population needs, imported before it comes)

    process.use_threads(threads)


def _end_with(launcher: int, every: float = 0.5) -> None:
    """Once process `launcher` is gone (killed, even by SIGKILL, which it cannot pass on), stop
    this worker as a SIGTERM does: the population in training saves its members' checkpoints
    after the epoch in progress, for `resume=`, and the worker ends; an idle one ends at once.
    Nothing else would end it: its parent is the fork server, which outlives the launcher."""
    import time

    while _alive(launcher):
        time.sleep(every)
    _ended.set()
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)  # (a population's last epoch and checkpoints, then a hard stop)
    os._exit(143)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (another user's process: alive)
        return True
    return True


def _start(pool: futures.ProcessPoolExecutor, workers: int) -> None:
    """Start `workers` processes of `pool` now, each with a task that does nothing."""
    try:
        for _ in range(workers):
            pool.submit(_ready)
    except RuntimeError:  # the pool was shut down first: a launch that ended early
        pass


def _ready() -> None:
    """Nothing: a task that makes the pool start a worker process."""


STARTED = "started"  # a worker's word that it took a population


def _train(which: int, members: "list") -> "list":
    """Population `which`, trained in a worker process."""
    _updates.put((STARTED, which, os.getpid()))

    def progress(epoch: int, valid_losses: "list[float]", running: int) -> None:
        _updates.put((epoch, valid_losses, running, which))

    return train_population(members, _throttled(progress, members[0].conf.train.epochs))


def train_population(members: "list", progress=None, threads: "int | None" = None) -> "list":
    """Each member's summary, or the error that stopped it: an error that stops the whole
    population (its summaries say so) fails its jobs alone, as it would fail a job of the
    basic launcher, and the sweep goes on."""

    from regexp.run import population

    # The job's own `threads` (its members share it: it is part of the population's key), as
    # the basic launcher's job would use, else the launcher's (`threads`, or the worker's).
    process.use_threads(members[0].conf.threads or threads or _threads)

    try:
        return population.execute_population(members, progress)
    except Exception as exc:
        return [exc] * len(members)
    finally:
        if _ended.is_set():  # (the launcher is gone: no one takes the result or a next task)
            os._exit(143)


def _throttled(report, epochs: int, every: float = 0.1):
    """`report`, called at most every `every` seconds, and at each tenth of the `epochs` (the
    epochs the display logs where it draws no bar)."""
    import math
    import time

    last, tenth = [0.0], max(1, epochs // 10)
    best: list[float] = []  # each member's lowest valid loss yet, epochs not reported too

    def call(epoch: int, valid_losses: "list[float]", running: int) -> None:
        best[:] = map(min, best or [math.inf] * len(valid_losses), valid_losses)  # (never NaN)
        now = time.perf_counter()
        if now - last[0] >= every or epoch % tenth == 0 or epoch == epochs:
            last[0] = now
            report(epoch, list(best), running)

    return call


def killed_summary(member, what: str) -> dict:
    """The summary of `member` when the process that trained it died without a word (`what`
    says which): interrupted, to go on with `-m resume=`."""
    from regexp.run import rundir

    log.error(
        "%s (killed?) while it set up or trained %s: it ends interrupted; "
        "regexp train -m resume=SWEEP_DIR goes on with it",
        what,
        member.run_dir,
    )
    summary = {
        "status": "interrupted",
        "epochs": 0,
        "final": {},
        "best": {},
        "overrides": member.overrides,
        "error": f"{what} while it trained",
    }
    rundir.write_summary(member.run_dir, summary)
    return summary


def _drain(updates, progress, started: dict) -> None:
    """Show every update the workers have sent, and note each population they started."""
    while not updates.empty():
        update = updates.get()
        if update[0] == STARTED:
            started[update[1]] = update[2]
        else:
            progress(*update)


class ComposeOnce:
    """Hydra's config loader, composing a sweep's jobs as Hydra does but building the defaults
    list and merging the config files once per choice of config groups: about half a second a
    job, serial, before anything trains. A job's config is then a copy of its choice's
    composition with the job's value overrides applied by Hydra's own code, and its overrides
    and dir name set as Hydra sets them (tests/test_stacked.py compares the two, key for key).
    A job whose overrides reach into `hydra.` is composed by Hydra itself."""

    def __init__(self, loader):
        self._loader = loader
        self._composed: dict[tuple, DictConfig] = {}
        # Outside a launch, the sweeper composes each job of the next batch to check it, then
        # drops it: kept, the launch that follows takes it rather than copy a second one.
        self.checking = True
        self._checked: dict[tuple, DictConfig] = {}

    @contextlib.contextmanager
    def launching(self):
        """While a batch is launched: each job's config, the sweeper's if it checked it."""
        self.checking = False
        try:
            yield
        finally:
            self.checking = True
            self._checked.clear()

    def __getattr__(self, name: str):
        return getattr(self._loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]):
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import ConfigCompositionException
        from omegaconf.errors import OmegaConfBaseException

        job = (id(master_config), *sweep_overrides)
        if job in self._checked:
            return self._checked.pop(job)
        parsed = OverridesParser.create().parse_overrides(list(sweep_overrides))
        if any(o.is_hydra_override() for o in parsed):
            return self._loader.load_sweep_config(master_config, sweep_overrides)
        repo = self._loader.repository
        # What chooses config files, by the rule of Hydra's defaults list (Overrides).
        choosing = [
            o
            for o in parsed
            if repo.group_exists(o.key_or_group) and not isinstance(o.value(), dict)
        ]
        key = (id(master_config), *(o.input_line for o in choosing))
        if key not in self._composed:
            lines = [o.input_line for o in choosing]
            self._composed[key] = self._loader.load_sweep_config(master_config, lines)
        config = copy.deepcopy(self._composed[key])
        try:
            hydra_adapter.apply_overrides([o for o in parsed if o not in choosing], config)
        except OmegaConfBaseException as exc:  # as Hydra's load_configuration says it
            raise ConfigCompositionException().with_traceback(exc.__traceback__) from exc
        hydra_job = config.hydra.job
        config.hydra.overrides.task = [o.input_line for o in parsed]
        hydra_job.override_dirname = hydra_adapter.overrides_dirname(
            overrides=parsed,
            kv_sep=hydra_job.config.override_dirname.kv_sep,
            item_sep=hydra_job.config.override_dirname.item_sep,
            exclude_keys=hydra_job.config.override_dirname.exclude_keys,
        )
        if self.checking:
            self._checked[job] = config
        return config


def plan(groups: "list[list[int]]", most: int, workers: int) -> "list[list[int]]":
    """Populations of the jobs of each group: at most `most` members each, of about equal size
    within a group, and as many in all as a multiple of `workers`, so that the workers finish
    together rather than one training the last population alone (13 populations of 100 jobs on
    2 workers: the 13th alone, a ninth of the sweep); one more population at a time goes to
    the group whose populations are largest, while each keeps at least MIN_SPLIT members."""
    counts = [-(-len(jobs) // most) for jobs in groups]
    while groups and sum(counts) % workers:
        g = max(range(len(groups)), key=lambda i: len(groups[i]) / counts[i])
        if len(groups[g]) // (counts[g] + 1) < MIN_SPLIT:
            break
        counts[g] += 1
    return [p for jobs, count in zip(groups, counts, strict=True) for p in _split(jobs, count)]


MIN_SPLIT = 4  # members; a smaller population gains little from stacking


def early_workers(n_jobs: int, jobs: int) -> int:
    """How many worker processes a sweep of `jobs` starts before its jobs are set up: one a
    population of MIN_SPLIT, at most `n_jobs` (the pool starts none for fewer than two)."""
    return min(n_jobs, jobs // MIN_SPLIT)


def _split(jobs: "list[int]", count: int) -> "list[list[int]]":
    """`jobs` in `count` populations whose sizes differ by one at most."""
    size, more = divmod(len(jobs), count)
    ends = [i * size + min(i, more) for i in range(count + 1)]
    return [jobs[a:b] for a, b in itertools.pairwise(ends) if b > a]
