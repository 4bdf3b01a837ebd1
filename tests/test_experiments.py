"""The lessons' comparisons (conf/experiment/): each composes, and a shortened run of each
shows the effect the lesson teaches."""

from __future__ import annotations

import contextlib
import io
from itertools import product

import pytest
from hydra import compose, initialize_config_dir

from regexp import config
from regexp.run import population

EXPERIMENTS = sorted(p.stem for p in (config.conf_dir() / "experiment").glob("*.yaml"))


def sweep_params(name: str) -> dict[str, str]:
    """What `regexp train -m +experiment=NAME` sweeps: key -> values, as the config says."""
    with initialize_config_dir(version_base="1.3", config_dir=str(config.conf_dir())):
        cfg = compose("train", [f"+experiment={name}"], return_hydra_config=True)
    return {key: str(values) for key, values in cfg.hydra.sweeper.params.items()}


REPLICAS = ("seed", "data.draw")


def sweep_points(name: str, seeds: bool = True) -> list[list[str]]:
    """The overrides of the jobs `regexp train -m +experiment=NAME` runs: every setting, with
    its last replica (a job's seed or draw is checked as an integer, whatever its value: the
    last stands for them all); without `seeds`, its first seed only."""
    params = {k: v for k, v in sweep_params(name).items() if seeds or k != "seed"}
    axes = []
    for key, values in params.items():
        each = _values(values)
        if key in REPLICAS:
            each = each[-1:]
        axes.append([f"{key}={v}" for v in each])
    return [list(point) for point in product(*axes)]


@pytest.mark.slow
def test_each_comparison_runs_over_5_seeds_and_bias_variance_over_20_draws():
    """As written, an experiment's sweep is the replicated comparison its figures quote."""
    for name in EXPERIMENTS:
        params = sweep_params(name)
        if name.startswith("bias_variance"):
            assert params["data.draw"] == "range(20)" and "seed" not in params, name
        elif name.startswith("double_descent"):  # (variance split into data and init)
            assert params["data.draw"].startswith("range(") and "range(" in params["seed"], name
        else:
            assert params["seed"] == "range(5)", name


def _values(text: str) -> list[str]:
    """A sweep's values: a, b, c or range(start, stop[, step]), as Hydra expands them."""
    if text.startswith("range(") and text.endswith(")"):
        return [str(v) for v in range(*(int(a) for a in text[6:-1].split(",")))]
    return text.split(",")


