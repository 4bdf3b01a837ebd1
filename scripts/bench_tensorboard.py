"""Benchmark: a sweep of many runs as TensorBoard serves it, as a user feels it.

Trains a replicated sweep (settings of weight decay x seeds, the default logging on, as one
population each through the stacked launcher), then starts `tensorboard --logdir SWEEP` and
times, from its start, until it lists every run (the sidebar's data), and then the loads of
each page's data: Scalars' tags, HParams' table, Custom Scalars' layout.

    python scripts/bench_tensorboard.py               # 200 runs: 20 settings x 10 seeds
    python scripts/bench_tensorboard.py --runs 1000   # 100 settings x 10 seeds
    python scripts/bench_tensorboard.py --repeats 5   # TensorBoard started 5 times (default 3)

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import tensorboard_pages
from tensorboard_pages import serve

SEEDS = 10
EPOCHS = 100


WAIT = 600  # seconds TensorBoard may take


def sweep_args(runs: int, sweep: Path) -> list[str]:
    settings = max(1, runs // SEEDS)
    decays = ",".join(f"{i * 1e-4:g}" for i in range(settings))
    return [
        "regexp", "train", "-m", f"optim.weight_decay={decays}", f"seed=range({SEEDS})",
        f"train.epochs={EPOCHS}", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip


def fetch(url: str, body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"}
    return urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=600).read()


def pages(base: str) -> dict[str, float]:
    """Seconds each page's first data load takes, as its page asks for it."""
    loads = {
        "scalars tags": lambda: fetch(f"{base}/data/plugin/scalars/tags"),
        "hparams columns": lambda: fetch(
            f"{base}/data/plugin/hparams/experiment", {"experimentName": ""}
        ),
        "hparams table": lambda: fetch(
            f"{base}/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": [],
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 1_000_000,
            },
        ),  # fmt: skip
        "custom scalars layout": lambda: fetch(f"{base}/data/plugin/custom_scalars/layout"),
    }
    times = {}
    for name, load in loads.items():
        started = time.perf_counter()
        load()
        times[name] = time.perf_counter() - started
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs in the sweep (x10 seeds)")
    parser.add_argument("--repeats", type=int, default=3, help="TensorBoard starts to time")
    args = parser.parse_args()
    tensorboard_pages.WAIT = WAIT
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "sweep"
        command = sweep_args(args.runs, sweep)
        print(" ".join(command[:-1]))
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        trained = time.perf_counter() - started
        runs = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
        settings = list((sweep / "settings").iterdir())
        events = [f for f in sweep.rglob("events.out.tfevents.*")]
        size = sum(f.stat().st_size for f in events)
        print(f"{len(runs)} runs and {len(settings)} setting runs of {EPOCHS} epochs trained "
              f"in {trained:.1f} s; events {size / 1e6:.1f} MB "
              f"({size / len(events) / 1e3:.0f} kB a run)")  # fmt: skip
        listed, loads = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            with serve(sweep, len(runs) + len(settings), read=False) as base:
                listed.append(time.perf_counter() - started)
                loads.append(pages(base))
        spread = [min(listed), statistics.median(listed), max(listed)]
        low, median, high = (f"{t:.1f}" for t in spread)
        print(f"TensorBoard lists every run {low} / {median} / {high} s after its start "
              "(min / median / max)")  # fmt: skip
        for name in loads[0]:
            times = [load[name] for load in loads]
            print(f"  then {name}: {statistics.median(times):.2f} s (median of {len(times)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
