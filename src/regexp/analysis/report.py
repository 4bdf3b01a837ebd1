"""`regexp report DIR...`: a table and figures from run dirs, finished, failed or running.

It reads only what runs leave on disk (summary.json, metrics.csv, .hydra/overrides.yaml,
predictions.npz) and never imports the training code, so it starts fast and works on a sweep
still in progress. Runs that differ only in `seed` and/or `data.draw` are replicas of one
setting (replicas.py): the table then has a row per setting, each number its mean ± std over
the replicas with a 95% interval, and the verdict says in how many of them an effect held.

Why it is long: it holds both readings of a sweep, run by run and setting by setting over
replicas, side by side: each one's table and verdict, which share the formatting, the files
and the console view below. The statistics themselves live in replicas.py.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from regexp.analysis import settings
from regexp.analysis.replicas import Group, Replicas, Stat, fmt, paired, replicas, stat
from regexp.console import console as default_console
from regexp.errors import UserError
from regexp.run import readers, rundir

log = logging.getLogger("regexp")


@dataclass
class Run:
    path: Path
    status: str  # completed, diverged, interrupted, failed, running (no summary.json yet),
    # or unreadable (a damaged file: left out of the report's numbers)
    overrides: dict[str, object]
    summary: dict = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)  # metrics.csv, by column
    damaged: str | None = None  # which of its files is damaged and why (readers.Damaged)

    def final(self, key: str) -> float | None:
        value = self.summary.get("final", {}).get(key)
        if value is None and self.curves.get(key):
            value = self.curves[key][-1]
        return None if value is None or value != value else value  # (NaN: not logged then)

    def best(self, key: str) -> float | None:
        return self.summary.get("best", {}).get(key)

    @property
    def gap(self) -> float | None:
        """The generalization gap: final valid loss minus final train loss."""
        train, valid = self.final("train_loss"), self.final("valid_loss")
        return None if train is None or valid is None else valid - train


def is_run(path: Path) -> bool:
    return (path / ".hydra").is_dir() or rundir.summary_file(path).is_file()


def find_runs(dirs: list[Path]) -> tuple[list[Path], int]:
    """The run dirs given, and those under each sweep dir given, each once however it was
    reached (the same sweep given twice, a run inside a sweep given, a symlink); with how many
    were found again and dropped."""
    found: dict[Path, Path] = {}  # resolved -> as found
    reached = 0
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"{d}: no such dir (give run dirs or a sweep dir)")
        if is_run(d):
            runs = [d]
        else:
            runs = sorted(
                p.parent for p in d.glob("**/.hydra") if not p.parent.name.startswith(".")
            )
        reached += len(runs)
        for run in runs:
            found.setdefault(run.resolve(), run)
    if not found:
        raise UserError(f"{', '.join(map(str, dirs))}: no runs there (no .hydra/ or summary.json)")
    return list(found.values()), reached - len(found)


def read_runs(dirs: list[Path], console: Console) -> tuple[list[Run], list[str]]:
    """The runs in `dirs`, each once, but those with a damaged file: left out of the report's
    numbers, each named in a line on `console`, which is also returned. Refused where no run
    can be read."""
    paths, twice = find_runs(dirs)
    if twice:
        console.print(
            f"counted once: {twice} run dirs reached twice (a dir given again, a run inside a "
            "sweep given, or a symlink)",
            soft_wrap=True,
        )
    runs = [read_run(p) for p in paths]
    left_out = [f"left out {r.path}: {r.damaged}" for r in runs if r.damaged]
    for note in left_out:
        console.print(note, soft_wrap=True, markup=False)
    runs = [r for r in runs if not r.damaged]
    if not runs:
        raise UserError(
            f"{', '.join(map(str, dirs))}: none of the {len(paths)} runs there can be read"
        )
    return runs, left_out


def read_run(path: Path) -> Run:
    """The run in `path`; one with a damaged file (readers.Damaged) is `unreadable`, with which
    file and why, and the report names it and goes on with the others."""
    try:
        summary = readers.read_summary(path)
        curves = readers.read_metrics(path)
        overrides = summary.get("overrides")
        if overrides is None:
            overrides = readers.read_overrides(path)
    except readers.Damaged as exc:
        return Run(path, "unreadable", {}, damaged=str(exc))
    status = summary.get("status") or ("running" if curves else "started")
    return Run(path, status, _parse(overrides), summary, curves)


def _parse(overrides: list[str]) -> dict[str, object]:
    values = {}
    for override in overrides:
        key, _, text = override.lstrip("+~").partition("=")
        if key.startswith("hydra") or key in ("resume", "hparams_search"):
            continue
        values[key] = _value(text.strip("'\""))
    return values


def _value(text: str):
    """An override's value: a number where it is a finite one (NaN equals nothing, so a
    setting of it would match none of its runs), else the text."""
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def swept_keys(runs: list[Run]) -> list[str]:
    """The override keys whose values differ between the runs: what the sweep varied."""
    keys = dict.fromkeys(k for r in runs for k in r.overrides)
    return [k for k in keys if len({str(r.overrides.get(k)) for r in runs}) > 1]


COLUMNS = [  # (header, how to get it from a run)
    ("status", lambda r: r.status),
    ("epochs", lambda r: r.summary.get("epochs", len(r.curves.get("epoch", [])))),
    ("train loss", lambda r: r.final("train_loss")),
    ("valid loss", lambda r: r.final("valid_loss")),
    ("best valid", lambda r: r.best("valid_loss")),
    ("best epoch", lambda r: r.best("epoch")),
    ("gap", lambda r: r.gap),
    ("train acc", lambda r: r.final("train_acc")),
    ("valid acc", lambda r: r.final("valid_acc")),
    ("weight norm", lambda r: r.summary.get("weight_norm")),
    ("sparsity", lambda r: r.final("weights_sparsity")),
]


def rows(runs: list[Run], keys: list[str]) -> tuple[list[str], list[list]]:
    """The report's header and rows, sorted by final valid loss (runs without one last)."""
    columns = [c for c in COLUMNS if any(c[1](r) is not None for r in runs)]
    header = ["run", *keys, *(name for name, _ in columns)]

    def order(run: Run) -> float:
        valid = run.final("valid_loss")
        return valid if valid is not None and math.isfinite(valid) else math.inf

    table = []
    for run in sorted(runs, key=order):
        row = [run.path.name, *(run.overrides.get(k) for k in keys)]
        table.append(row + [get(run) for _, get in columns])
    return header, table


