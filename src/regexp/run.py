"""One training job: build what a validated config names, train it, record it.

`train_job` is the Hydra task function behind `regexp train`; `execute` does the work from a
config and a run dir, so it can be called in-process too.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from regexp import config, data, init, models, optim, train
from regexp.track import Tracker, write_json

log = logging.getLogger("regexp")


# The user errors of the jobs this process ran: the CLI reports them once Hydra is done, so
# that they read as one clear line rather than as a failed job's traceback.
FAILED: list[config.UserError] = []


def train_job(cfg: DictConfig) -> float:
    """Train one run into Hydra's output dir; returns its best valid loss, which sweepers
    minimize."""
    hydra = HydraConfig.get()
    run_dir, overrides = Path(hydra.runtime.output_dir), list(hydra.overrides.task)
    try:
        conf = config.validate(cfg)
        summary = execute(conf, run_dir, overrides)
    except config.UserError as exc:
        write_json(
            run_dir / "summary.json",
            {"status": "failed", "error": str(exc), "overrides": overrides},
        )
        FAILED.append(exc)
        return float("nan")
    return summary["best"].get("valid_loss", float("nan"))


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise config.ConfigError("device", name, "auto or cpu: this machine has no CUDA device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise config.ConfigError("device", name, "auto or cpu: this machine has no MPS device")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(conf: config.Config, dataset: data.Dataset) -> torch.nn.Module:
    outputs = optim.model_outputs(conf.loss, dataset.task, dataset.n_outputs)  # bce: one logit
    model = models.build(conf.model, conf.norm, dataset.in_shape, outputs)
    return init.apply(model, conf.init)


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
    """Train the run `conf` describes, recording into `run_dir`; returns its summary."""
    seed_everything(conf.seed)
    device = device_of(conf.device)
    dataset = data.load(conf.data, conf.seed, device)
    loss_fn = optim.build_loss(conf.loss, dataset.task, dataset.n_outputs)
    model = build_model(conf, dataset).to(device)
    optimizer = optim.build_optimizer(model, conf.optim)
    scheduler = optim.build_scheduler(optimizer, conf.sched, conf.train.epochs)
    penalty = optim.build_penalty(model, conf.reg)

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "model.txt").write_text(models.describe(model, dataset.in_shape, device) + "\n")
    metrics = ["train_loss", "valid_loss"]
    if dataset.task == "classification":
        metrics += ["train_acc", "valid_acc"]
    tracker = Tracker(
        run_dir,
        epochs=conf.train.epochs,
        hparams=hparams(conf, list(overrides)),
        metrics=metrics,
        hist_every=conf.log.hist_every,
    )
    status, error = "failed", None
    try:
        result = train.fit(
            model,
            optimizer,
            loss_fn,
            dataset,
            epochs=conf.train.epochs,
            batch_size=conf.train.batch_size,
            scheduler=scheduler,
            tracker=tracker,
            generator=torch.Generator().manual_seed(conf.seed),
            penalty=penalty,
            clip_grad_norm=conf.train.clip_grad_norm,
            weight_stats_every=conf.log.weight_stats_every,
        )
        status, error = result.status, result.error
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary = tracker.close(
            status,
            model,
            params=models.count_params(model),
            seed=conf.seed,
            device=str(device),
            overrides=list(overrides),
            **({"error": error} if error else {}),
        )
    if status == "diverged":
        log.warning("diverged: %s; stopped there, everything up to it is in %s", error, run_dir)
    tracker.print_summary(summary)
    return summary
