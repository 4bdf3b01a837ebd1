"""`regexp report` on replicas: runs that differ only in seed and/or data.draw read as one
setting, with mean ± std, a 95% interval and counts over the replicas."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
from conftest import regexp
from rich.console import Console

from regexp.analysis import report
from regexp.analysis.replicas import replicas, stat, t95


def run(valid: float, train: float, norm: float, **overrides) -> report.Run:
    values = {k.replace("__", "."): float(v) for k, v in overrides.items()}
    summary = {
        "final": {"valid_loss": valid, "train_loss": train},
        "best": {"valid_loss": valid, "epoch": 10},
        "weight_norm": norm,
    }
    return report.Run(
        Path("-".join(f"{k}={v}" for k, v in values.items())), "completed", values, summary
    )


def test_stat_is_the_mean_the_sample_std_and_a_t_interval():
    s = stat([1.0, 2.0, 3.0, 4.0, 5.0, None, math.nan])
    assert (s.mean, s.n) == (3.0, 5)
    assert s.std == pytest.approx(math.sqrt(2.5), abs=1e-12)
    assert s.half == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-5)
    assert stat([7.0]).std == 0 and math.isnan(stat([7.0]).half) and stat([None]) is None
    assert t95(1) == pytest.approx(12.7062) and t95(22) == pytest.approx(2.0739, abs=2e-3)
    assert t95(1000) == pytest.approx(1.9623, abs=2e-3)


def test_seeds_and_draws_are_replicas_of_one_setting_and_the_verdict_counts_them():
    runs = [
        run(0.30 + 0.01 * s + 0.001 * d, 0.01, 10.0, seed=s, data__draw=d, optim__weight_decay=0)
        for s in range(3)
        for d in range(2)
    ]
    # lambda 1e-2 lowers the valid loss of every replica but one, always shrinks the weights
    runs += [
        run(0.25 + 0.01 * s + (0.1 if (s, d) == (2, 1) else 0), 0.05, 5.0 - s, seed=s,
            data__draw=d, optim__weight_decay=1e-2)
        for s in range(3)
        for d in range(2)
    ]  # fmt: skip
    keys = report.swept_keys(runs)
    reps = replicas(runs, keys)
    assert reps.keys == ["optim.weight_decay"] and reps.replica_keys == ["seed", "data.draw"]
    assert [len(g.runs) for g in reps.groups] == [6, 6]
    header, table = report.group_rows(reps)
    assert header[:3] == ["optim.weight_decay", "n", "status"]
    assert [row[0] for row in table] == [0.01, 0.0]  # sorted by mean valid loss
    assert table[0][2] == "6 completed"
    valid = table[0][header.index("valid loss")]
    expected = [0.25, 0.25, 0.26, 0.26, 0.27, 0.37]
    assert valid.mean == pytest.approx(sum(expected) / 6) and valid.n == 6
    line = report.group_verdict(reps)
    assert line.startswith(
        "weight_decay 0 -> 0.01: valid loss 0.3105 -> 0.2767 (lowered in 5 of 6 runs"
    )
    assert "weight norm 10 -> 4 (shrank in 6 of 6 runs, by 6 ± 0.8944)" in line
    assert "train loss 0.0100 -> 0.0500 (raised in 6 of 6 runs, by 0.0400 ± 0.0000)" in line


def test_a_sweep_without_replicas_reads_run_by_run():
    runs = [run(0.3, 0.1, 1.0, optim__weight_decay=w) for w in (0, 1e-2)]
    assert replicas(runs, report.swept_keys(runs)) is None
    seeds = [run(0.3, 0.1, 1.0, seed=s, optim__weight_decay=s) for s in (0, 1)]  # one each
    assert replicas(seeds, report.swept_keys(seeds)) is None


def test_the_weights_figure_of_replicas_draws_each_settings_mean_and_band(tmp_path):
    from regexp.figures import plots

    runs = []
    for decay, start in ((0, 14.0), (1e-2, 5.0)):
        for seed in range(3):
            r = run(0.3, 0.1, start, seed=seed, optim__weight_decay=decay)
            norms = [start + seed, start + seed - 1, math.nan, start + seed - 2]
            r.curves = {
                "epoch": [1, 2, 3, 4],
                "valid_loss": [0.5, 0.4, 0.35, 0.3],
                "train_loss": [0.4, 0.2, 0.15, 0.1],
                "weights_l2_norm": norms,
                "weights_sparsity": [0.0, 0.01 * seed, math.nan, 0.02],
            }
            runs.append(r)
    keys = report.swept_keys(runs)
    groups = replicas(runs, keys).groups
    left, _ = plots.weights_figure(plots._pyplot(), runs, keys, groups).axes
    # A line and a band a setting, not six lines: the mean of norms 14, 15, 16 at epoch 1.
    assert len(left.get_lines()) == 2 and len(left.collections) == 2
    first = left.get_lines()[0]
    assert list(first.get_xdata()) == [1, 2, 4] and first.get_ydata()[0] == pytest.approx(15.0)
    plots.report_figures(runs, keys, tmp_path, groups)
    assert (tmp_path / "weights.png").is_file()


def test_a_run_with_corrupt_files_is_named_with_why_and_the_rest_report(tmp_path):
    import json

    sweep = tmp_path / "sweep"
    good = {"status": "completed", "epochs": 2, "final": {"valid_loss": 0.2, "train_loss": 0.1}}
    corrupt = {
        "optim.lr=0.1": (good, "epoch,train_loss,valid_loss\n1,0.3,0.4\n2,0.1,0.2\n"),
        "optim.lr=0.2": ([1, 2], ""),
        "optim.lr=0.3": ({**good, "final": None}, ""),
        "optim.lr=0.4": (good, "epoch,train_loss,valid_loss\n1,0.3,abc\n"),
        "optim.lr=0.5": ('{"status": "compl', ""),
    }
    for name, (summary, metrics) in corrupt.items():
        run_dir = sweep / name
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(f"- {name}\n")
        text = summary if isinstance(summary, str) else json.dumps(summary)
        (run_dir / "summary.json").write_text(text)
        if metrics:
            (run_dir / "metrics.csv").write_text(metrics)
    damaged = {p.name: report.read_run(p).damaged for p in sorted(sweep.iterdir())}
    assert damaged == {
        "optim.lr=0.1": None,
        "optim.lr=0.2": "summary.json: a JSON list, not an object",
        "optim.lr=0.3": "summary.json: final is null, not a table of numbers",
        "optim.lr=0.4": 'metrics.csv: line 2: valid_loss is "abc", not a number',
        "optim.lr=0.5": "summary.json: Unterminated string starting at: line 1 column 12 (char 11)",
    }
    out = io.StringIO()
    report.write_report([sweep], console=Console(file=out, width=200))
    for name, why in damaged.items():
        if why:  # named in one line, and left out of the table
            assert f"left out {sweep / name}: {why}\n" in out.getvalue()
    table = (sweep / "report.md").read_text()
    rows = [line[:14] for line in table.splitlines() if line.startswith("| optim")]
    assert rows == ["| optim.lr=0.1"]
    assert f"- left out {sweep / 'optim.lr=0.2'}: summary.json: a JSON list" in table


def test_an_out_that_is_a_file_is_refused_in_one_line_before_anything_is_read(tmp_path):
    run_dir = tmp_path / "sweep" / "optim.lr=0.1"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- optim.lr=0.1\n")
    (tmp_path / "afile").write_text("mine\n")
    done = regexp("report", "sweep", "--out", "afile", cwd=tmp_path, check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--out afile: a file, not a dir" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "afile").read_text() == "mine\n"
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["optim.lr=0.1"]