def verdict(runs: list[Run], keys: list[str]) -> str:
    """What the sweep shows, in one line computed from its numbers. Numeric sweeps compare
    each setting with the one of smallest values (e.g. lambda 0); others rank by valid loss."""
    done = [r for r in runs if _finite(r.final("valid_loss"), r.final("train_loss"))]
    lost = [f"{_setting(r, keys)} {r.status}" for r in runs if r not in done]
    if not keys or len(done) < 2:
        return "; ".join(lost) or "nothing to compare: one run"
    numeric = all(isinstance(r.overrides.get(k), float) for r in done for k in keys)
    if numeric:
        base = min(done, key=lambda r: [r.overrides[k] for k in keys])
        parts = [_compare(base, r, keys) for r in done if r is not base]
    else:
        ranked = sorted(done, key=lambda r: r.final("valid_loss"))
        parts = [
            "by valid loss: "
            + ", ".join(
                f"{_setting(r, keys)} {_num(r.final('valid_loss'))}"
                + (f" (acc {r.final('valid_acc'):.1%})" if r.final("valid_acc") is not None else "")
                for r in ranked
            )
        ]
    for r in done:
        final, best = r.final("valid_loss"), r.best("valid_loss")
        if _turned_up(r):
            parts.append(
                f"{_setting(r, keys)}: the valid loss turned up after epoch "
                f"{r.best('epoch')} ({_num(best)} -> {_num(final)})"
            )
    return "; ".join(parts + lost)


def _compare(base: Run, run: Run, keys: list[str]) -> str:
    changed = [k for k in keys if run.overrides[k] != base.overrides[k]]
    what = ", ".join(
        f"{k.rsplit('.', 1)[-1]} {fmt(base.overrides[k])} -> {fmt(run.overrides[k])}"
        for k in changed
    )
    pairs = [
        ("train loss", base.final("train_loss"), run.final("train_loss")),
        ("valid loss", base.final("valid_loss"), run.final("valid_loss")),
        ("valid acc", base.final("valid_acc"), run.final("valid_acc")),
        ("weight norm", base.summary.get("weight_norm"), run.summary.get("weight_norm")),
        ("sparsity", base.final("weights_sparsity"), run.final("weights_sparsity")),
    ]
    shown = [f"{name} {_num(a)} -> {_num(b)}" for name, a, b in pairs if _finite(a, b)]
    return f"{what}: " + ", ".join(shown)


