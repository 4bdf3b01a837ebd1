"""Bias, variance and noise: the decomposition against numbers known by construction and by
hand, its identity on a real population, and `regexp report` writing it for a sweep."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import regexp

from regexp import config
from regexp.analysis import bias_variance, report
from regexp.run import population


def test_constant_offsets_and_a_known_spread_give_their_bias_and_variance_exactly():
    f = np.linspace(-1, 1, 7)[:, None]
    e = np.array([0.3, -0.1, 0.2, 0.0, -0.4, 0.1, 0.5])[:, None]
    y = f + e
    # four runs: f + 0.25 (the offset: bias) ± 0.5 (the spread: variance), two on each side
    runs = np.stack([f + 0.25 + s for s in (0.5, -0.5, 0.5, -0.5)])
    d = bias_variance.regression(runs, y, f, noise_std=0.3)
    assert d.bias2 == pytest.approx(0.0625, abs=1e-9)
    assert d.variance == pytest.approx(0.25, abs=1e-9)
    assert d.noise == pytest.approx(float((e**2).mean()), abs=1e-9)
    assert d.noise_var == pytest.approx(0.09)
    by_hand = float(((runs - y) ** 2).mean())
    assert d.expected_error == pytest.approx(by_hand, abs=1e-9)
    # the difference is the cross term 2 mean_x (f̄ − f)(f − y) = 2 * 0.25 * mean(-e)
    assert d.difference == pytest.approx(2 * 0.25 * float(-e.mean()), abs=1e-9)
    # without the noise-free target, y stands for f: no noise, no cross term
    alone = bias_variance.regression(runs, y)
    assert alone.noise == 0 and alone.difference == pytest.approx(0, abs=1e-12)
    assert alone.bias2 == pytest.approx(float(((0.25 - e) ** 2).mean()), abs=1e-9)


def test_the_variance_splits_into_the_training_set_part_and_the_initialization_part():
    f = np.zeros((5, 1))
    # draw A sits at +0.3, draw B at -0.3 (data part 0.09); seeds at ±0.2 within (init 0.04)
    runs, draws = [], []
    for draw, at in (("A", 0.3), ("B", -0.3)):
        for seed in (0.2, -0.2):
            runs.append(f + at + seed)
            draws.append(draw)
    d = bias_variance.regression(np.stack(runs), f, f, draws)
    assert d.variance_data == pytest.approx(0.09, abs=1e-9)
    assert d.variance_init == pytest.approx(0.04, abs=1e-9)
    assert d.variance_data + d.variance_init == pytest.approx(d.variance, abs=1e-12)
    assert d.bias2 == pytest.approx(0, abs=1e-12)


def test_domingos_terms_on_a_hand_made_case():
    labels = np.array([0, 1, 1, 0])
    predicted = np.array(
        [
            [0, 1, 0, 1],  # run 1
            [0, 0, 0, 1],  # run 2
            [1, 1, 0, 1],  # run 3
        ]
    )
    # main prediction by point: 0, 1, 0, 1 -> biased at points 2 and 3 (bias 0.5)
    # variance: 1/3, 1/3, 0, 0 -> 1/6; it hurts at points 0 and 1 (unbiased): (1/3 + 1/3) / 4
    # at the biased points no run is right: it helps by 0
    d = bias_variance.decompose_classification(predicted, labels)
    assert d.bias2 == pytest.approx(0.5)
    assert d.variance == pytest.approx(1 / 6)
    assert d.variance_hurts == pytest.approx(1 / 6) and d.variance_helps == 0
    assert d.expected_error == pytest.approx(2 / 3)  # (1/3 + 1/3 + 1 + 1) / 4
    assert d.difference == pytest.approx(0, abs=1e-12)
    # three classes: at a biased point a run that disagrees with the main prediction may be
    # right (it helps) or wrong again (it doesn't)
    d = bias_variance.decompose_classification(np.array([[2], [2], [0], [1]]), np.array([0]))
    assert d.bias2 == 1 and d.variance == pytest.approx(0.5)
    assert d.variance_helps == pytest.approx(0.25) and d.expected_error == pytest.approx(0.75)
    assert d.difference == pytest.approx(0, abs=1e-12)


@pytest.mark.slow
def test_on_a_real_population_the_terms_add_up_to_the_expected_error(tmp_path):
    base = [
        "train.epochs=60",
        "model.hidden=[16,16]",
        "data.n_valid=400",  # enough valid points for the cross term to average out
        "log.figure_every=0",
        "log.hist_every=0",
    ]
    varied = [[f"seed={s}", f"data.draw={d}"] for s in (0, 1) for d in (1, 2, 3)]
    members = [
        population.Member(config.validate(config.compose([*base, *v])), tmp_path / "_".join(v), v)
        for v in varied
    ]
    assert all(s["status"] == "completed" for s in population.execute_population(members))
    runs = [report.read_run(m.run_dir) for m in members]
    for r, v in zip(runs, varied, strict=True):
        r.overrides = report._parse(v)
    reps = report.replicas(runs, report.swept_keys(runs))
    (result,) = [bias_variance.decompose(g, reps.replica_keys) for g in reps.groups]
    d = result.decomposition
    assert d.n == 6 and d.noise == pytest.approx(0.09, rel=0.2)  # noise_valid 0.3
    assert d.expected_error == pytest.approx(d.bias2 + d.variance + d.noise, rel=0.05)
    assert d.variance_data + d.variance_init == pytest.approx(d.variance, rel=1e-9)
    p = np.stack([q.last for q in result.runs]).astype(np.float64)
    y, f = result.runs[0].y.astype(np.float64), result.runs[0].target.astype(np.float64)
    assert d.expected_error == pytest.approx(float(((p - y) ** 2).mean()), rel=1e-9)
    assert d.difference == pytest.approx(2 * float(((p.mean(0) - f) * (f - y)).mean()), abs=1e-9)
    # Over the input range, against the truth on the figure's grid, nothing is left over.
    exact = result.on_range
    assert result.lead is exact and exact.noise == exact.noise_var == pytest.approx(0.09)
    assert exact.difference == pytest.approx(0, abs=1e-12 * exact.expected_error)
    assert exact.variance_data + exact.variance_init == pytest.approx(exact.variance, rel=1e-9)
    # The figure's grid runs past the inputs' range [-1, 1] (as standardized) on both sides;
    # the decomposition takes the points inside it, where the truth is 1.5 x.
    first = result.runs[0]
    inside = (first.grid_x[:, 0] >= first.x.min()) & (first.grid_x[:, 0] <= first.x.max())
    assert first.grid_target.shape == (200, 1) and 100 < inside.sum() < 200
    truth = first.grid_target[inside].astype(np.float64)
    assert truth.min() == pytest.approx(-1.5, abs=0.02) and truth.max() == pytest.approx(
        1.5, abs=0.02
    )
    grids = np.stack([q.grid[inside] for q in result.runs]).astype(np.float64)
    assert exact.bias2 == pytest.approx(float(((grids.mean(0) - truth) ** 2).mean()), rel=1e-9)


def test_over_the_range_the_terms_are_known_offsets_and_spreads_and_add_up_exactly():
    f = np.sin(np.linspace(-3, 3, 50))[:, None]
    runs = np.stack([f + 0.1 + s for s in (0.2, -0.2, 0.2, -0.2)])
    d = bias_variance.over_range(runs, f, noise_std=0.5)
    assert d.bias2 == pytest.approx(0.01) and d.variance == pytest.approx(0.04)
    assert d.noise == 0.25 and d.expected_error == pytest.approx(0.3)
    assert d.difference == pytest.approx(0, abs=1e-15)


@pytest.mark.slow
def test_report_of_a_stacked_sweep_over_seeds_and_draws_decomposes_each_setting(tmp_path):
    regexp(
        "train", "-m", "hydra/launcher=stacked", "train.epochs=20", "model.hidden=[8]",
        "log.figure_every=0", "log.hist_every=0", "seed=0,1", "data.draw=1,2",
        "optim.weight_decay=0,1e-1", "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    done = regexp("report", "sweep", cwd=tmp_path)
    sweep = tmp_path / "sweep"
    assert "8 runs: 2 settings over seed x data.draw" in done.stdout
    with open(sweep / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["n"] for r in rows} == {"4"}
    assert {"valid loss", "valid loss std", "valid loss ci95"} <= set(rows[0])
    verdict = (sweep / "report.md").read_text().splitlines()[0]
    assert "weight_decay 0 -> 0.1: valid loss" in verdict and "of 4 runs, by" in verdict
    with open(sweep / "bias_variance.csv", newline="") as f:
        terms = list(csv.DictReader(f))
    # Each setting over the input range (exact), then on the valid set (with its cross term).
    assert [(t["optim.weight_decay"], t["on"]) for t in terms] == [
        ("0.0", "range"), ("0.0", "valid"), ("0.1", "range"), ("0.1", "valid"),
    ]  # fmt: skip
    for t in terms[::2]:
        assert float(t["difference"]) == pytest.approx(0, abs=1e-12)
        assert float(t["noise"]) == pytest.approx(0.09)
    for t in terms:
        assert t["n"] == "4" and t["task"] == "regression"
        parts = float(t["bias2"]) + float(t["variance"]) + float(t["noise"])
        assert float(t["sum"]) == pytest.approx(parts)
        assert float(t["variance_data"]) + float(t["variance_init"]) == pytest.approx(
            float(t["variance"])
        )
    assert "variance" in (sweep / "bias_variance.md").read_text().splitlines()[0]
    for png in ("curves.png", "bias_variance.png", "fits.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


@pytest.mark.slow
def test_a_2d_population_gets_domingos_terms_and_its_boundaries_drawn(tmp_path):
    base = ["data=moons", "data.n_valid=200", "train.epochs=10", "model.hidden=[8]",
            "log.figure_every=0", "log.hist_every=0"]  # fmt: skip
    varied = [[f"data.draw={d}"] for d in (1, 2, 3)]
    members = [
        population.Member(
            config.validate(config.compose([*base, *v])), tmp_path / "sweep" / v[0], v
        )
        for v in varied
    ]
    population.execute_population(members)
    for m in members:  # as Hydra leaves them: the overrides are what makes them replicas
        (m.run_dir / ".hydra").mkdir()
        (m.run_dir / ".hydra" / "overrides.yaml").write_text(f"- {m.overrides[0]}\n")
    report.write_report([tmp_path / "sweep"])
    with open(tmp_path / "sweep" / "bias_variance.csv", newline="") as f:
        (terms,) = list(csv.DictReader(f))
    assert terms["task"] == "classification" and terms["n"] == "3"
    total = float(terms["bias2"]) + float(terms["variance_hurts"]) - float(terms["variance_helps"])
    assert float(terms["expected_error"]) == pytest.approx(total)
    assert (tmp_path / "sweep" / "fits.png").stat().st_size > 5000


def test_a_report_never_mixes_the_range_and_the_valid_decompositions():
    """A setting without the range decomposition (a run's grid not finite, an older run's
    predictions) takes it from every setting: one table, one curve, of one kind."""
    f = np.zeros((5, 1))
    d = bias_variance.regression(np.stack([f + 0.1, f - 0.1]), f, f)
    exact = bias_variance.over_range(np.stack([f + 0.1, f - 0.1]), f, 0.3)
    both = bias_variance.SettingDecomposition({"optim.weight_decay": 0.0}, d, [], on_range=exact)
    valid_only = bias_variance.SettingDecomposition({"optim.weight_decay": 0.1}, d, [])
    assert both.lead is exact
    results = bias_variance.one_kind([both, valid_only])
    assert [r.lead for r in results] == [d, d]
    kept = bias_variance.SettingDecomposition({}, d, [], on_range=exact)
    assert bias_variance.one_kind([kept])[0].lead is exact
