"""One training job: build what a validated config names, train it, record it.

`train_job` is the Hydra task function behind `regexp train`; `execute` does the work from a
config and a run dir, so it can be called in-process too.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from regexp import config, data, init, models, optim, plots, rundir, train
from regexp.errors import ConfigError, UserError
from regexp.outcomes import Outcome
from regexp.track import Tracker, write_json

log = logging.getLogger("regexp")


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM; the process exits with 128 + the signal number."""

    def __init__(self, signum: int, run_dir: Path | None = None, epoch: int | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.run_dir, self.epoch = signum, run_dir, epoch


def train_job(cfg: DictConfig) -> Outcome:
    """Train one run into Hydra's output dir; returns its outcome, whose value is the best
    valid loss, which sweepers minimize. A job that fails is recorded in its summary.json; a
    user's mistake comes back in the outcome, to be said in one line once Hydra is done (the
    callback `outcomes.SweepReport` raises it), rather than as a failed job's traceback; in
    a sweep, the sweep goes on."""
    hydra = HydraConfig.get()
    run_dir, overrides = Path(hydra.runtime.output_dir), list(hydra.overrides.task)
    sweep = hydra.mode == RunMode.MULTIRUN
    try:
        try:
            conf = config.validate(cfg)
        except UserError as exc:
            if cfg.get("resume") is None:  # a resumed run keeps its own summary
                write_json(run_dir / "summary.json", failure(exc, overrides))
            raise
        threads = conf.threads or threads_per_job(hydra.launcher)
        if threads:
            torch.set_num_threads(threads)
        summary = execute(conf, run_dir, overrides)
    except Exception as exc:
        if sweep:
            log.error("job failed: %s (in %s)", one_line(exc), run_dir)
        elif not isinstance(exc, UserError):
            raise
        return Outcome(math.nan, "failed", None if sweep else exc)
    return Outcome(summary["best"].get("valid_loss", math.nan), summary["status"])


def threads_per_job(launcher: DictConfig) -> int | None:
    """torch's threads for a job of `launcher`: the cores shared out among the jobs a joblib
    launcher runs at once, or the CPUs a submitit job was given; None leaves torch's default."""
    cores = os.cpu_count() or 1
    if launcher.get("n_jobs") is not None:  # joblib: -1 is one job per core
        jobs = cores if launcher.n_jobs < 0 else min(launcher.n_jobs, cores)
        return max(1, cores // jobs)
    return launcher.get("cpus_per_task")


def failure(exc: BaseException, overrides: list[str]) -> dict:
    """The summary of a run that failed before its tracker started."""
    return {"status": "failed", "epochs": 0, "error": one_line(exc), "overrides": overrides}


def one_line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def stop_on_signals():
    """The first SIGINT or SIGTERM asks training to stop once the epoch in progress is done,
    so that the checkpoint holds whole epochs; a second one stops at once. Yields the list of
    signals received."""
    received: list[int] = []

    def handle(signum, frame):
        if received:
            raise Interrupted(signum)
        received.append(signum)
        log.warning(
            "%s: stopping after this epoch to save a checkpoint (send it again to stop now)",
            signal.Signals(signum).name,
        )

    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield received
        return
    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
    if not all(m.track_running_stats for m in norms) and (n_valid % train.EVAL_CHUNK) == 1:
        raise ConfigError(
            "norm.track_running_stats",
            "false",
            f"true with {n_valid} valid examples: without running statistics batch norm "
            f"normalizes the valid set by its own batches, and {why}",
        )


def hparams(conf: config.Config, overrides: list[str]) -> dict:
    """What TensorBoard's HParams tab shows for the run: the main choices and every override."""
    values = {
        "data": conf.data.name,
        "model": conf.model.name,
        "norm": conf.norm.name,
        "init": conf.init.name,
        "optim": conf.optim.name,
        "sched": conf.sched.name,
        "optim.lr": conf.optim.lr,
        "optim.weight_decay": conf.optim.weight_decay,
        "loss": conf.loss,
        "reg.l1": conf.reg.l1,
        "reg.l2": conf.reg.l2,
        "model.dropout": conf.model.dropout,
        "train.batch_size": conf.train.batch_size or 0,
        "seed": conf.seed,
    }
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        values.setdefault(key, _number(value))
    return values


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def execute(conf: config.Config, run_dir: Path, overrides: list[str] = ()) -> dict:
    """Train the run `conf` describes, recording into `run_dir`; returns its summary.

    With `conf.resume`, `run_dir` is that run's dir: its checkpoint is loaded and its record
    goes on from the checkpoint's epoch.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides)
    tracker = None
    status, error = "failed", None
    try:
        seed_everything(conf.seed)
        device = device_of(conf.device)
        dataset = data.load(conf.data, conf.seed, device)
        loss_fn = optim.build_loss(conf.loss, dataset.task, dataset.n_outputs)
        model = build_model(conf, dataset).to(device)
        check_batches(model, len(dataset.x_train), len(dataset.x_valid), conf.train.batch_size)
        optimizer = optim.build_optimizer(model, conf.optim)
        scheduler = optim.build_scheduler(optimizer, conf.sched, conf.train.epochs)
        penalty = optim.build_penalty(model, conf.reg)
        generator = torch.Generator().manual_seed(conf.seed)
        checkpoint = run_dir / "checkpoint.pt"
        start_epoch = 0
        if conf.resume:
            start_epoch = resume(checkpoint, conf, model, optimizer, scheduler, generator)
        else:
            table = models.describe(model, dataset.in_shape, device)
            (run_dir / "model.txt").write_text(table + "\n")
        metrics = ["train_loss", "valid_loss"]
        if dataset.task == "classification":
            metrics += ["train_acc", "valid_acc"]
        tracker = Tracker(
            run_dir,
            epochs=conf.train.epochs,
            hparams=hparams(conf, overrides),
            metrics=metrics,
            hist_every=conf.log.hist_every,
            figure=plots.for_dataset(dataset) if conf.log.figure_every else None,
            figure_every=conf.log.figure_every,
            start_epoch=start_epoch,
        )
        with stop_on_signals() as received:
            result = train.fit(
                model,
                optimizer,
                loss_fn,
                dataset,
                epochs=conf.train.epochs,
                batch_size=conf.train.batch_size,
                scheduler=scheduler,
                tracker=tracker,
                generator=generator,
                start_epoch=start_epoch,
                checkpoint=checkpoint,
                checkpoint_every=conf.train.checkpoint_every,
                stop=lambda: bool(received),
                penalty=penalty,
                clip_grad_norm=conf.train.clip_grad_norm,
                weight_stats_every=conf.log.weight_stats_every,
            )
        status, error = result.status, result.error
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except Exception as exc:
        error = one_line(exc)
        if tracker is None and not conf.resume:  # (a resumable run keeps its own summary)
            write_json(run_dir / "summary.json", failure(exc, overrides))
        raise
    finally:
        if tracker is not None:
            summary = tracker.close(
                status,
                model,
                params=models.count_params(model),
                seed=conf.seed,
                device=str(device),
                threads=torch.get_num_threads(),
                overrides=overrides,
                **({"error": error} if error else {}),
            )
    if status == "interrupted":
        log.warning(
            "interrupted after epoch %d; resume with: regexp train resume=%s",
            summary["epochs"],
            run_dir,
        )
        raise Interrupted(received[0], run_dir, summary["epochs"])
    if status == "diverged":
        log.warning("diverged: %s; stopped there, everything up to it is in %s", error, run_dir)
    tracker.print_summary(summary)
    return summary


def resume(checkpoint: Path, conf: config.Config, model, optimizer, scheduler, generator) -> int:
    """Load `checkpoint` into the run's objects; returns the epoch it holds."""
    try:
        epoch = train.load_checkpoint(checkpoint, model, optimizer, scheduler, generator)
    except (pickle.UnpicklingError, RuntimeError, KeyError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{checkpoint}: refused, not a checkpoint of this run (a safe load of tensors only "
            f"failed: {reason[:200]})"
        ) from exc
    rundir.check_more_epochs(conf.train.epochs, epoch, checkpoint.parent)
    return epoch
