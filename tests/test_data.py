"""The datasets in-process: shapes, dtypes, balance, seeds, the shared knobs."""

from __future__ import annotations

import math

import pytest
import torch

from regexp import errors
from regexp.components import data

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


@pytest.mark.slow
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


# --- data.draw: which training set a run draws ------------------------------------------------

# One config per kind of dataset, small enough to compare whole.
DRAWN = {
    "toy_regression": [],
    "moons": ["data=moons", "data.n_train=40", "data.n_valid=30"],
    "digits": ["data=digits", "data.n_train=200", "data.standardize=false"],
}


@pytest.mark.slow
def test_draw_null_is_todays_data_number_for_number(compose):
    """Numbers the data gave before data.draw existed: a default run's data must not move."""
    d = load(compose)
    assert d.y_train[:3, 0].tolist() == pytest.approx([-0.7295020, -1.3133812, -1.9227281])
    assert d.y_valid[:3, 0].tolist() == pytest.approx([-1.6789906, -1.1120558, -1.0903357])
    assert same(d, load(compose, "data.draw=null"))
    d = load(compose, "data.function=sin", seed=7)
    assert d.y_train[:2, 0].tolist() == pytest.approx([-0.0733974, -0.5711105], abs=1e-6)
    assert d.y_valid[:2, 0].tolist() == pytest.approx([0.0953036, -0.9243391], abs=1e-6)
    d = load(compose, "data=moons", "data.label_noise=0.1")
    assert d.x_train[0].tolist() == pytest.approx([-1.0342549, 0.5643324])
    assert d.x_valid[0].tolist() == pytest.approx([-1.4994081, -0.1886394])
    assert d.y_train[:12].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    d = load(compose, "data=digits", "data.n_train=100", "data.label_noise=0.2")
    assert d.y_train[:12].tolist() == [1, 2, 0, 2, 7, 4, 5, 8, 5, 5, 1, 2]
    assert d.y_valid[:12].tolist() == [5, 9, 2, 4, 6, 7, 9, 3, 4, 6, 8, 5]
    raw = load(compose, "data=digits", "data.n_train=100", "data.standardize=false")
    assert raw.x_train.sum().item() * 16 == pytest.approx(1943.125 * 16)


@pytest.mark.slow
@pytest.mark.parametrize("name", DRAWN)
def test_draws_resample_the_training_set_and_keep_seed_0s_valid_set(compose, name):
    conf = DRAWN[name]
    d3 = load(compose, *conf, "data.draw=3")
    d4 = load(compose, *conf, "data.draw=4")
    assert not (torch.equal(d3.x_train, d4.x_train) and torch.equal(d3.y_train, d4.y_train))
    for seed in (0, 1, 9):  # the seed no longer moves the data: the draw does
        assert same(d3, load(compose, *conf, "data.draw=3", seed=seed))
    seed0 = load(compose, *conf)
    for draw in (3, 4):
        for seed in (0, 5):
            d = load(compose, *conf, f"data.draw={draw}", seed=seed)
            assert torch.equal(d.x_valid, seed0.x_valid) and torch.equal(d.y_valid, seed0.y_valid)
    # draw 0 is seed 0's data, whatever the seed; a run of seed 0 without a draw is one of them
    assert same(load(compose, *conf, "data.draw=0", seed=7), seed0)
    if name != "digits":  # a toy draw is the training set of that seed (digits: seed 0's split)
        seed3 = load(compose, *conf, seed=3)
        assert torch.equal(d3.x_train, seed3.x_train) and torch.equal(d3.y_train, seed3.y_train)


def test_toy_regression_draws_are_fresh_noise_on_the_fixed_grid(compose):
    a, b = load(compose, "data.draw=1"), load(compose, "data.draw=2")
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.y_train, b.y_train)


def test_2d_toy_draws_are_fresh_points_of_the_same_balance(compose):
    a, b = (load(compose, *DRAWN["moons"], f"data.draw={d}") for d in (1, 2))
    assert not torch.equal(a.x_train, b.x_train)
    assert a.y_train.bincount().tolist() == b.y_train.bincount().tolist() == [20, 20]


@pytest.mark.slow
def test_digits_draws_are_stratified_subsamples_of_seed_0s_training_split(compose):
    pool = load(compose, "data=digits", "data.standardize=false")  # seed 0's split
    rows = {tuple(r.tolist()) for r in pool.x_train.flatten(1)}
    expected = pool.y_train.bincount() * 200 / len(pool.y_train)
    picks = []
    for draw in (1, 2, 3):
        d = load(compose, *DRAWN["digits"], f"data.draw={draw}", seed=4)
        assert len(d.y_train) == 200 and ((d.y_train.bincount() - expected).abs() < 1).all()
        assert all(tuple(r.tolist()) in rows for r in d.x_train.flatten(1))  # never a valid digit
        picks.append({tuple(r.tolist()) for r in d.x_train.flatten(1)})
    assert picks[0] != picks[1] != picks[2]


