"""`hydra/launcher=stacked_slurm` and `stacked_submitit_local`: the stacked launcher's
populations, each trained as one task of a submitit job array (on Slurm, or in local processes).

The jobs are set up and grouped exactly as `hydra/launcher=stacked` does it (this launcher is
that one with another way to train its populations), in the launching process, which writes
each job's run dir, .hydra/ and log as the basic launcher would; each population is then one
array task, which trains its members on the task's own cores and writes their run dirs. Slurm's
options are hydra-submitit-launcher's, under its names.

A task is checkpointable: a SIGTERM (Slurm's `scontrol requeue`, a preemption) or submitit's
USR2 (preemption or the time limit near) stops its population after the epoch in progress, with
every member's checkpoint saved; the task requeued reads from its members' run dirs where each
stands and goes on from there, as `-m resume=` would. A task that ends without a result (killed,
cancelled, out of memory) leaves its unfinished members interrupted, for `-m resume=SWEEP_DIR`.
"""

import dataclasses
import logging
import os
import signal
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import (
    BaseQueueConf,
    LocalQueueConf,
    SlurmQueueConf,
)
from omegaconf import OmegaConf

from regexp import process
from regexp.sweep import stacked

log = logging.getLogger("regexp")

PLUGINS = "hydra_plugins.regexp_stacked_launcher.submitit_launchers."


@dataclass
class StackedSlurmConf(SlurmQueueConf):
    _target_: str = PLUGINS + "StackedSlurmLauncher"
    max_members: int = 8  # the most members of one population, so of one task
    # A task goes on from its checkpoints: requeued at its time limit up to this many times.
    max_num_timeout: int = 3


@dataclass
class StackedSubmititLocalConf(LocalQueueConf):
    _target_: str = PLUGINS + "StackedSubmititLocalLauncher"
    max_members: int = 8


store = ConfigStore.instance()
store.store(group="hydra/launcher", name="stacked_slurm", node=StackedSlurmConf, provider="regexp")
store.store(
    group="hydra/launcher",
    name="stacked_submitit_local",
    node=StackedSubmititLocalConf,
    provider="regexp",
)


class SubmititLauncher(stacked.StackedLauncher):
    """The stacked launcher whose populations train as the tasks of submitit job arrays."""

    EXECUTOR = "abstract"  # submitit's name of the cluster: "slurm", "local"

    def __init__(self, max_members: int = 8, **params) -> None:
        super().__init__(max_members, n_jobs=1)  # (its tasks, not its processes, run at once)
        self.params = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in params.items()
        }
        self.executor = self._executor()  # (before the sweep writes anything: Slurm's refusals)

    def _train(self, populations: "list[list]", pool) -> "list[list]":
        executor = self.executor
        task = PopulationTask(self.config.hydra.hydra_logging)
        jobs = []
        most = max_array_size() if self.EXECUTOR == "slurm" else len(populations)
        for start in range(0, len(populations), most):
            jobs += executor.map_array(task, populations[start : start + most])
        arrays = sorted({j.job_id.split("_")[0] for j in jobs}, key=int)
        log.info(
            "%d population%s submitted as %s array task%s (job%s %s)",
            len(populations),
            "" if len(populations) == 1 else "s",
            self.EXECUTOR,
            "" if len(jobs) == 1 else "s",
            "" if len(arrays) == 1 else "s",
            ", ".join(arrays),
        )
        return [_result_of(job, members) for job, members in zip(jobs, populations, strict=True)]

    def _executor(self):
        """submitit's executor, set up from the options as hydra-submitit-launcher sets it;
        on Slurm, options it would not take are refused in one line."""
        import submitit

        if self.EXECUTOR == "slurm":
            need_slurm()
        params = dict(self.params)
        folder = params.pop("submitit_folder")
        first = {}  # (what submitit's executor takes as it is made, not as a parameter)
        if "max_num_timeout" in params:
            first[f"{self.EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(folder, cluster=self.EXECUTOR, **first)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in shared else f"{self.EXECUTOR}_{k}": v for k, v in params.items()}
        )
        if self.EXECUTOR == "slurm":
            check_submission(executor)
        return executor


def need_slurm() -> None:
    """Refuse, in one line, a machine without Slurm's commands."""
    import shutil

    from regexp.errors import UserError

    if not (shutil.which("sbatch") and shutil.which("srun")):
        raise UserError(
            "hydra/launcher=stacked_slurm: no Slurm here (sbatch and srun not found); "
            "hydra/launcher=stacked trains on this machine"
        )


def check_submission(executor) -> None:
    """Refuse, in one line, the options of a task Slurm would not take: `sbatch --test-only`
    on the script submitit would submit."""
    import subprocess
    import tempfile

    from regexp.adapters import submitit as submitit_adapter
    from regexp.errors import UserError

    with tempfile.NamedTemporaryFile("w", suffix=".sh") as script:
        script.write(submitit_adapter.sbatch_script(executor))
        script.flush()
        done = subprocess.run(
            ["sbatch", "--test-only", script.name], capture_output=True, text=True, timeout=60
        )
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if line.strip()]
        raise UserError(
            "hydra.launcher: Slurm refuses its tasks' options: "
            + "; ".join(said[:2] or [f"sbatch exited {done.returncode}"])
        )


