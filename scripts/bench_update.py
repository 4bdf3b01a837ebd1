"""Benchmark: one optimizer step of a population (regexp's stacked update over flat (K, P)
buffers) against torch.optim over the same parameters as the model's separate tensors.

The net is lesson 24's MLP, 1-200-200-200-1: P = 81,001 parameters a member, in 8 tensors.
torch.optim runs with foreach=True, either one optimizer over all K x 8 tensors (one lr for
all: the fastest torch can do) or K optimizers, one per member (what K runs do). It prints
the median time of a step (and the spread of the repeats' medians) and the ratios.

    python scripts/bench_update.py                  # SGD with momentum, K = 1 and 16
    python scripts/bench_update.py --optim adam --k 1 4 16 --threads 2

A benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from regexp.components import optim
from regexp.engine import updates

SHAPES = [(200, 1), (200,), (200, 200), (200,), (200, 200), (200,), (1, 200), (1,)]
P = sum(math.prod(s) for s in SHAPES)
CONFIGS = {
    "sgd": lambda: optim.SGD(lr=0.01, momentum=0.9),
    "adam": lambda: optim.Adam(lr=1e-3),
    "rmsprop": lambda: optim.RMSprop(lr=1e-3),
    "adagrad": lambda: optim.Adagrad(lr=1e-2),
}


def timed(steps: dict, n: int, repeats: int) -> dict[str, list[float]]:
    """The median seconds of a step in each of `repeats` runs of `n` steps, for each of
    `steps`, taken in turn (a busy machine slows them alike)."""
    for step in steps.values():
        for _ in range(20):
            step()
    medians = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times = []
            for _ in range(n):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            medians[name].append(statistics.median(times))
    return medians


def stacked(cfg, k: int):
    params, grads = torch.randn(k, P), torch.randn(k, P) * 1e-3
    update = updates.build_update([cfg] * k, params)
    return lambda: update.step(params, grads)


def separate(cfg, k: int, per_member: bool):
    members = []
    for _ in range(k):
        tensors = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
        for t in tensors:
            t.grad = torch.randn(t.shape) * 1e-3
        members.append(tensors)
    cls = getattr(torch.optim, cfg.torch_class)
    if per_member:
        optimizers = [cls(m, foreach=True, **cfg.knobs()) for m in members]
    else:
        optimizers = [cls([t for m in members for t in m], foreach=True, **cfg.knobs())]

    def step():
        for o in optimizers:
            o.step()

    return step


def show(name: str, medians: list[float], base: list[float] | None = None) -> None:
    mid, lo, hi = (statistics.median(medians), min(medians), max(medians))
    ratio = ""
    if base is not None:  # the ratio of each repeat's medians, taken side by side
        ratios = sorted(t / b for t, b in zip(medians, base, strict=True))
        r = statistics.median(ratios)
        ratio = f"  torch / stacked {r:5.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"
    print(f"  {name:34s} {mid * 1e6:8.1f} us  ({lo * 1e6:.1f}-{hi * 1e6:.1f}){ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optim", choices=sorted(CONFIGS), default="sgd")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.optim]()
    print(f"{args.optim} {cfg.knobs()}, P = {P:,}, {args.threads} torch thread(s)")
    for k in args.k:
        print(f"K = {k}")
        steps = {"stacked update": stacked(cfg, k)}
        steps["torch.optim, one over all tensors"] = separate(cfg, k, False)
        if k > 1:
            steps["torch.optim, one per member"] = separate(cfg, k, True)
        medians = timed(steps, args.steps, args.repeats)
        ours = medians.pop("stacked update")
        show("stacked update", ours)
        for name, theirs in medians.items():
            show(name, theirs, ours)


if __name__ == "__main__":
    main()