def _setting(run: Run, keys: list[str]) -> str:
    """A run's name in the verdict: the swept values it set, by their keys' last parts."""
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    names = {k: s if list(short.values()).count(s) == 1 else k for k, s in short.items()}
    named = [
        f"{names[k]}={fmt(run.overrides[k])}" for k in keys if run.overrides.get(k) is not None
    ]
    return " ".join(named) or ("defaults" if keys else run.path.name)


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _num(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1 else f"{value:.3g}"


def group_rows(reps: Replicas) -> tuple[list[str], list[list]]:
    """The report of a sweep with replicas: a row per setting, sorted by mean valid loss; each
    number a Stat over the setting's runs."""
    columns = [
        (name, get)
        for name, get in COLUMNS[1:]
        if any(get(r) is not None for g in reps.groups for r in g.runs)
    ]
    header = [*reps.keys, "n", "status", *(name for name, _ in columns)]

    def order(group: Group) -> float:
        valid = group.stat(lambda r: r.final("valid_loss"))
        return valid.mean if valid is not None else math.inf

    table = []
    for group in sorted(reps.groups, key=order):
        statuses = [r.status for r in group.runs]
        status = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
        row = [*(group.setting.get(k) for k in reps.keys), len(group.runs), status]
        table.append(row + [group.stat(get) for _, get in columns])
    return header, table


GROUP_VERDICT = [  # (name, how to get it from a run, the words for less and more)
    ("valid loss", lambda r: r.final("valid_loss"), ("lowered", "raised")),
    ("train loss", lambda r: r.final("train_loss"), ("lowered", "raised")),
    ("valid acc", lambda r: r.final("valid_acc"), ("lowered", "raised")),
    ("weight norm", lambda r: r.summary.get("weight_norm"), ("shrank", "grew")),
]


def group_verdict(reps: Replicas) -> str:
    """What a sweep with replicas shows: each setting against the one of smallest values, in
    how many replicas (the same seed and draw) each effect held and by how much (mean ± std
    of the paired differences); non-numeric settings ranked by mean valid loss."""
    groups, noun = reps.groups, reps.noun
    valid = lambda r: r.final("valid_loss")  # noqa: E731
    lost = [
        f"{_setting(r, reps.keys + reps.replica_keys)} {r.status}"
        for g in groups
        for r in g.runs
        if not _finite(r.final("valid_loss"), r.final("train_loss"))
    ]
    if len(groups) < 2:
        s = groups[0].stat(valid) if groups else None
        what = f"one setting over {len(groups[0].runs)} {noun}" if groups else "no runs"
        parts = [f"{what}: valid loss {fmt(s)}" if s else what]
        return "; ".join(parts + lost)
    numeric = all(isinstance(g.setting.get(k), float) for g in groups for k in reps.keys)
    parts = []
    if numeric:
        base = min(groups, key=lambda g: [g.setting[k] for k in reps.keys])
        for group in groups:
            if group is not base:
                parts.append(_group_compare(base, group, reps))
    else:
        ranked = sorted(groups, key=lambda g: (g.stat(valid) or Stat(math.inf, 0, 0, 0)).mean)
        parts.append(
            "by mean valid loss: "
            + ", ".join(f"{_group_name(g, reps.keys)} {fmt(g.stat(valid))}" for g in ranked)
        )
    for group in groups:
        up = [r for r in group.runs if _turned_up(r)]
        if up:
            parts.append(
                f"{_group_name(group, reps.keys)}: the valid loss turned up in {len(up)} of "
                f"{len(group.runs)} {noun}"
            )
    return "; ".join(parts + lost)


def _group_compare(base: Group, group: Group, reps: Replicas) -> str:
    changed = [k for k in reps.keys if group.setting[k] != base.setting[k]]
    what = ", ".join(
        f"{k.rsplit('.', 1)[-1]} {fmt(base.setting[k])} -> {fmt(group.setting[k])}" for k in changed
    )
    shown = []
    for name, get, (less, more) in GROUP_VERDICT:
        a, b = base.stat(get), group.stat(get)
        if a is None or b is None:
            continue
        text = f"{name} {_num(a.mean)} -> {_num(b.mean)}"
        diffs = paired(base, group, reps.replica_keys, get)
        if diffs:
            d = stat(diffs)
            word = less if d.mean < 0 else more
            k = sum(x < 0 for x in diffs) if d.mean < 0 else sum(x > 0 for x in diffs)
            text += (
                f" ({word} in {k} of {len(diffs)} {reps.noun}, by "
                f"{_num(-d.mean if word == less else d.mean)} ± {_num(d.std)})"
            )
        shown.append(text)
    return f"{what}: " + ", ".join(shown)


def _group_name(group: Group, keys: list[str]) -> str:
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    return " ".join(f"{short[k]}={fmt(group.setting[k])}" for k in keys) or "defaults"


def _turned_up(run: Run) -> bool:
    final, best = run.final("valid_loss"), run.best("valid_loss")
    return _finite(final, best) and final > 1.1 * best


def write_markdown(
    path: Path, header: list[str], table: list[list], summary: str, notes: list[str] = ()
) -> None:
    lines = [summary, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v, interval=True) for v in row) + " |" for row in table]
    lines += ["", *(f"- {note}" for note in notes)] if notes else []
    rundir.write_bytes(path, ("\n".join(lines) + "\n").encode())