def test_mnist_draws_are_stratified_subsamples_of_its_training_files(compose, tmp_path):
    from test_files import idx_set

    arrays = idx_set(tmp_path, n=(60, 20))
    conf = [f"data.root={tmp_path}", "data=mnist", "data.standardize=false", "data.n_train=20"]
    seed0 = load(compose, *conf)
    assert seed0.y_train.tolist()[:8] == [7, 9, 5, 8, 0, 2, 5, 8]  # seed 0's pick, as before
    assert seed0.x_train.sum().item() * 255 == pytest.approx(7808.1221 * 255, rel=1e-6)
    draws = [load(compose, *conf, f"data.draw={d}", seed=2) for d in (1, 2)]
    images = {arr.tobytes() for arr in arrays["train-images-idx3-ubyte"]}
    for d in draws:
        assert d.y_train.bincount().tolist() == [2] * 10  # stratified: 2 of each digit
        assert torch.equal(d.x_valid, seed0.x_valid)  # the test files
        pixels = (d.x_train[:, 0] * 255).round().to(torch.uint8).numpy()
        assert all(p.tobytes() in images for p in pixels)
    assert not torch.equal(draws[0].x_train, draws[1].x_train)
    assert same(draws[0], load(compose, *conf, seed=1))  # draw 1 is seed 1's training set


@pytest.mark.slow
def test_label_noise_is_drawn_with_the_draw(compose):
    conf = ["data=digits", "data.n_train=300", "data.label_noise=0.2"]
    clean = [load(compose, *conf[:2], f"data.draw={d}") for d in (1, 2)]
    noisy = [load(compose, *conf, f"data.draw={d}", seed=s) for d, s in ((1, 0), (2, 0), (1, 6))]
    flips = [
        (n.y_train != c.y_train).nonzero().flatten()
        for n, c in zip(noisy, clean + clean[:1], strict=True)
    ]
    assert all(len(f) == 60 for f in flips)  # exactly that share, in every draw
    assert not torch.equal(flips[0], flips[1])  # each draw its own flips
    assert torch.equal(flips[0], flips[2]) and same(noisy[0], noisy[2])  # whatever the seed
    toy = [
        load(compose, "data=xor", "data.label_noise=0.1", f"data.draw={d}").y_train
        != load(compose, "data=xor", f"data.draw={d}").y_train
        for d in (1, 2)
    ]
    assert toy[0].sum() == toy[1].sum() == 20 and not torch.equal(toy[0], toy[1])


def test_a_draw_of_the_whole_training_pool_needs_label_noise_to_draw(compose):
    with pytest.raises(errors.ConfigError) as info:
        load(compose, "data=digits", "data.draw=1")
    assert info.value.key == "data.draw" and "set data.n_train below 1438" in str(info.value)
    with pytest.raises(errors.ConfigError):
        load(compose, "data=digits", "data.draw=1", "data.n_train=1438")
    # with label noise, a draw of all 1438 is seed 0's split with its own noisy labels
    a, b = (load(compose, "data=digits", "data.label_noise=0.1", f"data.draw={d}") for d in (1, 2))
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.y_train, b.y_train)


@pytest.mark.parametrize("value", ["-1", "4294967296"])
def test_a_draw_is_null_or_a_seed(compose, value):
    with pytest.raises(errors.ConfigError) as info:
        compose(f"data.draw={value}")
    assert info.value.key == "data.draw"
    assert compose("data.draw=4294967295").data.draw == 2**32 - 1


# --- what the data knows of its valid targets -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("function", ["linear", "sin", "cubic"])
def test_toy_regression_knows_f_of_x_and_the_noise_std_of_its_valid_set(compose, function):
    d = load(compose, f"data.function={function}", "data.w=2", "data.n_valid=400")
    f = {"linear": lambda x: x, "sin": lambda x: torch.sin(math.pi * x), "cubic": lambda x: x**3}
    f = f[function]
    assert d.valid_target.shape == d.y_valid.shape and d.valid_noise == 0.3
    assert torch.allclose(d.valid_target, 2 * f(d.x_valid), atol=1e-6)
    residual = d.y_valid - d.valid_target
    assert abs(residual.std().item() - 0.3) < 0.04 and abs(residual.mean().item()) < 0.04
    clean = load(compose, f"data.function={function}", "data.noise_valid=0")
    assert torch.equal(clean.y_valid, clean.valid_target) and clean.valid_noise == 0
    # standardized inputs: f is of the raw x, which the valid set shares with every draw
    drawn = load(compose, f"data.function={function}", "data.standardize=true", "data.draw=2")
    assert torch.equal(drawn.valid_target, load(compose, f"data.function={function}").valid_target)


def test_only_the_data_that_knows_its_targets_says_them_and_to_keeps_them(compose):
    for overrides in (["data=moons"], ["data=digits"]):
        d = load(compose, *overrides)
        assert d.valid_target is None and d.valid_noise is None
        assert d.to(torch.device("cpu")).valid_target is None
    d = load(compose)
    moved = d.to(torch.device("cpu"))
    assert torch.equal(moved.valid_target, d.valid_target) and moved.valid_noise == d.valid_noise
    assert same(moved, d) and moved.task == d.task and moved.in_shape == d.in_shape


@pytest.mark.slow
def test_a_run_with_a_draw_trains_and_records(tmp_path):
    from conftest import TINY, read_json, regexp

    regexp("train", "data.draw=3", "seed=1", *TINY, "hydra.run.dir=run", cwd=tmp_path)
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["status"] == "completed" and summary["epochs"] == 5
    assert "data.draw=3" in summary["overrides"]
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 1 + 5
