"""`hydra/launcher=stacked`: a sweep's jobs trained as populations.

Every job is set up as Hydra's basic launcher sets it up (its run dir, its .hydra/ files, its
log), and checked; the jobs are then grouped by what cannot differ within a population
(regexp.jobs.population_key), each group split into populations of at most `max_members`, and
each population trained as one stacked model, writing each job's run dir exactly as a lone
run would. A job whose config is refused fails alone, in one line; the rest train.

One population trains in this process; several train in `n_jobs` worker processes of one
torch thread each, a population at a time per worker: on a CPU, two processes of one thread
share two cores better than one process of two threads (which gains nothing for these small
nets and collapses when other work shares the cores), and a population per process is also
the shape that scales out. A group of jobs is split so that every worker has a population,
as long as each keeps a few members (stacking pays most at 4 to 8 members on a CPU).
"""

import logging
import multiprocessing
import os
import signal
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

log = logging.getLogger("regexp")


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.regexp_stacked_launcher.stacked_launcher.StackedLauncher"
    # The most members one population holds (its memory grows with them); a larger group of
    # jobs is split into populations of about equal size.
    max_members: int = 64
    # Worker processes, a population at a time each; null: one per core; 1: this process.
    n_jobs: int | None = None
    threads: int | None = None  # torch's threads per process; null: 1, regexp's default


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="regexp"
)


class StackedLauncher(Launcher):
    def __init__(
        self, max_members: int = 64, n_jobs: int | None = None, threads: int | None = None
    ) -> None:
        self.max_members, self.threads = max_members, threads
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from regexp import jobs, run

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
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
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        ready = [i for i, r in enumerate(returns) if r.status == JobStatus.COMPLETED]
        for i, r in enumerate(returns):
            if i not in ready:  # refused: its summary.json says why; as the basic launcher says
                where = r.hydra_cfg.hydra.runtime.output_dir
                log.error("job failed: %s (in %s)", run.one_line(r._return_value), where)
                r.return_value, r.status = jobs.outcome(r._return_value), JobStatus.COMPLETED
        groups: dict[str, list[int]] = {}
        for i in ready:
            groups.setdefault(jobs.population_key(returns[i].return_value.conf), []).append(i)
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
        if workers > 1:
            trained = self._in_workers(members, workers)
        else:
            import torch

            torch.set_num_threads(self.threads or 1)  # regexp's default (jobs.train_job says why)
            trained = map(_population, members)
        for population, summaries in zip(populations, trained, strict=True):
            for i, summary in zip(population, summaries, strict=True):
                if isinstance(summary, Exception):
                    where = returns[i].hydra_cfg.hydra.runtime.output_dir
                    log.error("job failed: %s (in %s)", run.one_line(summary), where)
                returns[i].return_value = jobs.outcome(summary)
                returns[i].status = JobStatus.COMPLETED
        return returns

    def _in_workers(self, populations: "list[list]", workers: int) -> "list[list]":
        """Train `populations` in `workers` processes; returns each one's summaries. A signal
        is passed on to the workers, which stop after the epoch in progress and checkpoint;
        populations not yet started are not started, and the signal is raised here once the
        workers are done."""
        from regexp.run import Interrupted
        from regexp.track import PopulationProgress

        assert self.config is not None
        spawn = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
        updates = spawn.Queue()
        received: list[int] = []
        pool = futures.ProcessPoolExecutor(
            workers,
            mp_context=spawn,
            initializer=_start_worker,
            initargs=(updates, self.threads or 1, self.config.hydra.hydra_logging),
        )

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
            for process in list(pool._processes.values()):  # noqa: SLF001 (no public list)
                if process.is_alive():
                    os.kill(process.pid, signum)

        progress = PopulationProgress([(len(p), p[0].conf.train.epochs, 0) for p in populations])
        pending: set = set()
        handlers = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            done = [pool.submit(_train, i, p) for i, p in enumerate(populations)]
            pending = set(done)
            while pending:
                _drain(updates, progress)
                _, pending = futures.wait(pending, timeout=0.1)
            _drain(updates, progress)
        finally:
            progress.close()
            pool.shutdown(wait=True, cancel_futures=True)
            for s, handler in handlers.items():
                signal.signal(s, handler)
        stopped = [f.exception() for f in done if not f.cancelled() and f.exception()]
        if received or any(isinstance(e, Interrupted) for e in stopped):
            raise Interrupted(received[0] if received else stopped[0].signum)
        if stopped:
            raise stopped[0]
        return [f.result() for f in done]


# A worker process's channel to the launcher's progress display (set once as it starts).
_updates = None


def _start_worker(updates, threads: int, hydra_logging) -> None:
    """Set up a worker process: its own process group (a terminal's Ctrl-C reaches the
    launcher, which passes it on, so that each worker hears it once), torch's threads, and
    logging as the launcher logs."""
    global _updates
    os.setpgrp()
    _updates = updates
    configure_log(hydra_logging)
    import torch

    torch.set_num_threads(threads)


def _train(which: int, members: "list") -> "list":
    """Population `which`, trained in a worker process."""

    def progress(epoch: int, valid_losses: "list[float]", running: int) -> None:
        _updates.put((epoch, valid_losses, running, which))

    return _population(members, _throttled(progress, members[0].conf.train.epochs))


def _population(members: "list", progress=None) -> "list":
    """Each member's summary, or the error that stopped it: an error that stops the whole
    population (its summaries say so) fails its jobs alone, as it would fail a job of the
    basic launcher, and the sweep goes on."""
    from regexp import run

    try:
        return run.execute_population(members, progress)
    except Exception as exc:
        return [exc] * len(members)


def _throttled(report, epochs: int, every: float = 0.1):
    """`report`, called at most every `every` seconds, and at each tenth of the `epochs` (the
    epochs the display logs where it draws no bar)."""
    import time

    last, tenth = [0.0], max(1, epochs // 10)

    def call(epoch: int, valid_losses: "list[float]", running: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every or epoch % tenth == 0 or epoch == epochs:
            last[0] = now
            report(epoch, valid_losses, running)

    return call


def _drain(updates, progress) -> None:
    """Show every update the workers have sent."""
    import queue

    while True:
        try:
            progress(*updates.get_nowait())
        except queue.Empty:
            return


def plan(groups: "list[list[int]]", most: int, workers: int) -> "list[list[int]]":
    """Populations of the jobs of each group: at most `most` members each, of about equal size
    within a group; then the largest split in two while there are fewer than `workers` and
    each half keeps at least MIN_SPLIT members."""
    populations = [p for jobs in groups for p in _split(jobs, -(-len(jobs) // most))]
    while len(populations) < workers:
        largest = max(populations, key=len, default=[])
        if len(largest) < 2 * MIN_SPLIT:
            break
        populations.remove(largest)
        populations += _split(largest, 2)
    return populations


MIN_SPLIT = 4  # members; a smaller population gains little from stacking


def _split(jobs: "list[int]", count: int) -> "list[list[int]]":
    """`jobs` in `count` populations of about equal size."""
    size = -(-len(jobs) // count)
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]
