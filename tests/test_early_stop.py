"""Early stopping (train.early_stop): a run stops when its valid loss has not improved for
`patience` epochs, completed at that epoch, keeps its best weights as best.pt and ends holding
them; it resumes to the same stop, and each member of a population stops on its own."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
import torch

from regexp import config
from regexp.components import data
from regexp.engine import stopping
from regexp.engine.track import weight_norm
from regexp.errors import UserError
from regexp.run import population

QUIET = ["train.epochs=300", "log.figure_every=0", "log.hist_every=0"]
STOP = ["train.early_stop.patience=10"]


def train(run_dir: Path, *overrides: str) -> dict:
    conf = config.validate(config.compose([*QUIET, *overrides]))
    with contextlib.redirect_stdout(io.StringIO()):
        return population.execute(conf, run_dir, list(overrides))


def valid_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(row["valid_loss"]) for row in csv.DictReader(f)]


def best_model(run_dir: Path, *overrides: str) -> torch.nn.Module:
    """The run's model with best.pt loaded (tensors only)."""
    conf = config.validate(config.compose([*QUIET, *overrides]))
    model = population.build_model(conf, data.load(conf.data, conf.seed))
    stopping.load_best(run_dir / "best.pt", model)
    return model


def test_a_run_stops_after_patience_epochs_without_a_better_valid_loss(tmp_path):
    summary = train(tmp_path, *STOP)
    stopped, best = summary["stopped_epoch"], summary["best"]["epoch"]
    assert summary["status"] == "completed" and summary["epochs"] == stopped < 300
    assert stopped == best + 10
    losses = valid_losses(tmp_path)
    assert len(losses) == stopped
    assert min(losses[best:]) >= losses[best - 1]  # none better in the patience epochs
    # It ends holding its best weights, which best.pt keeps.
    assert summary["weight_norm"] == pytest.approx(weight_norm(best_model(tmp_path, *STOP)))
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == best


def test_restore_best_false_ends_with_the_last_weights_and_no_stop_no_best_pt(tmp_path):
    restored = train(tmp_path / "restored", *STOP)
    last = train(tmp_path / "last", *STOP, "train.early_stop.restore_best=false")
    assert last["stopped_epoch"] == restored["stopped_epoch"]
    assert last["weight_norm"] != pytest.approx(restored["weight_norm"])
    plain = train(tmp_path / "plain", "train.epochs=30")
    assert "stopped_epoch" not in plain and not (tmp_path / "plain" / "best.pt").exists()


def test_min_delta_counts_only_a_fall_larger_than_it(tmp_path):
    strict = train(tmp_path / "strict", *STOP, "train.early_stop.min_delta=0.01")
    loose = train(tmp_path / "loose", *STOP)
    assert strict["stopped_epoch"] <= loose["stopped_epoch"]
    losses = valid_losses(tmp_path / "strict")
    best = strict["best"]["epoch"]
    assert min(losses[best:]) > losses[best - 1] - 0.01


def test_an_interrupted_run_resumes_to_the_same_stop_and_best(tmp_path):
    whole = train(tmp_path / "whole", *STOP)
    stopped, best = whole["stopped_epoch"], whole["best"]["epoch"]
    middle = best + 5  # some epochs without improvement already counted
    part = train(tmp_path / "part", *STOP, f"train.epochs={middle}")
    assert part["status"] == "completed" and "stopped_epoch" not in part
    resumed = train(tmp_path / "part", *STOP, f"resume={tmp_path / 'part'}")
    assert resumed["stopped_epoch"] == stopped and resumed["best"]["epoch"] == best
    assert valid_losses(tmp_path / "part") == pytest.approx(valid_losses(tmp_path / "whole"))
    assert resumed["weight_norm"] == pytest.approx(whole["weight_norm"])
    # A run that stopped has nothing left to train.
    with pytest.raises(UserError, match="stopped early"):
        train(tmp_path / "whole", *STOP, f"resume={tmp_path / 'whole'}", "train.epochs=400")


@pytest.mark.slow
def test_each_member_of_a_population_stops_on_its_own_valid_loss(tmp_path):
    varied = [["seed=0"], ["seed=1"], ["seed=2", "train.early_stop.patience=null"]]
    members = [
        population.Member(
            config.validate(config.compose([*QUIET, *STOP, *v])), tmp_path / f"m{i}", v
        )
        for i, v in enumerate(varied)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        together = population.execute_population(members)
    for i, v in enumerate(varied):
        alone = train(tmp_path / f"alone{i}", *STOP, *v)
        assert together[i].get("stopped_epoch") == alone.get("stopped_epoch")
        assert together[i]["epochs"] == alone["epochs"]
        assert together[i]["weight_norm"] == pytest.approx(alone["weight_norm"], rel=1e-5)
    assert together[0]["stopped_epoch"] != together[1]["stopped_epoch"]
    assert together[2]["epochs"] == 300  # no patience: trains on while the others stop


def test_the_last_frame_shows_the_restored_weights_under_their_epoch(tmp_path):
    from conftest import gif_epochs

    summary = train(tmp_path, *STOP, "log.figure_every=5")
    frames, epochs = gif_epochs(tmp_path / "fit.gif")
    assert epochs[-1] == summary["best"]["epoch"] != summary["stopped_epoch"]
    assert epochs[:-1] == list(range(0, summary["stopped_epoch"] + 1, 5))


def test_a_sweep_of_patience_trains_as_one_population_each_job_stopping_on_its_own(tmp_path):
    from conftest import read_json, regexp

    done = regexp(
        "train", "-m", *QUIET, "train.early_stop.patience=null,10", "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )  # fmt: skip
    assert "2 jobs in 1 population of 2" in done.stdout + done.stderr
    assert "stopped early after epoch" in done.stdout + done.stderr
    (on,) = (tmp_path / "sweep").glob("*patience=10*")
    (off,) = (tmp_path / "sweep").glob("*patience=null*")
    stopped, trained = read_json(on / "summary.json"), read_json(off / "summary.json")
    assert stopped["stopped_epoch"] == stopped["best"]["epoch"] + 10 == stopped["epochs"]
    assert trained["epochs"] == 300 and "stopped_epoch" not in trained
    assert (on / "best.pt").exists() and not (off / "best.pt").exists()
