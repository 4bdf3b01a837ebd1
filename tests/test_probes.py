"""`regexp probe`: the lessons' demonstrations give the lessons' numbers."""

from __future__ import annotations

import math

import pytest
from conftest import regexp

from regexp import cli, probes


def probe(compose, name, *overrides):
    given = {o.split("=", 1)[0] for o in overrides}
    return probes.PROBES[name](compose(*overrides), given)


def test_dropout_keeps_the_expected_output_in_train_mode_and_is_off_in_eval(compose):
    result = probe(compose, "dropout")
    for p, outputs in result.figure["outputs"].items():
        mean = sum(outputs) / len(outputs)
        assert abs(mean - 10000) < 0.02 * 10000, p  # about (1-p) survive, scaled by 1/(1-p)
        assert len(set(outputs)) > 1  # a new mask each draw
    rows = result.tables[0].columns[-1]._cells
    assert set(rows) == {"10000.0"}  # eval mode: exactly the input sum
    only = probe(compose, "dropout", "model.dropout=0.3")
    assert list(only.figure["outputs"]) == [0.3]


def test_norm_running_statistics_follow_the_momentum(compose):
    result = probe(compose, "norm")
    for layer in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"):
        means, variances = result.figure["trajectories"][layer]
        assert [round(m, 4) for m in means] == [0.0, 0.6, 1.02]
        assert [round(v, 4) for v in variances] == [1.0, 0.7, 0.49]
    shapes = dict(
        zip(result.tables[1].columns[0]._cells, result.tables[1].columns[2]._cells, strict=True)
    )
    assert shapes["LayerNorm([6, 3, 4])"] == "(6, 3, 4)"
    assert shapes["GroupNorm(3, 6)"] == "(6,)" and shapes["BatchNorm2d(6)"] == "(6,)"
    assert shapes["GroupNorm(4, 6)"] == "-"  # 6 channels do not divide into 4 groups
    tuned = probe(compose, "norm", "norm=bn", "norm.momentum=0.5")
    assert [round(m, 4) for m in tuned.figure["trajectories"]["BatchNorm1d"][0]] == [0, 1, 1.5]


def test_depth_the_signal_vanishes_explodes_or_holds_as_the_lesson_says(compose):
    curves = probe(compose, "depth").figure["curves"]
    default, normal, kaiming = (
        curves[k][0] for k in ("default", "normal(std=1)", "kaiming_normal")
    )
    assert default[-1] < 1e-20 * default[0]  # vanishes
    nan_at = next(i for i, s in enumerate(normal) if not math.isfinite(s))
    assert 10 < nan_at < 100 and normal[nan_at - 1] > 1e20  # explodes, then NaN
    assert all(0.1 < s < 2 for s in kaiming)  # roughly constant
    for label in ("default + bn", "normal(std=1) + bn", "kaiming_normal + bn"):
        stds = curves[label][0]
        assert max(stds) / min(stds) < 1.2  # constant whatever the init


def test_depth_takes_an_init_override(compose):
    curves = probe(compose, "depth", "init=xavier_normal", "norm=none").figure["curves"]
    assert list(curves) == ["xavier_normal"]


def test_probe_command_prints_a_table_and_writes_a_png(tmp_path):
    done = regexp("probe", "norm", cwd=tmp_path)
    assert "1.02" in done.stdout and "0.49" in done.stdout
    png = tmp_path / "outputs" / "probes" / "norm.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    refused = regexp("probe", "nope", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "invalid choice: 'nope'" in refused.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["dropout", "init=normal"], "init=normal: probe dropout does not use init"),
        (["norm", "norm=gn"], "norm=gn is not allowed: bn"),
    ],
)
def test_a_probe_refuses_overrides_it_would_ignore(tmp_path, capsys, args, message):
    assert cli.main(["probe", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_optim_first_steps_are_the_lessons(compose, capsys):
    paths = probe(compose, "optim").figure["paths"]
    assert [round(w, 4) for w in paths["SGD lr 0.01"][1:3]] == [0.99, 0.9801]
    assert [round(w, 4) for w in paths["SGD lr 0.01 momentum 0.9"][1:3]] == [0.99, 0.9711]
    assert round(paths["Adagrad lr 0.01"][1], 4) == 0.99
    assert round(paths["RMSprop lr 0.01 alpha 0.9"][1], 4) == 0.0684
    only = probe(compose, "optim", "optim=adam", "optim.lr=0.1").figure["paths"]
    assert list(only) == ["adam"] and round(only["adam"][1], 4) == 0.9  # Adam's first step: lr


def test_lr_schedules_are_the_lessons(compose):
    curves = probe(compose, "lr").figure["curves"]
    step, multistep, exponential = curves.values()
    assert len(step) == 200 and step[0] == 0.1
    assert step[19] == 0.1 and round(step[20], 6) == 0.08 and round(step[40], 6) == 0.064
    assert round(multistep[59], 6) == 0.08 and round(multistep[60], 6) == 0.064
    assert round(exponential[1], 6) == 0.08 and round(exponential[2], 6) == 0.064
    cosine = probe(compose, "lr", "sched=cosine", "train.epochs=10").figure["curves"]
    assert list(cosine) == ["cosine"] and len(cosine["cosine"]) == 10


def test_probe_optim_prints_the_lessons_numbers(tmp_path):
    out = regexp("probe", "optim", cwd=tmp_path).stdout
    assert "0.9711" in out and "0.0684" in out and "0.9801" in out
