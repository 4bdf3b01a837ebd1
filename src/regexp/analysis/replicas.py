"""Replicas: the runs of a sweep that differ only in `seed` and/or `data.draw` read as one
group, a setting measured several times, and the statistics the report gives of a group:
mean, standard deviation, a 95% interval (Student's t) and n.

Pure Python on what report.py loaded; nothing here reads files or imports the training code.
`fmt` writes a number or a Stat as every table of the report shows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from regexp.config import REPLICA_KEYS

# Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom; beyond the table,
# interpolated in 1/df toward the normal's 1.95996.
_T95 = {
    1: 12.7062, 2: 4.30265, 3: 3.18245, 4: 2.77645, 5: 2.57058, 6: 2.44691, 7: 2.36462,
    8: 2.30600, 9: 2.26216, 10: 2.22814, 11: 2.20099, 12: 2.17881, 13: 2.16037, 14: 2.14479,
    15: 2.13145, 16: 2.11991, 17: 2.10982, 18: 2.10092, 19: 2.09302, 20: 2.08596,
    25: 2.05954, 30: 2.04227, 40: 2.02108, 60: 2.00030, 120: 1.97993,
}  # fmt: skip
_Z95 = 1.959964


def t95(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (to about 1e-4)."""
    if df < 1:
        return math.nan
    if df in _T95:
        return _T95[df]
    known = sorted(_T95)
    below = max(d for d in known if d < df)
    above = min((d for d in known if d > df), default=math.inf)
    t_above = _T95[above] if above != math.inf else _Z95
    # t is close to linear in 1/df between the tabulated points
    w = (1 / below - 1 / df) / (1 / below - (0 if above == math.inf else 1 / above))
    return _T95[below] + w * (t_above - _T95[below])


@dataclass(frozen=True)
class Stat:
    """A quantity over a group's runs: its mean, sample standard deviation (n - 1), the half
    width of its 95% interval (t-based; NaN for one run) and the number of runs with it."""

    mean: float
    std: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half


def stat(values: Iterable[float | None]) -> Stat | None:
    """The Stat of the finite values among `values`, None where there are none."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    n = len(xs)
    mean, std = mean_std(xs)
    if n == 1:
        return Stat(mean, 0.0, math.nan, 1)
    return Stat(mean, std, t95(n - 1) * std / math.sqrt(n), n)


def mean_std(xs: list[float]) -> tuple[float, float]:
    """The mean and the sample std (n - 1; 0 for one value) of the finite `xs`, computed on
    them scaled by a power of two (exact) so that values near the float limit (a diverged
    loss, a damaged record) cannot overflow: the std is then inf at most."""
    biggest = max(abs(x) for x in xs)
    scale = math.ldexp(1.0, math.frexp(biggest)[1] - 1) if biggest else 1.0
    ys = [x / scale for x in xs]
    mean = math.fsum(ys) / len(ys)
    if len(ys) == 1:
        return mean * scale, 0.0
    return mean * scale, math.sqrt(math.fsum((y - mean) ** 2 for y in ys) / (len(ys) - 1)) * scale


@dataclass
class Group:
    """The runs of one setting: `setting` the values of the swept keys that are not replica
    keys, `runs` its replicas."""

    setting: dict[str, object]
    runs: list = field(default_factory=list)

    def stat(self, get: Callable) -> Stat | None:
        return stat(get(r) for r in self.runs)

    def replica(self, run, keys: list[str]) -> tuple[str, ...]:
        """What makes `run` one replica of the group: its values of the replica keys."""
        return tuple(str(run.overrides.get(k)) for k in keys)


@dataclass
class Replicas:
    """A sweep read as groups of replicas."""

    keys: list[str]  # the swept keys that make settings
    replica_keys: list[str]  # the swept keys that make replicas (seed, data.draw)
    groups: list[Group]

    @property
    def noun(self) -> str:
        """What a replica is, in words: seeds, draws, or runs (seed x draw)."""
        if self.replica_keys == ["seed"]:
            return "seeds"
        if self.replica_keys == ["data.draw"]:
            return "draws"
        return "runs"


def replicas(runs: list, keys: list[str]) -> Replicas | None:
    """The runs as groups that differ only in `seed` and/or `data.draw`, or None where no two
    runs do (a sweep without replicas, read run by run). `keys` are the swept keys."""
    replica_keys = [k for k in keys if k in REPLICA_KEYS]
    if not replica_keys:
        return None
    setting_keys = [k for k in keys if k not in REPLICA_KEYS]
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        values = {k: run.overrides.get(k) for k in setting_keys}
        key = tuple(str(v) for v in values.values())
        groups.setdefault(key, Group(values)).runs.append(run)
    if all(len(g.runs) < 2 for g in groups.values()):
        return None
    return Replicas(setting_keys, replica_keys, list(groups.values()))


def paired(base: Group, other: Group, keys: list[str], get: Callable) -> list[float]:
    """other − base of `get`, replica by replica (the runs of the same seed and draw)."""
    mine = {base.replica(r, keys): get(r) for r in base.runs}
    diffs = []
    for run in other.runs:
        a, b = mine.get(other.replica(run, keys)), get(run)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            diffs.append(b - a)
    return diffs


def fmt(value, interval: bool = False) -> str:
    """A cell: a number in 4 digits; a Stat as mean ± std (and its 95% interval)."""
    if value is None:
        return "-"
    if isinstance(value, Stat):
        text = f"{fmt(value.mean)} ± {value.std:.2g}"
        if interval and math.isfinite(value.half):
            text += f" [{fmt(value.low)}, {fmt(value.high)}]"
        return text
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.4g}"
    return str(value)
