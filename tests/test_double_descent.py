"""Double descent: the decomposition of the probabilities' squared error against sums done by
hand, the report of a width sweep from run dirs made here, and the quick experiment end to
end (slow), whose test error must peak at an inner width."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import regexp
from rich.console import Console

from regexp.analysis import double_descent, report
from regexp.run import predictions, rundir


def dirichlet(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(shape[-1]), shape[:-1])


def test_bias2_and_variance_add_up_to_the_expected_squared_error_exactly():
    probs, labels = dirichlet((6, 40, 5)), np.random.default_rng(1).integers(0, 5, 40)
    d = double_descent.decompose_probabilities(probs, labels)
    y = np.eye(5)[labels]
    by_hand = ((probs - y) ** 2).sum(-1).mean()  # E ||p - y||², over runs and inputs
    assert d.expected_error == pytest.approx(by_hand, rel=1e-12)
    assert d.bias2 + d.variance == pytest.approx(by_hand, rel=1e-12)
    mean = probs.mean(0)
    assert d.bias2 == pytest.approx(((mean - y) ** 2).sum(-1).mean(), rel=1e-12)
    assert d.variance_data is None and d.variance_init is None  # (no draws given)


def test_the_variance_splits_by_the_law_of_total_variance():
    draws, seeds = 3, 4
    probs = dirichlet((draws * seeds, 30, 4), seed=2)
    labels = np.arange(30) % 4
    names = [d for d in range(draws) for _ in range(seeds)]
    d = double_descent.decompose_probabilities(probs, labels, names)
    by_draw = probs.reshape(draws, seeds, 30, 4)
    init_mean = by_draw.mean(1)  # each draw's mean over its seeds
    # Var over draws of the init-mean; the mean over draws of the variance over seeds.
    data = ((init_mean - init_mean.mean(0)) ** 2).sum(-1).mean(0).mean()
    init = ((by_draw - init_mean[:, None]) ** 2).sum(-1).mean(1).mean(0).mean()
    assert d.variance_data == pytest.approx(data, rel=1e-12)
    assert d.variance_init == pytest.approx(init, rel=1e-12)
    assert d.variance_data + d.variance_init == pytest.approx(d.variance, rel=1e-12)


@pytest.mark.parametrize(
    ("value", "width"),
    [("[16]", 16), ("[32, 32]", 32), ("[8,16]", None), ("[]", None), ("relu", None),
     ("[1.5]", None), ("[true]", None), ("[[1]]", None), ("{}", None)],
)  # fmt: skip
def test_a_width_is_one_width_or_layers_of_equal_widths(value, width):
    assert double_descent.width_of(value) == width


def test_softmax_of_one_logit_is_the_pair_of_class_probabilities():
    p = double_descent.softmax(np.array([[0.0], [np.log(3)]]))
    assert p == pytest.approx(np.array([[0.5, 0.5], [0.25, 0.75]]))


LABELS = np.array([0, 1, 2, 0])


def logits(classes: list[int]) -> np.ndarray:
    """Logits that predict `classes` with probability about 0.9."""
    out = np.zeros((len(classes), 3))
    out[np.arange(len(classes)), classes] = np.log(18)
    return out


def make_run(sweep, width, decay: float | None, draw: int, seed: int, predicted, train_acc):
    """A run dir as a finished sweep job leaves it, for what the report reads."""
    overrides = [f"model.hidden=[{width}]", f"optim.weight_decay={decay}", f"data.draw={draw}",
                 f"seed={seed}"]  # fmt: skip
    if decay is None:  # (λ neither swept nor given)
        del overrides[1]
    run = sweep / ",".join(o.split(".")[-1] for o in overrides)
    params = 10 * width if isinstance(width, int) else 80  # (a made-up count)
    (run / ".hydra").mkdir(parents=True)
    rundir.write_summary(
        run,
        {"status": "completed", "epochs": 5, "params": params, "overrides": overrides,
         "final": {"train_loss": 0.1, "valid_loss": 1.0, "train_acc": train_acc}},
    )  # fmt: skip
    out = logits(predicted)
    predictions.write(run, predictions.Predictions(out, out, (5, 5), LABELS))


# Per width (λ = 0): each replica's predicted classes (draw, seed) and train accuracy. The
# middle width errs most, each replica elsewhere: their averaged probabilities are all right.
WIDTHS = {
    2: ([[0, 1, 2, 1]] * 4, 0.5),
    4: ([[1, 1, 2, 0], [0, 2, 2, 0], [0, 1, 0, 0], [2, 1, 2, 1]], 1.0),
    8: ([[0, 1, 2, 0]] * 3 + [[0, 1, 2, 2]], 1.0),
}


def test_a_width_sweep_report_writes_the_curve_its_figure_and_a_verdict(tmp_path):
    sweep = tmp_path / "sweep"
    for width, (replicas, acc) in WIDTHS.items():
        for i, predicted in enumerate(replicas):
            make_run(sweep, width, 0.0, i // 2, i % 2, predicted, acc)
            make_run(sweep, width, 0.1, i // 2, i % 2, [0, 1, 2, 1], 0.75)  # a flat curve
    report.write_report([sweep])
    with open(sweep / "double_descent.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == double_descent.COLUMNS
    assert [(r["weight_decay"], r["width"]) for r in rows] == [
        ("0.0", "2"), ("0.0", "4"), ("0.0", "8"), ("0.1", "2"), ("0.1", "4"), ("0.1", "8"),
    ]  # fmt: skip
    middle = rows[1]
    errors = [0.25, 0.25, 0.25, 0.5]  # of the four replicas at width 4
    assert float(middle["test_error"]) == pytest.approx(np.mean(errors))
    assert float(middle["test_error_std"]) == pytest.approx(np.std(errors, ddof=1))
    assert float(middle["ensemble_error"]) == 0
    assert float(middle["train_error"]) == 0 and middle["params"] == "40"
    for r in rows:
        assert float(r["bias2"]) + float(r["variance"]) >= 0
        assert float(r["variance_data"]) + float(r["variance_init"]) == pytest.approx(
            float(r["variance"])
        )
    assert float(rows[3]["variance"]) == pytest.approx(0, abs=1e-12)  # identical replicas
    verdict = (sweep / "report.md").read_text().splitlines()[0]
    assert verdict.startswith("double descent (λ=0): the test error peaks at width 4 (40 params,")
    assert "the train error reaches 0 at width 4" in verdict
    assert "the variance peaks at width 4" in verdict
    assert "λ=0.1 lowers it to 0.25" in verdict
    assert "the ensemble of 4 replicas errs 0 at the peak (0.3125 below" in verdict
    assert (sweep / "double_descent.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # (the 0-1 decomposition of each setting, beside it, has no number to draw against)
    claim = (sweep / "bias_variance.md").read_text().splitlines()[0]
    assert claim == "6 settings, no swept number to draw the terms against"


def test_a_width_sweep_at_the_configs_own_decay_is_one_curve(tmp_path):
    sweep = tmp_path / "sweep"
    for width, (replicas, acc) in WIDTHS.items():
        for i, predicted in enumerate(replicas):
            make_run(sweep, width, None, i // 2, i % 2, predicted, acc)
    report.write_report([sweep])
    with open(sweep / "double_descent.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["weight_decay"], r["width"]) for r in rows] == [("", "2"), ("", "4"), ("", "8")]
    verdict = (sweep / "report.md").read_text().splitlines()[0]
    assert verdict.startswith("double descent (the runs): the test error peaks at width 4")
    assert (sweep / "double_descent.png").is_file()


def test_a_run_with_a_damaged_predictions_file_is_left_out_of_the_curve_and_named(tmp_path):
    sweep = tmp_path / "sweep"
    for width, (replicas, acc) in WIDTHS.items():
        for i, predicted in enumerate(replicas):
            make_run(sweep, width, None, i // 2, i % 2, predicted, acc)
    damaged = next(sweep.glob("hidden=[[]4],draw=0,seed=0"))
    rundir.predictions_file(damaged).write_bytes(b"not an npz")
    console = Console(record=True, width=200)
    report.write_report([sweep], console=console)
    assert f"left out of double descent {damaged}: predictions.npz" in console.export_text()
    with open(sweep / "double_descent.csv", newline="") as f:
        middle = list(csv.DictReader(f))[1]
    errors = [0.25, 0.25, 0.5]  # the three runs left at width 4
    assert float(middle["test_error"]) == pytest.approx(np.mean(errors))


@pytest.mark.parametrize("widths", [(4, 4), (4, "4,4")])
def test_a_sweep_of_something_else_than_widths_of_one_depth_gets_no_curve(tmp_path, widths):
    """λ alone, or nets of one and of two layers: no curve of widths."""
    sweep = tmp_path / "sweep"
    for seed in (0, 1):
        make_run(sweep, widths[0], 0.0, 0, seed, [0, 1, 2, 0], 1.0)
        make_run(sweep, widths[1], 0.1, 0, seed, [0, 1, 2, 0], 1.0)
    report.write_report([sweep])
    assert (sweep / "report.md").is_file() and not (sweep / "double_descent.csv").exists()


@pytest.mark.slow
def test_the_quick_experiment_shows_a_peak_at_an_inner_width(tmp_path):
    regexp("train", "-m", "+experiment=double_descent_quick", "hydra.sweep.dir=sweep",
           cwd=tmp_path, process=True)  # fmt: skip
    regexp("report", "sweep", cwd=tmp_path)
    with open(tmp_path / "sweep" / "double_descent.csv", newline="") as f:
        rows = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    curve = [r for r in rows if r["weight_decay"] == 0]
    errors = [r["test_error"] for r in curve]
    peak = int(np.argmax(errors))
    assert 0 < peak < len(curve) - 1, errors
    spread = curve[peak]["test_error_std"]
    assert errors[peak] - errors[0] > spread and errors[peak] - errors[-1] > spread, curve
    assert curve[-1]["train_error"] == 0
    # the peak is variance, which the ensemble averages away
    assert max(curve, key=lambda r: r["variance"]) is curve[peak]
    assert curve[peak]["ensemble_error"] < errors[peak] - spread
    summary = json.loads((next((tmp_path / "sweep").glob("*/summary.json"))).read_text())
    assert summary["status"] == "completed"


def curve(errors, stds, variances, train=(0.5, 0.0, 0.0)) -> list:
    return [
        double_descent.Point(0.0, w, None, t, e, s, 0.1, v, None, None, e / 2, 4)
        for w, e, s, v, t in zip((2, 4, 8), errors, stds, variances, train, strict=True)
    ]


@pytest.mark.parametrize(
    ("points", "says"),
    [
        (curve([0.2, 0.3, 0.1], [0.01] * 3, [0.1, 0.2, 0.1]),
         ["peaks at width 4 (0.3 ± 0.01), 0.2 above the widest (width 8, 0.1), more than the "
          "replicas' spread (0.01)", "the variance peaks at width 4 (0.2)"]),
        (curve([0.2, 0.3, 0.25], [0.1] * 3, [0.1, 0.2, 0.3]),
         ["0.05 above the widest (width 8, 0.25), within the replicas' spread (0.1)",
          "the variance peaks at width 8 (0.3, against 0.2 at the test error's peak)"]),
        (curve([0.3, 0.2, 0.1], [0.01] * 3, [0.1] * 3, train=(0.5, 0.1, 0.01)),
         ["no peak at an inner width, the test error is highest at width 2 (0.3)"]),
        (curve([0.2, 0.3, 0.1], [0.01] * 3, [0.1] * 3, train=(0.5, 0.1, 0.01)),
         ["the train error reaches 0 at no width"]),
    ],
)  # fmt: skip
def test_the_verdict_says_what_the_numbers_show(points, says):
    verdict = double_descent.descent_verdict(points)
    assert verdict.startswith("double descent (λ=0): ")
    assert "; " not in verdict  # (the report's verdict goes on after a semicolon)
    for part in says:
        assert part in verdict