def max_array_size() -> int:
    """The most tasks one Slurm job array may hold, as `scontrol show config` says (Slurm's
    default where it says nothing)."""
    import subprocess

    try:
        shown = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        shown = ""
    for line in shown.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value)
    return 1001


def _result_of(job, members: "list") -> "list":
    """The summaries `job`'s task returned for `members`; where it ended without one, each
    member's as its run dir says it: one that ended, as it ended; the others interrupted."""
    from regexp.run import rundir

    try:
        return job.result()
    except Exception:  # submitit's: the task failed, or died, without a result
        log.error(
            "task %s ended (%s) without a result; its log: %s",
            job.job_id,
            job.state,
            job.paths.stderr,
        )
    summaries = []
    for member in members:
        summary = rundir.summary_of(member.run_dir)
        if _ended(summary, member.conf.train.epochs) or summary.get("status") == "interrupted":
            summaries.append(summary)
        else:
            summaries.append(stacked.killed_summary(member, f"its task {job.job_id} died"))
    return summaries


def _ended(summary: dict, epochs: int) -> bool:
    """Whether a member whose run dir holds `summary` has nothing left to train."""
    if summary.get("status") in ("diverged", "failed"):
        return True
    done = (summary.get("epochs") or 0) >= epochs or "stopped_epoch" in summary
    return summary.get("status") == "completed" and done


class PopulationTask:
    """One array task: a population trained (submitit's callable, checkpointable: requeued,
    it goes on from its members' checkpoints)."""

    def __init__(self, hydra_logging, requeued: bool = False) -> None:
        self.hydra_logging, self.requeued = hydra_logging, requeued

    def __call__(self, members: "list") -> "list":
        from hydra.core.utils import configure_log

        configure_log(self.hydra_logging)
        requeued = self.requeued or _restarted_by_slurm()
        return self._going_on(members) if requeued else _trained(members)

    def checkpoint(self, members: "list"):
        """What submitit requeues: this task again, which goes on from the run dirs."""
        import submitit

        again = PopulationTask(self.hydra_logging, requeued=True)
        return submitit.helpers.DelayedSubmission(again, members)

    def _going_on(self, members: "list") -> "list":
        """Train a requeued task's members on from where each stands in its run dir, as `-m
        resume=` would: a member that ended keeps its summary; one with a checkpoint goes on
        from it; one without starts again. Members that stand at different epochs (a kill as
        they saved their checkpoints) train as populations of one epoch each."""
        from regexp.run import jobs, rundir

        outcomes: list = [None] * len(members)
        groups: dict[int, list[int]] = {}
        going_on = list(members)
        for i, member in enumerate(members):
            summary = rundir.summary_of(member.run_dir)
            if _ended(summary, member.conf.train.epochs):
                outcomes[i] = summary
                continue
            if rundir.checkpoint_file(member.run_dir).is_file():
                try:
                    conf, start = jobs.going_on(member.conf, member.run_dir, "resume")
                except Exception as exc:  # a checkpoint it cannot go on from: this one fails
                    outcomes[i] = exc
                    continue
                going_on[i] = dataclasses.replace(member, conf=conf, start_epoch=start)
            else:
                going_on[i] = dataclasses.replace(
                    member, conf=dataclasses.replace(member.conf, resume=None), start_epoch=0
                )
            groups.setdefault(going_on[i].start_epoch, []).append(i)
        log.info("requeued: %d of %d members go on", sum(map(len, groups.values())), len(members))
        for group in groups.values():
            for i, summary in zip(group, _trained([going_on[i] for i in group]), strict=True):
                outcomes[i] = summary
        return outcomes


def _trained(members: "list") -> "list":
    """Each member's summary (or the error that stopped it), `members` trained as one
    population. Stopped by a signal, the task leaves without a result once every member's
    checkpoint is saved: submitit requeues it on its USR2 (preemption, the time limit near),
    Slurm on its own SIGTERM (a requeue; a cancel ends it)."""
    from regexp.errors import Interrupted

    timing_out: list[int] = []

    def stop(signum, frame):
        if signum == signal.SIGUSR2:  # submitit's: stop after the epoch, as a SIGTERM does
            timing_out.append(signum)
            os.kill(os.getpid(), signal.SIGTERM)
        else:  # (while training, the population's own handler stops it after its epoch)
            raise Interrupted(signum)

    try:
        with process.handling(stop, (signal.SIGTERM, signal.SIGUSR2)):
            return stacked.train_population(members)
    except Interrupted as stopped:
        if timing_out:  # (submitit's own handler, back in place, checkpoints and requeues)
            signal.raise_signal(signal.SIGUSR2)
        raise SystemExit(128 + stopped.signum) from None


def _restarted_by_slurm() -> bool:
    """Whether Slurm runs this task again (a requeue submitit did not make: it counts them)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
