"""A population member's record equals its lone run's, number for number (to float rounding)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from regexp import config, run

EPOCHS = 200
RTOL = 1e-5  # relative, on every loss of every epoch


def records(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def conf_of(overrides: list[str]) -> config.Config:
    return config.validate(config.compose(overrides))


def members_equal_lone_runs(tmp_path: Path, base: list[str], varied: list[list[str]]):
    """Train `varied` (each a list of overrides on top of `base`) as one population, then each
    alone; every loss of every epoch must agree."""
    members = [
        run.Member(conf_of([*base, *v]), tmp_path / f"member{i}", v) for i, v in enumerate(varied)
    ]
    summaries = run.execute_population(members)
    assert all(s["status"] == "completed" for s in summaries), summaries
    for i, v in enumerate(varied):
        alone = tmp_path / f"alone{i}"
        run.execute(conf_of([*base, *v]), alone, v)
        together, lone = records(tmp_path / f"member{i}"), records(alone)
        assert len(together) == len(lone)
        for a, b in zip(together, lone, strict=True):
            for key in ("train_loss", "valid_loss", "train_acc", "valid_acc"):
                if key in b:
                    assert a[key] == pytest.approx(b[key], rel=RTOL, abs=1e-7), (v, a["epoch"], key)
            assert a["lr"] == b["lr"]


QUIET = [f"train.epochs={EPOCHS}", "log.figure_every=0", "log.hist_every=0"]


def test_lesson_members_with_their_own_seed_dropout_and_decay_equal_their_lone_runs(tmp_path):
    varied = [
        ["seed=0"],
        ["seed=1", "model.dropout=0.5"],
        ["seed=2", "optim.weight_decay=1e-2"],
        ["seed=3", "model.dropout=0.2", "optim.lr=0.02"],
    ]
    members_equal_lone_runs(tmp_path, QUIET, varied)


@pytest.mark.parametrize("norm", ["none", "bn", "ln", "gn"])
def test_mlp_members_with_each_norm_and_mini_batches_equal_their_lone_runs(tmp_path, norm):
    base = [
        "data=moons",
        "data.n_train=64",
        "data.n_valid=50",
        "model.hidden=[16,16]",
        f"norm={norm}",
        "train.batch_size=16",  # each member shuffles its own batches
        "train.epochs=15",
        "optim.lr=0.05",
        "log.figure_every=0",
        "log.hist_every=0",
    ]
    varied = [["seed=0"], ["seed=1", "model.dropout=0.3"], ["seed=2", "reg.l1=1e-3", "reg.l2=1e-2"]]
    members_equal_lone_runs(tmp_path, base, varied)


@pytest.mark.parametrize("norm", ["none", "bn", "in", "gn", "ln"])
def test_cnn_members_with_each_norm_equal_their_lone_runs(tmp_path, norm):
    base = [
        "data=digits",
        "data.n_train=96",
        "model=cnn",
        "model.channels=[4,8]",
        "model.head=[16]",
        f"norm={norm}",
        "train.batch_size=32",
        "train.epochs=4",
        "optim.lr=0.05",
        "log.figure_every=0",
        "log.hist_every=0",
    ]
    varied = [["seed=0"], ["seed=1", "model.dropout=0.5", "model.dropout2d=0.2"], ["seed=2"]]
    members_equal_lone_runs(tmp_path, base, varied)


def test_a_diverging_member_stops_alone_and_the_others_go_on(tmp_path):
    base = ["train.epochs=30", "model.hidden=[16,16]", *QUIET[1:]]
    members = [
        run.Member(conf_of([*base, "optim.lr=1e3"]), tmp_path / "wild", ["optim.lr=1e3"]),
        run.Member(conf_of(base), tmp_path / "calm", []),
    ]
    wild, calm = run.execute_population(members)
    assert wild["status"] == "diverged" and wild["epochs"] < 30 and "became" in wild["error"]
    assert calm["status"] == "completed" and calm["epochs"] == 30
    assert len(records(tmp_path / "wild")) == wild["epochs"]  # everything it logged is kept
    assert records(tmp_path / "calm") == records(_alone(tmp_path, base))


def _alone(tmp_path: Path, overrides: list[str]) -> Path:
    run.execute(conf_of(overrides), tmp_path / "alone", overrides)
    return tmp_path / "alone"


def test_each_member_keeps_the_predictions_of_its_lone_run(tmp_path):
    """predictions.npz: the valid outputs at the last and the best epoch, equal to the lone
    run's, with what toy_regression knows of its valid targets; a classification member's
    logits give its logged accuracy."""
    from regexp import predictions

    base = ["train.epochs=40", "model.hidden=[16,16]", *QUIET[1:]]
    varied = [["seed=0"], ["seed=1", "data.draw=3"], ["seed=2", "model.dropout=0.5"]]
    members = [
        run.Member(conf_of([*base, *v]), tmp_path / f"member{i}", v) for i, v in enumerate(varied)
    ]
    run.execute_population(members)
    for i, v in enumerate(varied):
        alone = tmp_path / f"alone{i}"
        summary = run.execute(conf_of([*base, *v]), alone, v)
        a, b = predictions.read(tmp_path / f"member{i}"), predictions.read(alone)
        assert a.epochs == b.epochs == (40, summary["best"]["epoch"])
        assert a.last.dtype == a.best.dtype == "float32" and a.last.shape == (10, 1)
        assert (a.last == b.last).all() and (a.best == b.best).all()
        last = ((a.last - a.y) ** 2).mean()  # the valid loss logged at those epochs
        assert last == pytest.approx(summary["final"]["valid_loss"], rel=1e-5)
        best = ((a.best - a.y) ** 2).mean()
        assert best == pytest.approx(summary["best"]["valid_loss"], rel=1e-5)
        assert a.noise == 0.3 and a.target.shape == (10, 1)
        assert a.grid.shape == (200, 1) and a.grid_x.shape == (200, 1)
    moons = ["data=moons", "data.n_valid=50", "train.epochs=5", "model.hidden=[8]", *QUIET[1:]]
    summary = run.execute(conf_of(moons), tmp_path / "moons", [])
    p = predictions.read(tmp_path / "moons")
    assert p.last.shape == (50, 2) and p.y.dtype == "int64" and p.target is None
    accuracy = (p.last.argmax(1) == p.y).mean()
    assert accuracy == pytest.approx(summary["final"]["valid_acc"])
    assert p.grid.shape == (64 * 64, 1)  # P(class 1) at each point of the figure
