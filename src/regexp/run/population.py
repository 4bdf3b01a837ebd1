"""Runs, alone or as a population: build what each validated config names, as its lone run
would, train the members as one stack, record each into its own run dir.

`execute` trains one run (a population of one) from a config and a run dir, in-process;
`execute_population` trains several; jobs.py is Hydra's side (the task function, the stacked
launcher's grouping).

Why it is long: a member's whole life outside the loop reads here in order (its dir held,
set up with its own random state, resumed, recorded, closed with its summary, predictions and
best weights), so that what a population does for each member matches a lone run's by
being the same code.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from regexp import config, process
from regexp.components import data, init, models, optim, schedules
from regexp.config import Member
from regexp.console import LogFile, PopulationProgress
from regexp.engine import checkpoint, hooks, loop, stopping, updates
from regexp.engine.stack import Stack, weight_mask
from regexp.engine.track import Tracker
from regexp.errors import ConfigError, Interrupted, UserError, first_line, show
from regexp.figures import plots
from regexp.run import memory, predictions, rundir
from regexp.run.outcomes import failure, one_line

log = logging.getLogger("regexp")


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", name, "auto or cpu: this machine has no CUDA device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", name, "auto or cpu: this machine has no MPS device")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(conf: config.Config, dataset: data.Dataset) -> torch.nn.Module:
    outputs = optim.model_outputs(conf.loss, dataset.task, dataset.n_outputs)  # bce: one logit
    model = models.build(conf.model, conf.norm, dataset.in_shape, outputs)
    return init.apply(model, conf.init)


def check_batches(model: torch.nn.Module, n: int, n_valid: int, batch_size: int | None) -> None:
    """Refuse batches of one example where the model has batch norm, which cannot normalize
    them (PyTorch stops with an error mid-epoch): a last training batch of one, and, for batch
    norm without running statistics (it normalizes by the batch in eval mode too), a last
    evaluation chunk of one."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    why = "batch norm cannot normalize a batch of one"
    if n == 1:
        raise ConfigError("data.n_train", n, f"at least 2 with norm=bn: {why}")
    size = min(batch_size or n, n)
    if (n % size or size) == 1:
        raise ConfigError(
            "train.batch_size",
            batch_size,
            f"one that leaves no last batch of a single example ({n} training examples): {why}",
        )
    if not all(m.track_running_stats for m in norms) and (n_valid % loop.EVAL_CHUNK) == 1:
        raise ConfigError(
            "norm.track_running_stats",
            "false",
            f"true with {n_valid} valid examples: without running statistics batch norm "
            f"normalizes the valid set by its own batches, and {why}",
        )


# A lone run's keys in HParams, beside its overrides.
MAIN_CHOICES = ("data", "model", "norm", "init", "optim", "sched", "optim.lr", "optim.weight_decay")
MAIN_CHOICES += ("loss", "reg.l1", "reg.l2", "model.dropout", "train.batch_size")


def hparams(conf: config.Config, member: Member) -> dict:
    """What TensorBoard's HParams tab shows for the run: a sweep job's, the keys the sweep
    varies, which TensorBoard shows as its columns (it ticks the first five, those that differ
    first); a lone run's, the main choices and every override. Each key has one type in every
    run (TensorBoard makes text of a key whose type differs between runs): a number as a
    float, a key that may be null as text ('null', '64'), a list as text ('[200,200]'); a key
    outside the config (experiment, hydra.*) as its override's."""
    overrides = member.overrides if member.named is None else member.named
    given = dict(o.lstrip("+~").partition("=")[::2] for o in overrides)
    keys = [] if member.named is not None else [*MAIN_CHOICES, "seed"]
    keys += given
    values = {key: _hparam(conf, key) for key in keys}
    return {k: given.get(k, "") if v is None else v for k, v in values.items()}