def write_csv(path: Path, header: list[str], table: list[list]) -> None:
    """The table as CSV; a column of Stats as three: its mean (named as the column), `std`
    and `ci95` (the half width of the 95% interval)."""
    stats = [any(isinstance(row[j], Stat) for row in table) for j in range(len(header))]
    head = []
    for name, is_stat in zip(header, stats, strict=True):
        head += [name, f"{name} std", f"{name} ci95"] if is_stat else [name]

    def cells(row: list) -> list:
        out = []
        for value, is_stat in zip(row, stats, strict=True):
            if is_stat:
                out += ["", "", ""] if value is None else [value.mean, value.std, value.half]
            else:
                out.append("" if value is None else value)
        return out

    with rundir.atomic(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        writer.writerows([cells(row) for row in table])


def write_report(
    dirs: list[Path], out: Path | None = None, console: Console | None = None, band: str = "std"
) -> Path:
    """Tabulate and plot the runs in `dirs`; writes report.md, report.csv and PNGs into
    `out` (by default the one dir given, or the dirs' common parent), and over replicas a
    TensorBoard run per setting (settings.py, with its `band`); returns `out`."""
    from regexp.analysis import double_descent
    from regexp.figures import plots
    from regexp.figures.double_descent import double_descent_figure

    if out is not None and out.exists() and not out.is_dir():  # (before any run is read)
        raise UserError(f"--out {out}: a file, not a dir; give the dir to write the report into")
    console = console or default_console()
    runs, left_out = read_runs(dirs, console)
    keys = swept_keys(runs)
    reps = replicas(runs, keys)
    if reps is None:
        header, table = rows(runs, keys)
        line = verdict(runs, keys)
    else:
        header, table = group_rows(reps)
        line = group_verdict(reps)
        curve, left_out_of_curve = double_descent.points(reps)
        if curve:
            line = f"{double_descent.descent_verdict(curve)}; {line}"
    given = out is not None
    out = _out_dir(out, dirs)
    with _writing(out, given):
        write_markdown(out / "report.md", header, table, line, left_out)
        write_csv(out / "report.csv", header, table)
        if reps is None:
            figures = plots.report_figures(runs, keys, out)
        else:
            figures = plots.report_figures(runs, reps.keys, out, reps.groups)
        # (rich markup in what the run dirs say, a dir named `lr=[/]`, is shown as it is)
        console.print(_view(runs, keys, reps, header, table, out))
        console.print(f"[bold]verdict[/]: {escape(line)}", soft_wrap=True)
        for note in figures.not_drawn:
            console.print(note, soft_wrap=True, markup=False)
        written = ["report.md", "report.csv", *(f.name for f in figures)]
        if reps is not None:
            lines = settings.write_setting_runs(reps, out, band)
            written.append(
                f"{settings.SETTINGS}/ ({len(lines)} TensorBoard runs: a line and a band each)"
            )
            decomposed, claim, notes = bias_variance_tables(reps, out)
            for note in notes:
                console.print(note, soft_wrap=True, markup=False)
            written += [f.name for f in decomposed]
            if decomposed:
                console.print(f"[bold]bias and variance[/]: {escape(claim)}", soft_wrap=True)
            if curve:
                drawn = double_descent_figure(curve, out)
                for note in left_out_of_curve + drawn.not_drawn:
                    console.print(note, soft_wrap=True, markup=False)
                written += [double_descent.write_curve(out, curve).name, *(f.name for f in drawn)]
        console.print(escape(f"wrote {', '.join(written)} in {out}"), soft_wrap=True)
    return out


def _view(runs, keys, reps, header, table, out: Path) -> Table:
    """The report's table on the console, where the swept values name each run (the dir name
    says the same at length)."""
    skip = 1 if keys and reps is None else 0
    what = f"{len(runs)} runs"
    if reps is not None:
        what += f": {len(reps.groups)} settings over {' x '.join(reps.replica_keys)}"
    view = Table(
        title=escape(f"{what} in {out}, sorted by valid loss"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name in header[skip:]:
        short = name.rsplit(".", 1)[-1]
        view.add_column(escape(short), justify="left" if name in ("run", "status") else "right")
    for row in table:
        view.add_row(*(escape(fmt(v)) for v in row[skip:]))
    return view


def bias_variance_tables(reps: Replicas, out: Path) -> tuple[list[Path], str, list[str]]:
    """The bias-variance decomposition of each setting with two runs or more on one valid set:
    bias_variance.csv, .md, .png and fits.png in `out`; returns them, what they show, and a
    line for each run left out for a damaged predictions.npz and each figure not drawn."""
    from regexp.analysis import bias_variance
    from regexp.figures import plots

    results = [bias_variance.decompose(g, reps.replica_keys) for g in reps.groups]
    results = bias_variance.one_kind(results)
    damaged = [line for r in results for line in r.damaged]
    done = [r for r in results if r.decomposition is not None]
    if not done:
        return [], "", damaged
    written = bias_variance.write_tables(out, results, reps.keys)
    curves = bias_variance.curves(done, reps.keys)
    valid = bias_variance.curves(done, reps.keys, on="valid") if done[0].on_range else {}
    figures = plots.bias_variance_figures(curves, done, reps.keys, out, valid)
    written += figures
    return written, bias_variance.claims(done, reps.keys), damaged + figures.not_drawn


@contextmanager
def _writing(out: Path, given: bool):
    """An error writing the report into `out` (a file of it that is a dir, a full disk), as
    one line that names the file and the option."""
    try:
        yield
    except OSError as exc:
        what = f"--out {out}" if given else str(out)
        where = exc.filename2 or exc.filename  # (a rename's: where it was to go)
        raise UserError(f"{what}: cannot write {where} ({exc.strerror})") from None


def _out_dir(out: Path | None, dirs: list[Path]) -> Path:
    """The dir to write the report into, made where it is not: `--out`, or by default the one
    dir given, or the dirs' common parent. One that cannot be made or written is refused in one
    line that names it."""
    given = out is not None
    if out is None:
        out = dirs[0] if len(dirs) == 1 else Path(_common_parent(dirs))
    what = f"--out {out}" if given else f"{out} (where the report goes by default; give --out)"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what}: cannot make that dir ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"{what}: cannot write in that dir (no permission)")
    return out


def _common_parent(dirs: list[Path]) -> str:
    return os.path.commonpath([str(d.resolve()) for d in dirs])


def report_main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="regexp report",
        description="A table of runs (sorted by valid loss) and figures: the valid-loss curves, "
        "the losses against each swept parameter, and a heatmap when two were swept.",
    )
    parser.add_argument(
        "dirs",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="a sweep dir (outputs/multirun/<date>/<time>) or run dirs",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write report.md, report.csv and the "
        "figures (default: the dir given, or the dirs' common parent)",
    )
    parser.add_argument(
        "--band",
        choices=settings.BANDS,
        default="std",
        help="the band around each setting's mean in TensorBoard: mean ± std, or min to max",
    )
    parsed = parser.parse_args(args)
    write_report(parsed.dirs, parsed.out, band=parsed.band)
    return 0


def write_settings(sweep: Path) -> list[Path]:
    """The sweep's TensorBoard run per setting, where its runs are replicas of settings (at the
    end of a sweep: run.outcomes.SweepReport)."""
    runs = [r for r in map(read_run, find_runs([sweep])[0]) if not r.damaged]
    reps = replicas(runs, swept_keys(runs))
    return [] if reps is None else settings.write_setting_runs(reps, sweep)
