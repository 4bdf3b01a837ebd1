"""Benchmark: regexp against a hand-written PyTorch loop doing the same work, as a user sees it.

Both train the same model on the same data with the same optimizer, seed and torch threads:
one step per batch, then the valid loss of each epoch, read as a float. regexp runs with its
default logging on (TensorBoard scalars, histograms and figures, metrics.csv, summary.json,
console lines).

    python scripts/bench.py                  # the loop cases in-process, best of 5 repeats
    python scripts/bench.py --case marginal  # the cost of an epoch by wall clock (see below)
    python scripts/bench.py --case startup   # regexp train train.epochs=1 beyond `import torch`
    python scripts/bench.py --case threads   # 1 vs 2 torch threads, quiet and with a busy core
    python scripts/bench.py --case sweep     # an 8-job sweep: joblib launcher vs sequential
    python scripts/bench.py --case stacked   # sweeps as populations vs the basic launcher

`marginal` times whole commands: (wall(train.epochs=4000) - wall(train.epochs=1000)) / 3000,
for `regexp train` and for a hand-written loop run as its own process, so that everything a
run does per epoch counts (figures drawn, files closed), and nothing it does once. The
ratio is hand-written / regexp (1.0: as fast; the target is >= 0.95).

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from regexp import config
from regexp.components import data, optim
from regexp.run import population

CASES = {
    "lesson24": ["train.epochs=2000"],  # the default run: 10 points, full batch
    "digits": ["data=digits", "train.batch_size=64", "train.epochs=30", "model.hidden=[256,256]"],
}


def compose(overrides: list[str]) -> config.Config:
    return config.validate(config.compose(overrides))


def setup(conf: config.Config):
    population.seed_everything(conf.seed)
    dataset = data.load(conf.data, conf.seed)
    model = population.build_model(conf, dataset)
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
        return population.execute(conf, run_dir)["seconds"]


SWEEP = ["seed=0,1,2,3,4,5,6,7"]  # 8 jobs of the default experiment


def sweep_seconds(launcher: list[str], repeats: int, sweep: list[str] = SWEEP) -> float:
    """Wall time of `regexp train -m` over `sweep`, as a user runs it (best of `repeats`)."""
    return min(command_seconds(launcher, sweep) for _ in range(repeats))


def command_seconds(launcher: list[str], sweep: list[str], peaks: dict | None = None) -> float:
    """The wall seconds of one `regexp train -m` over `sweep`; with `peaks`, each of its
    processes' peak memory in MB (as Linux counts it, VmHWM), by command line."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "regexp", "train", "-m", *sweep, *launcher]
            + [f"hydra.sweep.dir={tmp}/sweep"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=tmp,
        )
        watch = None
        if peaks is not None:  # (a worker forked from the fork server is no child of ours)
            watch = threading.Thread(target=sample_peaks, args=(process, peaks), daemon=True)
            watch.start()
        _, err = process.communicate()
        seconds = time.perf_counter() - start
        if watch is not None:
            watch.join()
        if process.returncode:
            raise SystemExit(f"regexp train -m {' '.join(sweep)} failed:\n{err.decode()}")
        return seconds


def sample_peaks(process: subprocess.Popen, peaks: dict) -> None:
    """Poll the peak memory of `process` and its descendants, 5 times a second, until it ends."""
    while process.poll() is None:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        todo = [process.pid]
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            with contextlib.suppress(OSError, ValueError, IndexError):
                status = Path(f"/proc/{pid}/status").read_text()
                mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
                role = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
                peaks[pid] = max(peaks.get(pid, (0.0, role))[0], mb), role
        time.sleep(0.2)


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
    # issue 15's dropout arm: 3 p x 20 training sets of 2000 epochs
    "bias-variance dropout, 60 jobs": ["+experiment=bias_variance_dropout"],
}


