"""`regexp probe`: the lessons' demonstrations give the course's numbers, to the digits the
course prints."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import regexp

from regexp import cli, probes


def probe(name, *overrides):
    return probes.compute(name, list(overrides))


def test_dropout_keeps_the_expected_output_in_train_mode_and_is_off_in_eval():
    result = probe("dropout")
    for p, outputs in result.figure["outputs"].items():
        mean = sum(outputs) / len(outputs)
        assert abs(mean - 10000) < 0.02 * 10000, p  # about (1-p) survive, scaled by 1/(1-p)
        assert len(set(outputs)) > 1  # a new mask each draw
    rows = result.tables[0].columns[-1]._cells
    assert set(rows) == {"10000.0"}  # eval mode: exactly the input sum
    only = probe("dropout", "model.dropout=0.3")
    assert list(only.figure["outputs"]) == [0.3]


def test_norm_running_statistics_follow_the_momentum():
    result = probe("norm")
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
    tuned = probe("norm", "norm=bn", "norm.momentum=0.5")
    assert [round(m, 4) for m in tuned.figure["trajectories"]["BatchNorm1d"][0]] == [0, 1, 1.5]


def test_depth_the_signal_vanishes_explodes_or_holds_as_the_lesson_says():
    curves = probe("depth").figure["curves"]
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


def test_depth_takes_an_init_override():
    curves = probe("depth", "init=xavier_normal", "norm=none").figure["curves"]
    assert list(curves) == ["xavier_normal"]


def test_depth_keeps_denormals_where_the_thread_flushed_them_and_restores_it():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    threads = torch.get_num_threads()
    try:
        default = probe("depth", "init=default", "norm=none").figure["curves"]
        assert 1e-40 < default["default"][0][-1] < 1e-39  # a denormal float, not 0
        assert (torch.tensor([1e-39]) * 1.0).item() == 0.0  # flushing again, as it was
    finally:
        torch.set_flush_denormal(False)
    assert torch.get_num_threads() == threads


@pytest.mark.slow
def test_probe_depth_prints_the_courses_numbers(tmp_path):
    out = regexp("probe", "depth", cwd=tmp_path).stdout
    cells = rows(out, "std of each layer's output")
    # lesson-14's default init and N(0, 1), from its torch.manual_seed(1): the course prints
    # layer:99, std:2.4877e-40; and std:inf from layer:33, nan at layer:35, where it stops.
    default, normal = cells["default"], cells["normal(std=1)"]
    assert float(default[0]) == pytest.approx(0.334, abs=1e-3)  # layer:0, std:0.3342
    assert float(default[8]) == pytest.approx(2.5e-40, rel=0.02)  # layer:99
    assert normal[9:11] == ["layer:33", "layer:35"]
    kaiming = cells["kaiming_normal"]  # layer:0, 1, 9 and 99: std 0.8266, 0.8787, 0.9434, 0.6668
    assert [kaiming[i] for i in (0, 1, 3, 8)] == ["0.827", "0.879", "0.943", "0.667"]
    assert (tmp_path / "outputs" / "probes" / "depth.png").is_file()


def test_init_gain_and_the_tanh_net_under_xavier_and_the_default():
    result = probe("init")
    assert result.figure["gain"] == pytest.approx(1.5983, abs=1e-4)  # the course: about 1.6
    assert result.figure["tanh_gain"] == pytest.approx(5 / 3)
    curves = result.figure["curves"]
    default, xavier = curves["default"][0], curves["xavier_uniform(gain=5/3)"][0]
    assert default[-1] < 1e-20  # vanishes
    assert all(0.6 < s < 0.8 for s in xavier)  # holds
    only = probe("init", "init=xavier_normal", "init.gain=1", "seed=3").figure
    assert list(only["curves"]) == ["xavier_normal"] and only["gain"] != result.figure["gain"]


@pytest.mark.slow
def test_probe_init_prints_the_courses_gain(tmp_path):
    out = regexp("probe", "init", cwd=tmp_path).stdout
    gains = rows(out, "tanh of x = torch.randn(10000)")
    assert round(float(gains["gain = x.std() / tanh(x).std()"][0]), 1) == 1.6
    assert gains["nn.init.calculate_gain('tanh') = 5/3"] == ["1.6667"]
    layers = rows(out, "std of each layer's output")
    assert float(layers["default"][8]) < 1e-20
    assert 0.6 < float(layers["xavier_uniform(gain=5/3)"][8]) < 0.7
    assert (tmp_path / "outputs" / "probes" / "init.png").is_file()


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
        (["optim", "demo=lesson"], "demo=lesson is not allowed: course or notes"),
        (["norm", "demo=notes"], "demo=notes: probe norm does not use demo"),
    ],
)
def test_a_probe_refuses_overrides_it_would_ignore(tmp_path, capsys, args, message):
    assert cli.main(["probe", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_optim_the_notes_first_steps():
    paths = probe("optim", "demo=notes").figure["paths"]
    assert [round(w, 4) for w in paths["SGD lr 0.01"][1:3]] == [0.99, 0.9801]
    assert [round(w, 4) for w in paths["SGD lr 0.01 momentum 0.9"][1:3]] == [0.99, 0.9711]
    assert round(paths["Adagrad lr 0.01"][1], 4) == 0.99
    assert round(paths["RMSprop lr 0.01 alpha 0.9"][1], 4) == 0.0684
    only = probe("optim", "demo=notes", "optim=adam", "optim.lr=0.1").figure["paths"]
    assert list(only) == ["adam"] and round(only["adam"][1], 4) == 0.9  # Adam's first step: lr


def test_optim_an_override_narrows_the_course_demonstration():
    result = probe("optim", "optim=adam", "optim.lr=0.1")
    assert list(result.figure["losses"]) == ["adam"] and not result.figure["sweep"]
    assert result.figure["losses"]["adam"][0] == 16.0  # 4w^2 at w = 2
    swept = probe("optim", "optim=sgd", "optim.momentum=0.5").figure["sweep"]
    assert len(swept) == 10 and min(swept) == 0.01 and max(swept) == pytest.approx(0.2)


def test_probe_optim_prints_the_courses_numbers(tmp_path):
    out = regexp("probe", "optim", cwd=tmp_path).stdout
    # momentum.py and learning_rate.py on y = 4w^2 from w = 2: w at Iter:1..3, the loss at
    # Iter:1..3 and the 100th loss the course records
    runs = rows(out, "gradient descent on y = 4w^2")
    momentum, fast = runs["SGD lr 0.01 momentum 0.9"], runs["SGD lr 0.03"]
    assert [round(float(w), 4) for w in momentum[:3]] == [1.84, 1.5488, 1.1628]
    assert float(momentum[6]) == pytest.approx(4.7e-4, abs=0.05e-4)
    assert [round(float(w), 4) for w in fast[:2]] == [1.52, 1.1552]
    assert round(float(fast[6]), 23) == 4e-23
    assert [round(float(w), 4) for w in runs["SGD lr 0.01"][:2]] == [1.84, 1.6928]
    sweep = rows(out, "optim=gd at the course's 10 learning rates")
    assert len(sweep) == 10 and sweep["0.01"][4] == runs["SGD lr 0.01"][6]
    # optimizer_methods.py: torch.manual_seed(1), a 2x2 weight, grad ones, SGD lr 0.1
    step = rows(out, "optimizer.step() of optim=gd lr=0.1")
    assert step["weight before step"][0].startswith("[[0.6614, ")
    assert step["weight after step"][0].startswith("[[0.5614, ")
    groups = rows(out, "its optimizer.param_groups")
    assert groups["[0]['params']"] == ["[weight]"] and groups["[0]['lr']"] == ["0.1"]
    assert groups["[0]['momentum']"] == ["0.0"]
    state = rows(out, "optimizer.state_dict() of optim=sgd lr=0.1 momentum=0.9")
    assert state["['state']"] == [
        "{}",
        "{0: {'momentum_buffer': [[6.5132, 6.5132], [6.5132, 6.5132]]}}",
    ]
    assert state["['param_groups'][0]['params']"] == ["[0]", "[0]"]
    assert (tmp_path / "outputs" / "probes" / "optim.png").is_file()


def test_probe_optim_demo_notes_prints_the_notes_numbers(tmp_path):
    out = regexp("probe", "optim", "demo=notes", cwd=tmp_path).stdout
    assert "0.9711" in out and "0.0684" in out and "0.9801" in out


def test_lr_the_courses_schedules():
    curves = probe("lr").figure["curves"]
    assert list(curves) == list(probes.COURSE_SCHEDULES)
    step, multistep, exponential, cosine, plateau, lambda1, lambda2 = curves.values()
    assert len(step) == 200 and step[49] == 0.1 and round(step[50], 6) == 0.01
    assert round(step[100], 6) == 0.001
    drops = [round(multistep[e], 6) for e in (49, 50, 124, 125, 159, 160)]
    assert drops == [0.1, 0.01, 0.01, 0.001, 0.001, 0.0001]
    assert round(exponential[19], 4) == 0.0377 and exponential == pytest.approx(lambda2)
    assert cosine[50] == pytest.approx(0, abs=1e-12) and cosine[100] == pytest.approx(0.1)
    # the course's loss improves at epoch 5 (from 0), then stops: patience 10, cooldown 10
    assert [e + 1 for e in range(1, 200) if plateau[e] != plateau[e - 1]] == [18, 39, 60]
    assert plateau[-1] == pytest.approx(1e-4)  # min_lr
    assert lambda1[19] == 0.1 and round(lambda1[20], 6) == 0.01
    reference = torch.optim.SGD(
        [{"params": [torch.zeros(1)]}, {"params": [torch.zeros(1)]}], lr=0.1
    )  # the course's: two param groups, a lambda each
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        reference, [lambda epoch: 0.1 ** (epoch // 20), lambda epoch: 0.95**epoch]
    )
    expected = []
    for _ in range(200):
        expected.append([g["lr"] for g in reference.param_groups])
        reference.step()
        scheduler.step()
    assert [list(pair) for pair in zip(lambda1, lambda2, strict=True)] == expected


def test_lr_the_notes_schedules_and_an_override():
    curves = probe("lr", "demo=notes").figure["curves"]
    step, multistep, exponential = curves.values()
    assert len(step) == 200 and step[0] == 0.1
    assert step[19] == 0.1 and round(step[20], 6) == 0.08 and round(step[40], 6) == 0.064
    assert round(multistep[59], 6) == 0.08 and round(multistep[60], 6) == 0.064
    assert round(exponential[1], 6) == 0.08 and round(exponential[2], 6) == 0.064
    cosine = probe("lr", "sched=cosine", "train.epochs=10").figure["curves"]
    assert list(cosine) == ["cosine"] and len(cosine["cosine"]) == 10


def test_probe_lr_prints_the_optimizers_real_lr(tmp_path):
    out = regexp("probe", "lr", cwd=tmp_path).stdout
    header = next(line for line in out.splitlines() if "epoch 1 " in line)
    epochs = [int(e) for e in re.findall(r"epoch (\d+)", header)]
    table = rows(out, "the optimizer's lr in each epoch")
    at = {name: dict(zip(epochs, map(float, cells), strict=True)) for name, cells in table.items()}
    assert at["StepLR(50, 0.1)"][50] == 0.1 and at["StepLR(50, 0.1)"][51] == 0.01
    assert at["MultiStepLR([50,125,160], 0.1)"][51] == 0.01  # get_lr() says 0.001 here
    assert at["ExponentialLR(0.95)"][20] == 0.0377  # get_lr() says 0.0358
    assert at["LambdaLR 0.1**(epoch//20)"][21] == 0.01
    assert at["ReduceLROnPlateau(cooldown 10)"][18] == 0.01
    assert (tmp_path / "outputs" / "probes" / "lr.png").is_file()


def test_probe_help_says_what_demo_shows(capsys):
    with pytest.raises(SystemExit):
        probes.probe_main(["--help"])
    out = capsys.readouterr().out
    assert "demo=notes" in out and "init " in out and "(takes demo=, optim= and optim.*)" in out


def rows(out: str, title: str) -> dict[str, list[str]]:
    """The table whose title starts with `title` in a probe's output: each row's first cell,
    to its other cells."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title))
    rule = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("─"))
    table = {}
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        first, *cells = re.split(r"\s{2,}", line.strip())
        table[first] = cells
    return table
