"""`hydra/launcher=stacked`: a sweep's jobs trained as populations.

Every job is set up as Hydra's basic launcher sets it up (its run dir, its .hydra/ files, its
log), and checked; the jobs are then grouped by what cannot differ within a population
(regexp.jobs.population_key), each group split into populations of at most `max_members`, and
each population trained as one stacked model, in this process, writing each job's run dir
exactly as a lone run would. A job whose config is refused fails alone, in one line; the
rest train.
"""

import logging
from collections.abc import Sequence
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
    threads: int | None = None  # torch's threads; null: regexp's default


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="regexp"
)


class StackedLauncher(Launcher):
    def __init__(self, max_members: int = 64, threads: int | None = None) -> None:
        self.max_members, self.threads = max_members, threads
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
        populations = [p for jobs in groups.values() for p in _split(jobs, self.max_members)]
        sizes = sorted({len(p) for p in populations})
        log.info(
            "%d jobs in %d population%s of %s",
            len(ready),
            len(populations),
            "" if len(populations) == 1 else "s",
            " to ".join(map(str, sizes)) if sizes else "0",
        )
        import torch

        torch.set_num_threads(self.threads or 1)  # regexp's default: 1 (jobs.train_job says why)
        for population in populations:
            members = [returns[i].return_value for i in population]
            for i, summary in zip(population, run.execute_population(members), strict=True):
                if isinstance(summary, Exception):
                    where = returns[i].hydra_cfg.hydra.runtime.output_dir
                    log.error("job failed: %s (in %s)", run.one_line(summary), where)
                returns[i].return_value = jobs.outcome(summary)
                returns[i].status = JobStatus.COMPLETED
        return returns


def _split(jobs: "list[int]", most: int) -> "list[list[int]]":
    """`jobs` in as few populations of at most `most` as can hold them, of about equal size."""
    count = -(-len(jobs) // most)
    size = -(-len(jobs) // count)
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]