def stacked(repeats: int, only: str = "") -> None:
    """Each sweep of STACKED (those whose name holds `only`) with the basic and the stacked
    launcher, pair by pair: the best of `repeats`, and each pair's speed-up (min to max)."""
    table = Table(title=f"sweeps, wall seconds of the whole command, best of {repeats}")
    for column in ("sweep", "basic", "stacked", "speed-up (best)", "pairs: min to max"):
        table.add_column(column, justify="right")
    peaks: dict[str, dict] = {}
    for name, sweep in STACKED.items():
        if only not in name:
            continue
        basic, ours = [], []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            basic.append(command_seconds(["hydra/launcher=basic"], sweep))
            ours.append(
                command_seconds(["hydra/launcher=stacked"], sweep, peaks.setdefault(name, {}))
            )
        pairs = [b / o for b, o in zip(basic, ours, strict=True)]
        table.add_row(
            name,
            f"{min(basic):.1f}",
            f"{min(ours):.1f}",
            f"{min(basic) / min(ours):.2f}x",
            f"{min(pairs):.2f}x to {max(pairs):.2f}x",
        )
    Console().print(table)
    for name, seen in peaks.items():  # the largest process: the fork server or a worker
        mb, role = max(seen.values(), default=(0.0, ""))
        print(f"{name}: peak memory of one process {mb:.0f} MB ({role[:60]}...)")
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