def test_every_lesson_comparison_is_there():
    assert set(EXPERIMENTS) >= {
        "weight_decay",
        "dropout",
        "bn_cnn",
        "optimizers",
        "lr_schedules",
        "l1_vs_l2",
        "norms",
        "overfitting",
        "early_stopping",
        "bias_variance",
        "bias_variance_dropout",
        "double_descent",
        "double_descent_quick",
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_job_of_every_experiment_composes_and_validates(compose, name):
    points = sweep_points(name)
    assert len(points) >= 2  # a comparison
    for point in points:
        compose(f"+experiment={name}", *point)


def results(compose, tmp_path, name: str, *extra: str) -> dict[str, dict]:
    """Run every job of experiment `name` (shortened by `extra`) in-process: summaries by job."""
    out = {}
    for point in sweep_points(name, seeds=False):
        conf = compose(f"+experiment={name}", *point, *extra)
        label = ",".join(point)
        with contextlib.redirect_stdout(io.StringIO()):
            out[label] = population.execute(conf, tmp_path / label.replace("/", "_"))
    return out


@pytest.mark.slow
def test_weight_decay_shrinks_the_weights_and_the_gap(compose, tmp_path):
    r = results(compose, tmp_path, "weight_decay", "train.epochs=600", "log.figure_every=0")
    plain, decayed = r["optim.weight_decay=0"], r["optim.weight_decay=1e-2"]
    assert decayed["weight_norm"] < 0.7 * plain["weight_norm"]
    gap = {k: s["final"]["valid_loss"] - s["final"]["train_loss"] for k, s in r.items()}
    assert gap["optim.weight_decay=1e-2"] < gap["optim.weight_decay=0"]
    assert decayed["final"]["train_loss"] > 10 * plain["final"]["train_loss"]


@pytest.mark.slow
def test_early_stopping_ends_at_the_best_valid_loss_near_the_initial_weights(compose, tmp_path):
    r = results(compose, tmp_path, "early_stopping", "train.epochs=600", "log.figure_every=0")
    plain = r["train.early_stop.patience=null,optim.weight_decay=0"]
    decayed = r["train.early_stop.patience=null,optim.weight_decay=1e-2"]
    stopped = r["train.early_stop.patience=100,optim.weight_decay=0"]
    assert stopped["stopped_epoch"] == stopped["best"]["epoch"] + 100 < 600
    assert "stopped_epoch" not in plain and plain["epochs"] == 600
    # It ends holding the best epoch's weights: the lowest valid loss of the three...
    ended = stopped["best"]["valid_loss"]
    assert ended < decayed["final"]["valid_loss"] < plain["final"]["valid_loss"]
    # ...which stayed near where they started, where decay pulls them towards 0.
    assert decayed["weight_norm"] < stopped["weight_norm"] < plain["weight_norm"]


@pytest.mark.slow
def test_dropout_keeps_the_net_from_fitting_every_point(compose, tmp_path):
    r = results(compose, tmp_path, "dropout", "train.epochs=600", "log.figure_every=0")
    plain, dropped = r["model.dropout=0"], r["model.dropout=0.5"]
    assert dropped["final"]["train_loss"] > 10 * plain["final"]["train_loss"]
    assert dropped["final"]["valid_loss"] < plain["final"]["valid_loss"]


@pytest.mark.slow
def test_bn_rescues_the_badly_initialized_cnn(compose, tmp_path):
    r = results(compose, tmp_path, "bn_cnn", "train.epochs=2")
    with_bn, without = r["norm=bn"]["final"], r["norm=none"]["final"]
    assert with_bn["valid_acc"] > 0.6  # learns within two epochs
    assert without["valid_acc"] < 0.3 and without["valid_loss"] > 2.2  # stalls near chance


@pytest.mark.slow
def test_l1_makes_weights_sparse_and_l2_shrinks_them(compose, tmp_path):
    r = results(compose, tmp_path, "l1_vs_l2", "train.epochs=600", "log.figure_every=0")
    none, l1, l2 = (
        r[k]["final"] for k in ("reg.l1=0,reg.l2=0", "reg.l1=1e-4,reg.l2=0", "reg.l1=0,reg.l2=1e-2")
    )
    assert l1["weights_sparsity"] > 3 * none["weights_sparsity"]
    assert l1["weights_sparsity"] > l2["weights_sparsity"]
    assert l2["weights_l2_norm"] < 0.6 * none["weights_l2_norm"]


@pytest.mark.slow
def test_momentum_and_adaptive_optimizers_beat_plain_gradient_descent(compose, tmp_path):
    r = results(compose, tmp_path, "optimizers", "train.epochs=3")
    loss = {k.split("=")[1]: s["final"]["train_loss"] for k, s in r.items()}
    assert loss["sgd"] < loss["gd"]
    assert max(loss["adam"], loss["rmsprop"], loss["adagrad"]) < loss["gd"]


def test_the_schedules_lower_the_lr_as_the_lesson_says(compose, tmp_path):
    r = results(compose, tmp_path, "lr_schedules", "train.epochs=25", "data.n_train=200")
    lr = {k.split("=")[1]: s["final"]["lr"] for k, s in r.items()}
    assert lr["none"] == 0.1
    assert lr["step"] == pytest.approx(0.08) and lr["multistep"] == pytest.approx(0.08)
    assert lr["exponential"] == pytest.approx(0.1 * 0.8**24)


@pytest.mark.slow
def test_every_norm_trains_the_cnn_faster_than_none(compose, tmp_path):
    r = results(compose, tmp_path, "norms", "train.epochs=2", "data.n_train=500")
    loss = {k.split("=")[1]: s["final"]["valid_loss"] for k, s in r.items()}
    assert loss["bn"] < loss["none"] and loss["gn"] < loss["none"] and loss["ln"] < loss["none"]


@pytest.mark.slow
def test_a_small_training_set_overfits(compose, tmp_path):
    r = results(compose, tmp_path, "overfitting", "train.epochs=120")
    small = r["data.n_train=100"]
    # The valid loss turned up: its best epoch is well before the last, and it rose since.
    assert small["best"]["epoch"] < 80
    assert small["final"]["valid_loss"] > 1.1 * small["best"]["valid_loss"]
    gap = {k: s["final"]["valid_loss"] - s["final"]["train_loss"] for k, s in r.items()}
    assert gap["data.n_train=100"] > 2 * gap["data.n_train=null"]
