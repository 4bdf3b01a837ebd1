"""Sweeps through Hydra's launcher and sweeper plugins, and `regexp report` on their dirs."""

from __future__ import annotations

import csv
import itertools
import re
from pathlib import Path

import pytest
from conftest import jobs_of, read_events, read_json, regexp

TINY = ["train.epochs=8", "model.hidden=[8]"]


def job_dirs(sweep):
    return jobs_of(sweep)


@pytest.mark.slow
def test_a_2x2_sweep_runs_in_parallel_with_joblib(tmp_path):
    done = regexp(
        "train",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *TINY,
        "model.dropout=0,0.5",
        "optim.weight_decay=0,1e-2",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert "Joblib.Parallel" in done.stdout or "joblib" in done.stdout.lower()
    runs = job_dirs(tmp_path / "sweep")
    assert len(runs) == 4
    for run in runs:
        summary = read_json(run / "summary.json")
        assert summary["status"] == "completed"
        assert summary["threads"] == 1  # as alone, whatever the cores: the same digits
        assert len(read_events(run).Scalars("loss/valid")) == 8
    # A job is the run its overrides make alone, byte for byte.
    regexp("train", *TINY, "model.dropout=0.5", "optim.weight_decay=1e-2", "hydra.run.dir=alone",
           cwd=tmp_path)  # fmt: skip
    for name in ("metrics.csv", "predictions.npz"):
        assert (runs[3] / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()


@pytest.mark.slow
def test_a_2_job_sweep_runs_with_submitit_local(tmp_path):
    regexp(
        "train",
        "-m",
        "hydra/launcher=submitit_local",
        *TINY,
        "seed=0,1",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    runs = job_dirs(tmp_path / "sweep")
    assert [r.name for r in runs] == [
        "seed=0",
        "seed=1",
    ]
    assert all(read_json(r / "summary.json")["status"] == "completed" for r in runs)


@pytest.mark.slow
def test_an_optuna_search_of_3_trials_minimizes_the_valid_loss(tmp_path):
    regexp(
        "train",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        *TINY,
        "hydra.sweep.dir=search",
        cwd=tmp_path,
    )
    runs = job_dirs(tmp_path / "search")
    assert len(runs) == 3
    best = min(read_json(r / "summary.json")["best"]["valid_loss"] for r in runs)
    results = (tmp_path / "search" / "optimization_results.yaml").read_text()
    assert f"best_value: {best}" in results
    for key in ("optim.lr", "optim.weight_decay", "model.dropout"):
        assert key in results and all(key.split(".")[-1] in r.name for r in runs)
    # A trial is a run like any other: it resumes in its dir, with its values, not a new search.
    regexp("train", f"resume={runs[0]}", "train.epochs=10", cwd=tmp_path)
    assert read_json(runs[0] / "summary.json")["epochs"] == 10
    assert len(job_dirs(tmp_path / "search")) == 3


@pytest.mark.slow
def test_report_tables_and_plots_a_sweep_with_a_failed_job(tmp_path):
    regexp(
        "train",
        "-m",
        *TINY,
        "model.dropout=0,0.5",
        "optim.weight_decay=0,1e-2,-1",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        check=False,
    )
    done = regexp("report", "sweep", cwd=tmp_path)
    sweep = tmp_path / "sweep"
    with open(sweep / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert [r["status"] for r in rows].count("failed") == 2
    valid = [float(r["valid loss"]) for r in rows if r["status"] == "completed"]
    assert valid == sorted(valid) and len(valid) == 4  # sorted by valid loss, failed last
    assert [r["status"] for r in rows[-2:]] == ["failed", "failed"]
    for row in rows[:4]:
        assert float(row["gap"]) == float(row["valid loss"]) - float(row["train loss"])
        assert float(row["weight norm"]) > 0
    assert {"model.dropout", "optim.weight_decay"} <= set(rows[0])
    markdown = (sweep / "report.md").read_text().splitlines()
    verdict = markdown[0]  # then the table
    assert "weight_decay 0 -> 0.01: train loss" in verdict and "dropout 0 -> 0.5" in verdict
    assert "dropout=0 weight_decay=-1 failed" in verdict
    assert "dropout=0.5 weight_decay=-1 failed" in verdict
    assert len(markdown) == 2 + 2 + 6 and markdown[2].startswith("| run | model.dropout")
    for png in (
        "curves.png",
        "loss_vs_model.dropout.png",
        "loss_vs_optim.weight_decay.png",
        "heatmap.png",
    ):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert (sweep / png).stat().st_size > 5000
    assert "6 runs" in done.stdout and "failed" in done.stdout


@pytest.mark.slow
def test_report_works_on_a_run_still_in_progress_and_on_single_runs(tmp_path):
    regexp("train", *TINY, "hydra.run.dir=a", cwd=tmp_path)
    regexp("train", *TINY, "optim.lr=0.1", "hydra.run.dir=b", cwd=tmp_path)
    (tmp_path / "b" / "summary.json").unlink()  # as while it is still training
    regexp("report", "a", "b", "--out", "rep", cwd=tmp_path)
    with open(tmp_path / "rep" / "report.csv", newline="") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert rows["a"]["status"] == "completed" and rows["b"]["status"] == "running"
    assert rows["b"]["optim.lr"] == "0.1" and rows["b"]["valid loss"]


def test_report_refuses_a_dir_without_runs(tmp_path):
    done = regexp("report", ".", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "no runs there" in done.stderr


def test_a_sweep_over_a_key_left_out_of_job_dir_names_is_refused(tmp_path):
    done = regexp(
        "train", "-m", "+experiment=dropout,weight_decay", "hydra.sweep.dir=sweep",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "a sweep can't vary experiment" in done.stderr
    assert not (tmp_path / "sweep").exists()


def fake_run(overrides: dict, seed: int, params: int = 81_001, epochs: int = 50):
    """A finished run as `regexp report` reads it, with noisy made-up curves."""
    import random

    from regexp.analysis.report import Run

    rng = random.Random(seed)
    train = [1 / (1 + e / 10) * (1 + 0.3 * rng.random()) for e in range(1, epochs + 1)]
    valid = [0.3 + 1 / (1 + e / 20) for e in range(1, epochs + 1)]
    final = {"train_loss": train[-1], "valid_loss": valid[-1]}
    curves = {"epoch": list(range(1, epochs + 1)), "train_loss": train, "valid_loss": valid}
    return Run(
        Path(f"run{seed}"), "completed", overrides, {"params": params, "final": final}, curves
    )


@pytest.mark.parametrize("shape", [(2, 2), (3, 10)])
def test_curves_are_a_panel_per_value_of_the_first_key_valid_strong_train_faint(shape):
    from regexp.figures import plots

    runs = [
        fake_run({"model.dropout": float(p), "seed": float(s)}, seed=i)
        for i, (p, s) in enumerate(itertools.product(range(shape[0]), range(shape[1])))
    ]
    figure = plots.curves_figure(plots._pyplot(), runs, ["model.dropout", "seed"])
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [f"dropout={p}" for p in range(shape[0])]
    for ax in panels:
        lines = ax.get_lines()
        assert len(lines) == 2 * shape[1]  # each run's train and valid loss, in one colour
        train, valid = lines[0::2], lines[1::2]
        assert all(
            t.get_alpha() < 0.5 and v.get_alpha() is None for t, v in zip(train, valid, strict=True)
        )
        assert all(t.get_color() == v.get_color() for t, v in zip(train, valid, strict=True))


def test_loss_against_a_penalty_with_0_is_on_a_symlog_axis_and_a_list_key_on_params():
    from regexp.figures import plots

    plt = plots._pyplot()
    runs = [fake_run({"optim.weight_decay": wd}, seed=i) for i, wd in enumerate((0.0, 1e-2))]
    assert plots.loss_vs_figure(plt, runs, "optim.weight_decay").axes[0].get_xscale() == "symlog"
    runs = [fake_run({"optim.lr": lr}, seed=i) for i, lr in enumerate((1e-3, 1e-2, 1e-1))]
    assert plots.loss_vs_figure(plt, runs, "optim.lr").axes[0].get_xscale() == "log"
    runs = [fake_run({"model.dropout": p}, seed=i) for i, p in enumerate((0.0, 0.5))]
    assert plots.loss_vs_figure(plt, runs, "model.dropout").axes[0].get_xscale() == "linear"
    runs = [
        fake_run({"model.hidden": "[200,200]"}, seed=0, params=40_801),
        fake_run({"model.hidden": "[50]"}, seed=1, params=151),
    ]
    ax = plots.loss_vs_figure(plt, runs, "model.hidden").axes[0]
    assert list(ax.get_lines()[0].get_xdata()) == [151, 40_801] and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.texts] == ["[50]", "[200,200]"]
    assert "parameters" in ax.get_xlabel()


def test_a_run_or_sweep_of_an_experiment_is_named_by_it(tmp_path):
    out = regexp("train", "--cfg", "hydra", "--resolve", "+experiment=norms", cwd=tmp_path).stdout
    dirs = re.findall(r"^    dir: (.*)$", out, flags=re.M)
    assert [d.rsplit("/", 2)[0] for d in dirs[:2]] == ["outputs", "outputs/multirun"]
    assert all(re.fullmatch(r"\d\d-\d\d-\d\d_norms", d.rsplit("/", 1)[1]) for d in dirs[:2])
    out = regexp("train", "--cfg", "hydra", "--resolve", cwd=tmp_path).stdout
    assert re.search(r"^    dir: outputs/[\d-]+/\d\d-\d\d-\d\d$", out, flags=re.M)
