"""Figures: the fit of a 1-D regression and the decision boundary of 2-D data, drawn in eval
mode by a child process while the run trains, logged to TensorBoard at epoch 0, every
log.figure_every epochs and at the end, and saved as a PNG and a GIF of every frame."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY, gif_epochs, read_events, regexp
from PIL import Image
from torch import nn

from regexp.components import data
from regexp.components.options import OPTIONS
from regexp.engine import hooks
from regexp.engine.track import Tracker
from regexp.figures import plots
from regexp.run import population


class Loop:
    """The loop's calls for one member whose figure its hook draws every `every` epochs: at
    the start (epoch 0, where `new`), and after each epoch's record."""

    def __init__(self, tracker: Tracker, model: nn.Module, every: int, new: bool = True):
        self.tracker, self.figures = tracker, hooks.LiveFigures([tracker], every)
        plan = SimpleNamespace(start_epoch=0 if new else 1)
        self.fit = SimpleNamespace(stack=SimpleNamespace(models=[model]), ran=[0], plan=plan)
        self.figures.start(self.fit)

    def epoch(self, epoch: int) -> None:
        self.tracker.log_epoch(epoch, {"train_loss": 1.0, "valid_loss": 1.0})
        self.figures.epoch_end(self.fit, epoch, [])


def dropout_net(n_in: int, n_out: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(n_in, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, n_out))


def test_each_dataset_gets_the_figure_that_suits_it(compose):
    def plot(*overrides):
        conf = compose(*overrides)
        return plots.for_dataset(data.load(conf.data, 0))

    assert isinstance(plot(), plots.FitPlot)
    assert isinstance(plot("data=spiral"), plots.BoundaryPlot)
    assert plot("data=digits") is None
    drawn = {name for name, schema in OPTIONS["data"].items() if schema.figure}
    assert {"toy_regression", "spiral"} <= drawn and "digits" not in drawn


def test_figures_are_computed_in_eval_mode_and_leave_the_model_as_it_was(compose):
    dataset = data.load(compose().data, 0)
    figure = plots.for_dataset(dataset)
    model = dropout_net(1, 1)
    with torch.no_grad():
        expected = model.eval()(figure.grid).numpy()
    for training in (True, False):
        model.train(training)
        first, second = figure.predict(model), figure.predict(model)
        assert model.training is training
        assert (first == second).all() and np.allclose(first, expected)  # no dropout masks
    xs = figure.grid[:, 0]  # a fixed grid a little wider than the points
    assert xs[0] < dataset.x_train.min() and xs[-1] > dataset.x_train.max()


def test_the_tracker_logs_figures_from_epoch_0_then_saves_a_png_and_a_gif(compose, tmp_path):
    dataset = data.load(compose("data=moons", "data.n_train=20", "data.n_valid=20").data, 0)
    model = dropout_net(2, 2)
    figure = plots.for_dataset(dataset)
    tracker = Tracker(tmp_path, epochs=5, hparams={}, figure=figure)
    loop = Loop(tracker, model, every=2)
    for epoch in range(1, 6):
        loop.epoch(epoch)
    assert model.training  # as the loop left it
    tracker.close("completed", model)
    images = read_events(tmp_path).Images("figures/decision_boundary")
    assert [i.step for i in images] == [0, 2, 4, 5]
    png = Image.open(io.BytesIO((tmp_path / "decision_boundary.png").read_bytes()))
    assert png.format == "PNG" and png.size == (images[-1].width, images[-1].height) == (500, 400)
    assert gif_epochs(tmp_path / "decision_boundary.gif") == (4, [0, 2, 4, 5])  # one per image


def test_images_reach_the_event_file_while_the_run_trains(compose, tmp_path):
    dataset = data.load(compose(*TINY).data, 0)
    model = dropout_net(1, 1)
    tracker = Tracker(tmp_path, epochs=10**6, hparams={}, figure=plots.for_dataset(dataset))
    loop = Loop(tracker, model, every=3, new=False)
    deadline, epoch, steps = time.monotonic() + 120, 0, []
    while not steps and time.monotonic() < deadline:  # the drawing process may be starting
        epoch += 1
        loop.epoch(epoch)
        time.sleep(0.02)
        if epoch % 10 == 0 and "figures/fit" in (events := read_events(tmp_path)).Tags()["images"]:
            steps = [i.step for i in events.Images("figures/fit")]
    assert steps and steps[0] == 3 and not (tmp_path / "summary.json").exists()
    tracker.close("completed", model)
    assert gif_epochs(tmp_path / "fit.gif")[1][-1] == epoch


def test_a_one_output_classifier_is_drawn_with_its_sigmoid(compose):
    dataset = data.load(compose("data=xor", "data.n_train=10", "data.n_valid=10").data, 0)
    figure = plots.for_dataset(dataset)
    values = figure.predict(dropout_net(2, 1))
    assert values.shape == (len(figure.grid),) and ((0 <= values) & (values <= 1)).all()
    picture = plots.DRAWINGS[figure.name](figure.spec).frame(values, epoch=3)
    assert picture.size == (500, 400)