def wall(command: list[str], cwd: str | None = None, env: dict | None = None) -> float:
    """Seconds from the start of `command` to its exit, as a user waits for it."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd, env=env)
    return time.perf_counter() - start


def spread(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    """The median with the min and max, for figures from a noisy machine."""
    v = [x * scale for x in values]
    return f"{statistics.median(v):.3f} {unit} ({min(v):.3f} to {max(v):.3f})"


REGEXP = [sys.executable, "-m", "regexp"]
IMPORT_TORCH = [sys.executable, "-c", "import torch"]
# What creating a first torch.optim optimizer costs: it imports torch._dynamo and sympy. A run
# steps its own stacked update and never creates one; this says what that saves.
FIRST_OPTIMIZER = [
    sys.executable,
    "-c",
    "import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)",
]


def startup(repeats: int) -> None:
    """`regexp train train.epochs=1` beyond `python -c "import torch"`, taken pair by pair
    (median of `repeats`); `regexp train --help`; and what a first torch.optim optimizer
    would add."""
    beyond, helps, optimizer = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):  # interleaved, so drift hits all alike
            torch_only = wall(IMPORT_TORCH)
            one = wall([*REGEXP, "train", "train.epochs=1", f"hydra.run.dir={tmp}/{i}"], cwd=tmp)
            beyond.append(one - torch_only)
            optimizer.append(wall(FIRST_OPTIMIZER) - wall(IMPORT_TORCH))
            helps.append(wall([*REGEXP, "train", "--help"], cwd=tmp))
    print(f"regexp train train.epochs=1, beyond import torch: {spread(beyond)}")
    print(f"regexp train --help: {spread(helps)}")
    print(f"(a first torch.optim optimizer, which a run does not create: {spread(optimizer)})")
    print(f"median of {repeats}; torch {torch.__version__}, {os.cpu_count()} cores")


MARGINAL = {  # case: overrides; the epochs are added
    "lesson24": [],
}
EPOCHS = (1000, 4000)


def hand_written_process(epochs: int, overrides: list[str], threads: int) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--hand-written",
        str(epochs),
        "--threads",
        str(threads),
        "--",
        *overrides,
    ]


def marginal(repeats: int, threads: int) -> None:
    """The wall-clock cost of an epoch, regexp's against a hand-written loop's."""
    table = Table(title=f"cost of an epoch, by wall clock, median of {repeats} (min to max)")
    for column in ("case", "hand-written, ms", "regexp, ms", "ratio"):
        table.add_column(column, justify="right")
    low, high = EPOCHS
    for case, overrides in MARGINAL.items():
        hand, ours, ratios = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(repeats):
                times = {}
                for epochs in EPOCHS:  # interleaved
                    run = [f"train.epochs={epochs}", f"threads={threads}", *overrides]
                    times["hand", epochs] = wall(hand_written_process(epochs, overrides, threads))
                    times["ours", epochs] = wall(
                        [*REGEXP, "train", *run, f"hydra.run.dir={tmp}/{i}-{epochs}"], cwd=tmp
                    )
                h = (times["hand", high] - times["hand", low]) / (high - low)
                o = (times["ours", high] - times["ours", low]) / (high - low)
                hand.append(h)
                ours.append(o)
                ratios.append(h / o)
        table.add_row(case, spread(hand, "", 1000), spread(ours, "", 1000), spread(ratios, ""))
    Console().print(table)
    print(f"(wall(train.epochs={high}) - wall(train.epochs={low})) / {high - low}, each a process")
    print(f"torch {torch.__version__}, {threads} thread(s), {os.cpu_count()} cores")


THREAD_CASES = {
    "lesson24": ["train.epochs=1000"],
    "digits CNN": ["data=digits", "model=cnn", "train.batch_size=64", "train.epochs=3"],
}
BUSY = [sys.executable, "-c", "while True: pass"]  # one core's worth of other work


def threads_case(repeats: int) -> None:
    """The loop's seconds (summary.json) with 1 and 2 torch threads, on the machine as it is
    and with another process keeping one core busy."""
    import json

    table = Table(title=f"seconds of training, median of {repeats} (min to max)")
    for column in ("case", "load", "1 thread", "2 threads"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for case, overrides in THREAD_CASES.items():
            for load in ("none", "a busy core"):
                busy = subprocess.Popen(BUSY) if load != "none" else None
                try:
                    seconds = {1: [], 2: []}
                    for i in range(repeats):
                        for threads in (1, 2):
                            run_dir = f"{tmp}/{case}-{load}-{i}-{threads}"
                            command = [*REGEXP, "train", *overrides, f"threads={threads}"]
                            wall([*command, f"hydra.run.dir={run_dir}"], cwd=tmp)
                            summary = json.loads(Path(run_dir, "summary.json").read_text())
                            seconds[threads].append(summary["seconds"])
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                table.add_row(case, load, spread(seconds[1]), spread(seconds[2]))
    Console().print(table)
    for case, overrides in THREAD_CASES.items():
        print(f"{case}: regexp train {' '.join(overrides)} threads=1|2")
    print(f"torch {torch.__version__}, {os.cpu_count()} cores")


def hand_written_main(epochs: int, threads: int, overrides: list[str]) -> None:
    """The hand-written loop as a process of its own, for `marginal`."""
    torch.set_num_threads(threads)
    conf = compose([*overrides, f"train.epochs={epochs}"])
    hand_written(conf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="best (or median) of this many")
    parser.add_argument(
        "--case",
        choices=[*CASES, "sweep", "stacked", "marginal", "startup", "threads", "all"],
        default="all",
        help="all: the two loop cases (the sweep takes a minute more)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (loop cases)")
    parser.add_argument("--only", default="", help="stacked: the sweeps whose name holds this")
    parser.add_argument("--hand-written", type=int, metavar="EPOCHS", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("regexp").setLevel(logging.WARNING)
    if args.hand_written is not None:
        hand_written_main(args.hand_written, args.threads, args.overrides)
        return
    if args.case == "sweep":
        sweep(min(args.repeats, 3))
        return
    if args.case == "stacked":
        stacked(min(args.repeats, 3), args.only)
        return
    if args.case == "startup":
        startup(args.repeats)
        return
    if args.case == "marginal":
        marginal(args.repeats, args.threads)
        return
    if args.case == "threads":
        threads_case(args.repeats)
        return

    torch.set_num_threads(args.threads)
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
