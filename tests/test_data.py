"""The datasets in-process: shapes, dtypes, balance, seeds, the shared knobs."""

from __future__ import annotations

import math

import pytest
import torch

from regexp import data, errors

TOYS = ["moons", "circles", "spiral", "xor", "gauss"]


def load(compose, *overrides, seed=0):
    conf = compose(*overrides, f"seed={seed}")
    return data.load(conf.data, conf.seed)


def same(a: data.Dataset, b: data.Dataset) -> bool:
    keys = ("x_train", "y_train", "x_valid", "y_valid")
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in keys)


def test_toy_regression_is_the_lesson_24_data(compose):
    d = load(compose)
    assert d.task == "regression" and d.in_shape == (1,) and d.n_outputs == 1
    assert d.x_train.shape == d.y_train.shape == d.x_valid.shape == (10, 1)
    assert d.x_train.dtype == d.y_train.dtype == torch.float32
    assert torch.allclose(d.x_train[:, 0], torch.linspace(-1, 1, 10))
    assert torch.equal(d.x_train, d.x_valid)  # the same grid, their own noise
    assert not torch.equal(d.y_train, d.y_valid)


@pytest.mark.parametrize(
    "function,f",
    [("linear", lambda x: x), ("sin", lambda x: torch.sin(math.pi * x)), ("cubic", lambda x: x**3)],
)
def test_toy_regression_functions(compose, function, f):
    d = load(
        compose, f"data.function={function}", "data.noise_train=0", "data.w=2", "data.n_train=7"
    )
    assert d.x_train.shape == (7, 1)
    assert torch.allclose(d.y_train, 2 * f(d.x_train), atol=1e-6)


@pytest.mark.parametrize("name", TOYS)
def test_2d_toys_are_balanced_seeded_two_class_points(compose, name):
    d = load(compose, f"data={name}", "data.n_train=51", "data.n_valid=40")
    assert d.task == "classification" and d.in_shape == (2,) and d.n_outputs == 2
    assert d.x_train.shape == (51, 2) and d.x_valid.shape == (40, 2)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.y_train.bincount().tolist() == [26, 25] and d.y_valid.bincount().tolist() == [20, 20]
    assert d.x_train.abs().max() < 3  # about [-1, 1]^2
    assert same(d, load(compose, f"data={name}", "data.n_train=51", "data.n_valid=40"))
    assert not same(d, load(compose, f"data={name}", "data.n_train=51", "data.n_valid=40", seed=1))


def test_2d_toys_keep_their_valid_set_when_n_train_changes_and_noise_moves_points(compose):
    small, big = load(compose, "data=moons", "data.n_train=20"), load(compose, "data=moons")
    assert torch.equal(small.x_valid, big.x_valid)
    clean = load(compose, "data=circles", "data.noise=0")
    radius = clean.x_train.norm(dim=1)
    assert (radius[clean.y_train == 0] <= 0.5).all() and (radius[clean.y_train == 1] >= 0.7).all()
    noisy = load(compose, "data=circles", "data.noise=0.3").x_train.norm(dim=1)
    assert noisy.max() > 1.0


def test_digits_are_1x8x8_images_standardized_with_training_statistics(compose):
    d = load(compose, "data=digits")
    assert d.in_shape == (1, 8, 8) and d.n_outputs == 10
    assert d.x_train.shape == (1438, 1, 8, 8) and d.x_valid.shape == (359, 1, 8, 8)
    assert d.y_train.bincount().min() >= 139 and d.y_valid.bincount().min() >= 35  # stratified
    assert abs(d.x_train.mean()) < 1e-5 and abs(d.x_train.std() - 1) < 1e-3
    assert abs(d.x_valid.mean()) > 1e-4  # valid uses the training statistics, not its own
    raw = load(compose, "data=digits", "data.standardize=false")
    assert raw.x_train.min() == 0 and raw.x_train.max() == 1
    assert same(d, load(compose, "data=digits"))
    assert not torch.equal(d.y_train, load(compose, "data=digits", seed=1).y_train)


@pytest.mark.parametrize("name", ["toy_regression", "moons", "digits"])
def test_one_training_example_standardizes_to_finite_inputs(compose, name):
    d = load(compose, f"data={name}", "data.n_train=1", "data.standardize=true")
    assert d.x_train.shape[0] == 1
    assert torch.isfinite(d.x_train).all() and torch.isfinite(d.x_valid).all()


def test_n_train_is_an_exact_stratified_subsample(compose):
    full = load(compose, "data=digits", "data.standardize=false")
    d = load(compose, "data=digits", "data.standardize=false", "data.n_train=100")
    assert len(d.y_train) == 100 and torch.equal(d.x_valid, full.x_valid)
    expected = full.y_train.bincount() * 100 / len(full.y_train)
    assert ((d.y_train.bincount() - expected).abs() < 1).all()
    rows = {tuple(r.tolist()) for r in full.x_train.flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in d.x_train.flatten(1))  # a subset


def test_label_noise_replaces_that_share_of_training_labels_by_other_classes(compose):
    clean = load(compose, "data=digits", "data.n_train=500")
    noisy = load(compose, "data=digits", "data.n_train=500", "data.label_noise=0.3")
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.y_valid, noisy.y_valid)
    changed = clean.y_train != noisy.y_train
    assert changed.sum() == 150
    assert len(noisy.y_train[changed].unique()) == 10  # spread over the classes
    toy = load(compose, "data=xor", "data.label_noise=0.1")
    assert (toy.y_train != load(compose, "data=xor").y_train).sum() == 20


def test_n_train_beyond_the_training_set_is_refused(compose):
    with pytest.raises(errors.ConfigError) as info:
        load(compose, "data=digits", "data.n_train=5000")
    assert "at most 1438" in str(info.value) and info.value.key == "data.n_train"


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.label_noise=1.5", "data.label_noise"),
        ("data.valid_fraction=1", "data.valid_fraction"),
        ("data.n_train=0", "data.n_train"),
    ],
)
def test_digits_checks(compose, override, key):
    with pytest.raises(errors.ConfigError) as info:
        compose("data=digits", override)
    assert info.value.key == key


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["data=moons", "data.noise=-0.1"], "data.noise"),
        (["data=spiral", "data.n_valid=0"], "data.n_valid"),
        (["data.function=quartic"], "data.function"),
        (["data.noise_train=-1"], "data.noise_train"),
    ],
)
def test_toy_checks(compose, overrides, key):
    with pytest.raises(errors.ConfigError) as info:
        compose(*overrides)
    assert info.value.key == key