def _hparam(conf: config.Config, key: str):
    """The value of the dotted `key` in `conf` in its HParams type; None if there is no such
    key (a group's value is its option's name)."""
    import dataclasses
    import typing

    parent, value = None, conf
    for part in key.split("."):
        if not hasattr(value, part):
            return None
        parent, value = value, getattr(value, part)
    if dataclasses.is_dataclass(value):
        return getattr(value, "name", None)
    hint = typing.get_type_hints(type(parent)).get(key.rsplit(".", 1)[-1])
    if value is None or type(None) in typing.get_args(hint) or isinstance(value, (list, tuple)):
        return show(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def execute(
    conf: config.Config, run_dir: Path, overrides: list[str] = (), named: list[str] | None = None
) -> dict:
    """Train the run `conf` describes, recording into `run_dir`; returns its summary. A lone
    run is a population of one.

    With `conf.resume`, `run_dir` is that run's dir: its checkpoint is loaded and its record
    goes on from the checkpoint's epoch.
    """
    (summary,) = execute_population([Member(conf, run_dir, list(overrides), named=named)])
    if isinstance(summary, Exception):
        raise summary
    return summary


@dataclass
class Built:
    """A member set up for training: its dataset, model, generators, tracker."""

    member: Member
    dataset: data.Dataset
    model: torch.nn.Module
    dropout: torch.Generator  # its dropout masks, in the order its lone run draws them
    batches: torch.Generator  # its batch order
    device: torch.device
    tracker: Tracker | None = None
    start_epoch: int = 0
    stopper: stopping.Stopper | None = None


def setup(member: Member) -> Built:
    """What a lone run of `member` builds before its first epoch, with its own random state."""
    conf = member.conf
    member.run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(conf.seed)
    device = device_of(conf.device)
    memory.check_data(conf.data)
    dataset = data.load(conf.data, conf.seed, device)
    memory.check_model(conf, dataset, device)
    model = build_model(conf, dataset).to(device)
    check_batches(model, len(dataset.x_train), len(dataset.x_valid), conf.train.batch_size)
    if device.type == "cpu":  # the masks come after the initial weights in torch's stream
        dropout = torch.Generator().set_state(torch.get_rng_state())
    else:  # on a GPU, from the device's own stream, which the weights (made on the CPU) left
        dropout = torch.Generator(device).manual_seed(conf.seed)
    batches = torch.Generator().manual_seed(conf.seed)
    early = conf.train.early_stop
    stopper = None
    if early.patience is not None:
        stopper = stopping.Stopper(early.patience, early.min_delta, early.restore_best)
    return Built(member, dataset, model, dropout, batches, device, stopper=stopper)


def execute_population(
    members: list[Member], progress: Callable[[int, list[float], int], None] | None = None
) -> list[dict | Exception]:
    """Train `members` as one population and record each into its own run dir, exactly as
    each would be alone; returns each member's summary, or the error that stopped it before
    training (the others train all the same).

    `progress(epoch, valid_losses, running)` hears of each epoch (the stacked launcher's
    display of all its populations); by default a population shows its own progress bar, and
    a lone run its tracker's."""
    outcomes: list[dict | Exception | None] = [None] * len(members)
    built: list[Built] = []
    with ExitStack() as held:
        for i, member in enumerate(members):
            try:  # the dir is this run's while it trains; another run's is left as it is
                member.run_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(rundir.hold(member.run_dir))
            except UserError as exc:
                outcomes[i] = exc
                continue
            if not member.conf.resume and not rundir.checkpoint_file(member.run_dir).exists():
                rundir.clear_record(member.run_dir)  # (a run killed before its first checkpoint)
            try:
                built.append(setup(member))
            except Exception as exc:  # this member alone fails: its summary says why
                if not member.conf.resume:
                    rundir.write_summary(member.run_dir, failure(exc, member.overrides))
                if not isinstance(exc, UserError):
                    raise
                outcomes[i] = exc
        if built:
            summaries = iter(_train(built, progress))
            outcomes = [o if o is not None else next(summaries) for o in outcomes]
    return outcomes


def _train(built: list[Built], progress: Callable | None) -> list[dict]:
    """Train the set-up members as one stack; returns their summaries in order."""
    first = built[0].member.conf
    dataset = built[0].dataset
    stack, update, schedule = _stacked(built)
    confs = [b.member.conf for b in built]
    lrs = update.lr[:, 0].tolist()  # each member's lr as its option configures it
    loss_fn = optim.build_loss(first.loss, dataset.task, dataset.n_outputs, reduction="none")
    status, errors = ["failed"] * len(built), [None] * len(built)
    stopped: list[int | None] = [None] * len(built)
    own_progress = progress is None and len(built) > 1
    doing = [process.STOPPING]
    with process.stop_on_signals(doing) as received, ExitStack() as held:
        try:
            _start(built, stack, update, schedule)
            for b in built:
                b.tracker = _tracker(b, progress is None and len(built) == 1, held)
            if own_progress:
                progress = PopulationProgress(
                    [(len(built), first.train.epochs, built[0].start_epoch)]
                )
            plan = loop.Plan(
                epochs=first.train.epochs,
                start_epoch=built[0].start_epoch,
                batch_size=first.train.batch_size,
                penalty=updates.build_penalty([c.reg for c in confs], stack),
                clip_grad_norm=first.train.clip_grad_norm,
                weight_stats_every=first.log.weight_stats_every,
                generators=[b.batches for b in built],
                lrs=lrs,
                best_valid=[_best_valid(b.tracker) for b in built],
            )
            hooks = _hooks(built, schedule, progress, lambda: bool(received))
            data = loop.stack_data([b.dataset for b in built])
            results = loop.fit(stack, update, loss_fn, data, plan, hooks)
            for b, result in zip(built, results, strict=True):
                predictions.keep(b.member.run_dir, result, b.dataset, b.model)
            status = [r.status for r in results]
            stopped = [r.epoch if r.stopped else None for r in results]
            errors = [r.error for r in results]
        except KeyboardInterrupt:
            status = ["interrupted"] * len(built)
            raise
        except Exception as exc:
            errors = [one_line(exc)] * len(built)
            for b in built:  # (a resumable run keeps its own summary)
                if b.tracker is None and not b.member.conf.resume:
                    rundir.write_summary(b.member.run_dir, failure(exc, b.member.overrides))
            raise
        finally:
            doing[0] = process.CLOSING  # (training is over: a signal waits for the records)
            if own_progress and isinstance(progress, PopulationProgress):
                progress.close()
            summaries = _close(built, status, errors, stopped)
        for b, summary in zip(built, summaries, strict=True):  # (the console, and its own log)
            say_outcome(b, summary, dict.fromkeys([log, b.tracker.log]))
    if any(s["status"] == "interrupted" for s in summaries):
        raise Interrupted(received[0], built[0].member.run_dir, summaries[0]["epochs"])
    if len(built) == 1:
        built[0].tracker.print_summary(summaries[0])
    if received:  # after the records were written: the run is whole, the process interrupted
        raise Interrupted(received[0])
    return summaries


def _stacked(built: list[Built]) -> tuple[Stack, updates.Update, schedules.Schedule]:
    """The members' models as one stack, with its update and schedule, as they start."""
    first = built[0].member.conf
    stack = Stack([b.model for b in built], [b.dropout for b in built])
    decayed = None if first.optim.decay_norm_and_bias else weight_mask(stack)
    update = updates.build_update([b.member.conf.optim for b in built], stack.flat, decayed)
    lrs = update.lr[:, 0].tolist()  # each member's lr as its option configures it
    scheds = [b.member.conf.sched for b in built]
    return stack, update, schedules.build_schedule(scheds, first.train.epochs, lrs)


def check_resume(conf: config.Config, run_dir: Path) -> int:
    """Go through the start of the run in `run_dir` resumed with `conf` and write nothing:
    its model built, its checkpoint restored into it, its record read back. Whatever would
    refuse the resume refuses it here, before Hydra writes in the dir. Returns the epoch it
    would go on from."""
    built = setup(Member(conf, run_dir))
    stack, update, schedule = _stacked([built])
    saved = rundir.checkpoint_file(run_dir)
    return resume(saved, conf, stack, 0, update, schedule, built.batches, built.stopper)


def _start(built: list[Built], stack: Stack, update, schedule) -> None:
    """Where each member starts: a resumed one from its checkpoint, a new one with its layer
    table (model.txt). A population resumes from one epoch."""
    tables: dict[str, str] = {}
    for i, b in enumerate(built):
        conf, run_dir = b.member.conf, b.member.run_dir
        if conf.resume:
            saved = rundir.checkpoint_file(run_dir)
            b.start_epoch = resume(saved, conf, stack, i, update, schedule, b.batches, b.stopper)
        else:
            key = str(b.model)  # (members differ in their layers only where their dropout does)
            if key not in tables:
                tables[key] = models.describe(b.model, b.dataset.in_shape, b.device)
            rundir.write_model_table(run_dir, tables[key])
    if len({b.start_epoch for b in built}) > 1:
        raise ValueError("the members of a population resume from one epoch")


def _tracker(b: Built, progress: bool, held: ExitStack) -> Tracker:
    """Member `b`'s record, from its start epoch on (with its own log file where it has one)."""
    conf = b.member.conf
    return Tracker(
        b.member.run_dir,
        epochs=conf.train.epochs,
        hparams=hparams(conf, b.member),
        figure=plots.for_dataset(b.dataset) if conf.log.figure_every else None,
        classify=b.dataset.task == "classification",
        start_epoch=b.start_epoch,
        progress=progress,
        logger=held.enter_context(own_log(b.member)),
    )


def _hooks(built: list[Built], schedule, progress, stop) -> list[hooks.Hook]:
    """The hooks the loop calls after each epoch, in order, as the members' config chooses."""
    first = built[0].member.conf
    trackers = [b.tracker for b in built]
    dirs = [b.member.run_dir for b in built]
    stoppers = [b.stopper for b in built]
    runs = [config.identity(b.member.conf) for b in built]
    checkpoints = hooks.Checkpoints(
        dirs, trackers, schedule, stoppers, first.train.checkpoint_every, stop, runs
    )
    chosen = [hooks.Records(trackers)]
    if first.log.hist_every:
        chosen.append(hooks.Histograms(trackers, first.log.hist_every))
    if first.log.figure_every and any(t.figure is not None for t in trackers):
        chosen.append(hooks.LiveFigures(trackers, first.log.figure_every))
    chosen.append(hooks.Divergence())
    if any(s is not None for s in stoppers):
        chosen.append(hooks.EarlyStopping(stoppers, checkpoints))
    if schedule is not None:
        chosen.append(hooks.LRSchedule(schedule))
    if progress is not None:
        chosen.append(hooks.Progress(progress))
    return [*chosen, checkpoints]


def _close(built: list[Built], status, errors, stopped) -> list[dict]:
    """End each member's record (summary.json, its figures); returns their summaries."""
    summaries = []
    for b, state, error, stop in zip(built, status, errors, stopped, strict=True):
        if b.tracker is None:
            continue
        summaries.append(
            b.tracker.close(
                state,
                b.model,
                params=models.count_params(b.model),
                seed=b.member.conf.seed,
                device=str(b.device),
                threads=torch.get_num_threads(),
                overrides=b.member.overrides,
                **({"error": error} if error else {}),
                **({"stopped_epoch": stop} if stop is not None else {}),
                weights_of=b.stopper.restored if b.stopper is not None else None,
            )
        )
    return summaries


@contextmanager
def own_log(member: Member):
    """A logger writing to `member.log_file` alone (its job's train.log), while it trains
    beside others; None (regexp's own log, as a lone run has it) where it has none."""
    if member.log_file is None:
        yield None
        return
    logger = logging.getLogger(f"regexp.job.{member.run_dir}")
    logger.propagate, logger.level = False, logging.INFO
    handler = LogFile(member.log_file)
    handler.setFormatter(logging.Formatter(member.log_format))
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()
        logging.Logger.manager.loggerDict.pop(logger.name, None)  # (a worker trains many)


def say_outcome(b: Built, summary: dict, loggers) -> None:
    """How a run ended, where it did not simply complete, to each of `loggers`."""
    run_dir = b.member.run_dir
    for logger in loggers:
        if summary["status"] == "diverged":
            logger.warning(
                "diverged: %s; stopped there, everything up to it is in %s",
                summary.get("error"),
                run_dir,
            )
        if "stopped_epoch" in summary:
            best = summary["best"]
            logger.info(
                "stopped early after epoch %d: the valid loss has not improved since epoch %d "
                "(%.4g)%s",
                summary["stopped_epoch"],
                best.get("epoch", 0),
                best.get("valid_loss", float("nan")),
                "; ends with its weights (best.pt)"
                if b.member.conf.train.early_stop.restore_best
                else "",
            )
        if summary["status"] == "interrupted":
            logger.warning(
                "interrupted after epoch %d; resume with: regexp train resume=%s",
                summary["epochs"],
                run_dir,
            )


def _best_valid(tracker: Tracker) -> float:
    """The best valid loss a run had before this fit (a resumed run's), else infinity."""
    best = tracker.best
    return best["valid_loss"] if best is not None else float("inf")


def resume(
    path: Path, conf: config.Config, stack, i: int, update, schedule, batches, stopper=None
) -> int:
    """Load the checkpoint at `path` into member `i` of the population; returns its epoch.
    It must be of the run `conf` describes, and of an epoch its metrics.csv reached."""
    run = config.identity(conf)
    try:
        epoch = checkpoint.restore(path, run, stack, i, update, schedule, batches, stopper)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:  # the fields of another run
        raise UserError(
            f"{path}: refused, not a checkpoint of this run ({first_line(exc)})"
        ) from exc
    rundir.check_more_epochs(conf.train.epochs, epoch, path.parent)
    rundir.check_record(path.parent, epoch)
    return epoch
