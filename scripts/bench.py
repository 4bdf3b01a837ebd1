"""Benchmark: regexp's training loop against a hand-written PyTorch loop doing the same work.

Both train the same model on the same data with the same optimizer and seed: one step per
batch, then the valid loss of each epoch, read as a float. regexp runs with its default
logging on (TensorBoard scalars and histograms, metrics.csv, summary.json, console lines).
It prints epochs/s for both and their ratio (regexp / hand-written; the target is >= 0.95).

    python scripts/bench.py            # both loop cases, best of 5 repeats each
    python scripts/bench.py --repeats 3 --case digits
    python scripts/bench.py --case sweep   # an 8-job sweep: joblib launcher vs sequential
    python scripts/bench.py --case stacked # sweeps as populations vs the basic launcher

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from regexp import config, data, optim, run

CASES = {
    "lesson24": ["train.epochs=2000"],  # the default run: 10 points, full batch
    "digits": ["data=digits", "train.batch_size=64", "train.epochs=30", "model.hidden=[256,256]"],
}


def compose(overrides: list[str]) -> config.Config:
    return config.validate(config.compose(overrides))


def setup(conf: config.Config):
    run.seed_everything(conf.seed)
    dataset = data.load(conf.data, conf.seed)
    model = run.build_model(conf, dataset)
    optimizer = optim.build_optimizer(model, conf.optim)
    loss_fn = optim.build_loss(conf.loss, dataset.task, dataset.n_outputs)
    return dataset, model, optimizer, loss_fn


def hand_written(conf: config.Config) -> float:
    """The loop a user would write from the PyTorch tutorials; returns seconds."""
    d, model, optimizer, loss_fn = setup(conf)
    g = torch.Generator().manual_seed(conf.seed)
    n, bs = len(d.x_train), conf.train.batch_size or len(d.x_train)
    start = time.perf_counter()
    for _ in range(conf.train.epochs):
        model.train()
        if bs < n:
            perm = torch.randperm(n, generator=g)
            batches = [
                (d.x_train[perm[i : i + bs]], d.y_train[perm[i : i + bs]]) for i in range(0, n, bs)
            ]
        else:
            batches = [(d.x_train, d.y_train)]
        for x, y in batches:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            valid_loss = loss_fn(model(d.x_valid), d.y_valid)
        float(loss.detach()), float(valid_loss)
    return time.perf_counter() - start


def regexp_loop(conf: config.Config, run_dir: Path) -> float:
    """A real regexp run into `run_dir`; returns the seconds its loop took with its recording
    (the summary's `seconds`: from the tracker's start to its close, setup not included)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return run.execute(conf, run_dir)["seconds"]


SWEEP = ["seed=0,1,2,3,4,5,6,7"]  # 8 jobs of the default experiment


def sweep_seconds(launcher: list[str], repeats: int, sweep: list[str] = SWEEP) -> float:
    """Wall time of `regexp train -m` over `sweep`, as a user runs it (best of `repeats`)."""
    return min(command_seconds(launcher, sweep) for _ in range(repeats))


def command_seconds(launcher: list[str], sweep: list[str]) -> float:
    """The wall seconds of one `regexp train -m` over `sweep`."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "regexp", "train", "-m", *sweep, *launcher]
            + [f"hydra.sweep.dir={tmp}/sweep"],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        return time.perf_counter() - start


# The stacked launcher's cases: (name, the sweep). Each runs with the basic launcher too.
STACKED = {
    "lesson24, 8 jobs": SWEEP,
    "lesson24, 64 jobs": ["seed=range(64)"],
    "digits MLP, 8 jobs": [
        "data=digits",
        "train.batch_size=64",
        "train.epochs=30",
        "model.hidden=[256,256]",
        "seed=range(8)",
    ],
}


def stacked(repeats: int) -> None:
    table = Table(title=f"sweeps, wall seconds of the whole command, best of {repeats}")
    for column in ("sweep", "basic", "stacked", "speed-up"):
        table.add_column(column, justify="right")
    for name, sweep in STACKED.items():
        basic, ours = [], []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            basic.append(command_seconds(["hydra/launcher=basic"], sweep))
            ours.append(command_seconds(["hydra/launcher=stacked"], sweep))
        table.add_row(
            name, f"{min(basic):.1f}", f"{min(ours):.1f}", f"{min(basic) / min(ours):.2f}x"
        )
    Console().print(table)
    import resource  # the largest child so far: the 64-member population's process

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory of one regexp process (the 64-job population's): {peak:.0f} MB")
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {platform.machine()}")
    for name, sweep in STACKED.items():
        print(f"{name}: regexp train -m {' '.join(sweep)} hydra/launcher=stacked|basic")


def sweep(repeats: int) -> None:
    sequential = sweep_seconds([], repeats)
    parallel = sweep_seconds(["hydra/launcher=joblib"], repeats)
    table = Table(title=f"8-job sweep of the default experiment, wall seconds, best of {repeats}")
    for column in ("launcher", "seconds", "ratio"):
        table.add_column(column, justify="right")
    table.add_row("basic (sequential)", f"{sequential:.1f}", "1.000")
    table.add_row(
        f"joblib ({os.cpu_count()} jobs)", f"{parallel:.1f}", f"{parallel / sequential:.3f}"
    )
    Console().print(table)
    print(f"regexp train -m {' '.join(SWEEP)} [hydra/launcher=joblib]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    parser.add_argument(
        "--case",
        choices=[*CASES, "sweep", "stacked", "all"],
        default="all",
        help="all: the two loop cases (the sweep takes a minute more)",
    )
    args = parser.parse_args()
    logging.getLogger("regexp").setLevel(logging.WARNING)
    if args.case == "sweep":
        sweep(min(args.repeats, 3))
        return
    if args.case == "stacked":
        stacked(min(args.repeats, 3))
        return

    table = Table(title=f"training loop, epochs/s, best of {args.repeats}")
    for column in ("case", "epochs", "hand-written", "regexp", "ratio"):
        table.add_column(column, justify="right")
    for case, overrides in CASES.items():
        if args.case not in ("all", case):
            continue
        conf = compose(overrides)
        hand, ours = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            hand.append(hand_written(conf))
            with tempfile.TemporaryDirectory() as tmp:
                ours.append(regexp_loop(conf, Path(tmp)))
        e = conf.train.epochs
        table.add_row(
            case,
            str(e),
            f"{e / min(hand):,.0f}",
            f"{e / min(ours):,.0f}",
            f"{min(hand) / min(ours):.3f}",
        )
    Console().print(table)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    for case, overrides in CASES.items():
        print(f"{case}: regexp train {' '.join(overrides)}")


if __name__ == "__main__":
    main()