def test_a_run_saves_its_figures_and_figure_every_0_turns_figures_off(compose, tmp_path):
    conf = compose(*TINY, "log.figure_every=2")
    population.execute(conf, tmp_path / "on")
    assert [i.step for i in read_events(tmp_path / "on").Images("figures/fit")] == [0, 2, 4, 5]
    assert (tmp_path / "on" / "fit.png").stat().st_size > 0
    assert gif_epochs(tmp_path / "on" / "fit.gif") == (4, [0, 2, 4, 5])
    population.execute(compose(*TINY, "log.figure_every=0"), tmp_path / "off")
    assert not (tmp_path / "off" / "fit.png").exists()
    assert read_events(tmp_path / "off").Tags()["images"] == []


def test_a_2d_run_from_the_command_line_leaves_its_decision_boundary(tmp_path):
    regexp("train", "data=circles", *TINY, "log.figure_every=3", "hydra.run.dir=run", cwd=tmp_path)
    steps = [i.step for i in read_events(tmp_path / "run").Images("figures/decision_boundary")]
    assert steps == [0, 3, 5] and (tmp_path / "run" / "decision_boundary.png").exists()
    gif = tmp_path / "run" / "decision_boundary.gif"
    assert gif_epochs(gif) == (3, steps) and gif.stat().st_size < 300_000


@pytest.mark.slow
def test_a_resumed_run_goes_on_with_its_gif(tmp_path):
    regexp("train", *TINY, "log.figure_every=2", "hydra.run.dir=run", cwd=tmp_path)
    regexp("train", "resume=run", "train.epochs=9", cwd=tmp_path)
    assert gif_epochs(tmp_path / "run" / "fit.gif") == (7, [0, 2, 4, 5, 6, 8, 9])


@pytest.mark.slow
def test_datasets_and_figures_import_neither_scikit_learn_nor_matplotlib():
    code = """
import sys, torch
from regexp import config
from regexp.components import data
from regexp.figures import plots
for cfg in (data.ToyRegression(), data.Moons(), data.Digits()):
    d = data.load(cfg, 0)
    figure = plots.for_dataset(d)
    if figure is not None:
        figure.predict(torch.nn.Linear(d.in_shape[0], d.n_outputs))
print(sorted(m for m in ("sklearn", "matplotlib") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_drawing_needs_neither_torch_nor_the_training_code(tmp_path):
    code = f"""
import sys
import numpy as np
from pathlib import Path
from regexp.figures import plots, render
x = np.linspace(-1, 1, 5)[:, None]
spec = {{"kind": "fit", "points": [(x, x), (x, x)], "x": x[:, 0]}}
frames = render.Frames(plots.FitDrawing(spec), Path({str(tmp_path)!r}) / "fit", 0)
frames.add(0, x)
frames.save()
loaded = ("torch", "regexp.engine.track", "regexp.components.data")
print(sorted(m for m in loaded if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]" and gif_epochs(tmp_path / "fit.gif") == (1, [0])


def test_a_long_animation_keeps_every_other_frame_past_its_limit(tmp_path, monkeypatch):
    from regexp.figures import render

    monkeypatch.setattr(render, "GIF_FRAMES", 4)
    x = np.linspace(-1, 1, 5)[:, None]
    spec = {"kind": "fit", "points": [(x, x), (x, x)], "x": x[:, 0]}
    frames = render.Frames(plots.FitDrawing(spec), tmp_path / "fit", 0)
    for epoch in range(7):
        frames.add(epoch, x)
    frames.save()
    assert gif_epochs(tmp_path / "fit.gif") == (3, [0, 4, 6])  # the first and the last stay


def test_a_run_goes_on_without_figures_when_the_drawing_process_dies(compose, tmp_path, caplog):
    from regexp.figures import render

    dataset = data.load(compose(*TINY).data, 0)
    model = dropout_net(1, 1)
    figure = plots.for_dataset(dataset)
    tracker = Tracker(tmp_path, epochs=3, hparams={}, figure=figure)
    loop = Loop(tracker, model, every=1)
    process = render.renderer()._proc
    process.kill()
    process.wait()
    for epoch in range(1, 4):
        loop.epoch(epoch)
    assert tracker.close("completed", model)["status"] == "completed"
    assert "figure fit not drawn: the drawing process ended" in caplog.text
    assert render.renderer()._proc is not process  # the next run gets a new one


@pytest.mark.slow
def test_a_run_waits_for_a_drawing_process_that_draws_not_for_one_held_still(tmp_path, monkeypatch):
    # At its idle priority the drawing process may draw slowly, which is no stall: the end of
    # a run waits while it uses the CPU. Held still, it stalls, and the run goes on without.
    import os
    import signal

    from regexp.figures import render

    x = np.linspace(-1, 1, 5)[:, None]
    spec = {"kind": "fit", "points": [(x, x), (x, x)], "x": x[:, 0]}
    renderer = render.Renderer()
    try:
        drawn = renderer.open(spec, tmp_path, 0)
        drawn.frame(0, x)
        drawn.close()
        assert [epoch for epoch, *_ in drawn.images(wait=True)] == [0] and drawn.error is None
        assert renderer.working()  # (it drew since its start)
        os.kill(renderer._proc.pid, signal.SIGSTOP)
        renderer.working()
        monkeypatch.setattr(render, "STALL_SECONDS", 1.0)
        held = renderer.open(spec, tmp_path / "held", 0)
        held.frame(0, x)
        held.close()
        start = time.monotonic()
        assert held.images(wait=True) == [] and held.error == "the drawing process stalled"
        assert time.monotonic() - start < 10 and not renderer.working()
    finally:
        os.kill(renderer._proc.pid, signal.SIGCONT)
        renderer.stop()
