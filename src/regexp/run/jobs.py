"""Hydra's side of training: the task function behind `regexp train`, a sweep job as a member
of a population for the stacked launcher, and what decides which jobs share a population.
torch and the training code are imported where a job trains: the stacked launcher's process
sets jobs up and groups them while its workers import them."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from regexp import config
from regexp.config import Member
from regexp.errors import UserError, user_error
from regexp.run import rundir
from regexp.run.outcomes import Outcome, failure, one_line

log = logging.getLogger("regexp")


def train_job(cfg: DictConfig) -> Outcome:
    """Train one run into Hydra's output dir; returns its outcome, whose value is the best
    valid loss, which sweepers minimize. A job that fails is recorded in its summary.json; a
    user's mistake comes back in the outcome, to be said in one line once Hydra is done (the
    callback `outcomes.SweepReport` raises it), rather than as a failed job's traceback; in
    a sweep, the sweep goes on."""
    hydra = HydraConfig.get()
    run_dir, overrides = Path(hydra.runtime.output_dir), task_overrides(hydra)
    sweep = hydra.mode == RunMode.MULTIRUN
    try:
        ready = prepared(cfg, run_dir, overrides)
        if isinstance(ready, Outcome):
            return ready
        conf, _ = ready
        from regexp import process
        from regexp.run.population import execute

        process.use_threads(conf.threads)  # (one unless told, whatever the launcher)
        summary = execute(conf, run_dir, overrides, named(hydra, overrides))
    except Exception as exc:
        if sweep:
            kept = {"run_log": not rundir.in_resumed_sweep(run_dir)}
            log.error("job failed: %s (in %s)", one_line(exc), run_dir, extra=kept)
            return Outcome(math.nan, "failed")
        said = user_error(exc)  # (raised, Hydra would print its own line about the job first)
        if said is None:
            raise
        if made_now(hydra):  # a refused run leaves no dir behind
            rundir.remove_untrained(run_dir, Path(hydra.runtime.cwd))
        return Outcome(math.nan, "failed", exc if isinstance(exc, UserError) else UserError(said))
    return Outcome(summary["best"].get("valid_loss", math.nan), summary["status"])


def made_now(hydra: DictConfig) -> bool:
    """Whether this command made the run's dir: conf/train.yaml's default, a fresh dir
    (rundir.fresh), rather than one the user named."""
    given = OmegaConf.to_container(hydra.run, resolve=False).get("dir")
    return str(given).startswith("${regexp_fresh:")


# The keys whose values may differ between the members of one population: each member has its
# own random state, data, initial weights and optimizer hyperparameters. Any other difference
# (architecture, norm, data set, batch size, epochs, device...) makes another population.
MAY_DIFFER = (
    "seed",
    "data.draw",
    "data.label_noise",
    "init.",
    "model.dropout",
    "model.dropout2d",
    "optim.lr",
    "optim.weight_decay",
    "optim.momentum",
    "optim.dampening",
    "optim.betas",
    "optim.eps",
    "optim.alpha",
    "optim.lr_decay",
    "optim.initial_accumulator_value",
    "reg.l1",
    "reg.l2",
    "sched.",
    "train.early_stop.",  # each member stops on its own
    "resume",
)


def population_key(conf: config.Config) -> str:
    """What members of one population share: the config less the keys that MAY_DIFFER (and
    the scheduler's name, which must match)."""
    flat = config.flat(dataclasses.asdict(conf))  # (OmegaConf's own copy: 20 times slower)
    kept = {k: v for k, v in flat.items() if not k.startswith(MAY_DIFFER)}
    kept["sched.name"] = flat["sched.name"]
    return json.dumps(kept, sort_keys=True, default=str)


def member_of(cfg: DictConfig) -> Member | Outcome:
    """The job Hydra is running, validated, as a member of a population (or, in a resumed
    sweep, the outcome of a job that ended); a value the checks refuse is written to its
    summary.json and raised."""
    hydra = HydraConfig.get()
    run_dir, overrides = Path(hydra.runtime.output_dir), task_overrides(hydra)
    ready = prepared(cfg, run_dir, overrides)
    if isinstance(ready, Outcome):
        return ready
    conf, start = ready
    return Member(conf, run_dir, overrides, start, named(hydra, overrides), **job_log_file(hydra))


def job_log_file(hydra: DictConfig) -> dict:
    """Member's `log_file` and `log_format`: the job logging's file handler (train.log by
    default) as Hydra configured it for this job; none where it has none."""
    logging_conf = hydra.job_logging
    handler = OmegaConf.select(logging_conf, "handlers.file")
    if handler is None or "filename" not in handler:
        return {}
    form = OmegaConf.select(logging_conf, f"formatters.{handler.get('formatter')}.format")
    return {"log_file": Path(handler.filename), **({"log_format": form} if form else {})}


def prepared(
    cfg: DictConfig, run_dir: Path, overrides: list[str]
) -> tuple[config.Config, int] | Outcome:
    """The job's validated config and the epoch it starts from, or, in a resumed sweep, the
    outcome of a job that had ended (skipped). A value the checks refuse is written to the
    job's summary.json (not a resumed run's: it keeps its own) and raised."""
    step = sweep_step(cfg, run_dir)
    if step == "skip":
        return skipped(run_dir)
    try:
        conf = config.validate(cfg)
    except Exception as exc:  # (an interpolation that fails, too)
        if cfg.get("resume") is None and step != "resume":
            rundir.write_summary(run_dir, failure(exc, overrides))
        raise
    ready = going_on(conf, run_dir, step)
    if HydraConfig.get().output_subdir is None and step is not None:
        rundir.write_hydra_record(run_dir, hydra_record(cfg))  # (rundir.hydra_record_dir)
    return ready


def hydra_record(cfg: DictConfig) -> dict[str, str]:
    """The files of Hydra's record of the job `cfg` (run_job's), by name."""
    hydra = HydraConfig.instance().cfg
    return {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(hydra),
        "overrides.yaml": OmegaConf.to_yaml(hydra.hydra.overrides.task),
    }


def named(hydra: DictConfig, overrides: list[str]) -> list[str] | None:
    """A sweep job's overrides that its dir's name holds (what the sweep varies); None for a
    lone run."""
    if hydra.mode != RunMode.MULTIRUN:
        return None
    return config.naming_overrides(overrides, hydra.job.config.override_dirname)


def task_overrides(hydra: DictConfig) -> list[str]:
    """The job's overrides as given: `optim.lr=${optim.lr}` is a string here, not a value to
    resolve (which would recurse)."""
    return list(OmegaConf.to_container(hydra.overrides.task, resolve=False))


def sweep_step(cfg: DictConfig, run_dir: Path) -> str | None:
    """What the job does in a sweep resumed by `regexp train -m resume=SWEEP_DIR` (skip,
    resume or start: rundir.resumed_sweep_job); None outside one."""
    try:
        epochs = int(cfg.train.epochs)
    except Exception:  # (an interpolation that fails: validate says so)
        epochs = 0
    return rundir.resumed_sweep_job(run_dir, epochs)


def skipped(run_dir: Path) -> Outcome:
    """A job of a resumed sweep that had ended: its outcome as its summary.json says it."""
    summary = rundir.summary_of(run_dir)  # (read again: resumed_sweep_job found it ended)
    log.info("skipped, %s already: %s", summary["status"], run_dir)
    if summary["status"] == "failed":
        return Outcome(math.nan, "failed")
    return outcome(summary)


def going_on(conf: config.Config, run_dir: Path, step: str | None) -> tuple[config.Config, int]:
    """The job's config as it trains in a resumed sweep, and the epoch it starts from: from
    its own checkpoint (which must leave epochs to train), or from the start (where what an
    earlier attempt left without a checkpoint is cleared, under the dir's lock:
    population.execute_population)."""
    if step != "resume":
        return conf, 0
    from regexp.engine import checkpoint  # (torch: only where a sweep is resumed)

    # Refused here, a job of another run's checkpoint or a damaged record fails alone, before
    # the jobs are grouped into populations.
    saved = rundir.checkpoint_file(run_dir)
    done = checkpoint.read_checked(saved, run=config.identity(conf))["epoch"]
    rundir.check_more_epochs(conf.train.epochs, done, run_dir)
    rundir.check_record(run_dir, done)
    log.info("resumed from epoch %d: %s", done, run_dir)
    return dataclasses.replace(conf, resume=str(run_dir)), done


def outcome(summary: dict | Exception) -> Outcome:
    if isinstance(summary, Exception):
        return Outcome(math.nan, "failed", summary)
    return Outcome(summary["best"].get("valid_loss", math.nan), summary["status"])
