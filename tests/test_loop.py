"""The training loop in-process: modes, batches, metrics, divergence, a population of one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from regexp.components import models, optim
from regexp.components.data import Dataset
from regexp.engine import hooks, loop, updates
from regexp.engine.stack import Stack


def regression(n=12, n_valid=6) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x, xv = torch.randn(n, 3, generator=g), torch.randn(n_valid, 3, generator=g)
    return Dataset(x, x.sum(1, keepdim=True), xv, xv.sum(1, keepdim=True), "regression", (3,), 1)


class Recorder(Stack):
    """A stack that records the mode and the inputs of every forward pass."""

    def __init__(self, models, generators):
        super().__init__(models, generators)
        self.calls: list[tuple[bool, torch.Tensor]] = []

    def forward(self, x, training, shared=False):
        self.calls.append((training, x.clone()))
        return super().forward(x, training, shared)


class Metrics:
    def __init__(self):
        self.epochs: list[tuple[int, dict]] = []

    def log_epoch(self, epoch, metrics):
        self.epochs.append((epoch, metrics))


def stack_of(model: nn.Module, cls=Stack) -> Stack:
    return cls([model], [torch.Generator().manual_seed(0)])


def fit(model, dataset, cls=Stack, loss="mse", **kw):
    """`model` trained alone (a population of one) with plain SGD at `lr`."""
    stack = model if isinstance(model, Stack) else stack_of(model, cls)
    update = updates.build_update([optim.GD(lr=kw.pop("lr", 0.01))], stack.flat)
    tracker = Metrics()
    loss_fn = optim.build_loss(loss, dataset.task, dataset.n_outputs, reduction="none")
    generator = kw.pop("generator", None)
    plan = loop.Plan(generators=[generator or torch.Generator().manual_seed(0)], **kw)
    hooks_ = [hooks.Records([tracker]), hooks.Divergence()]
    (result,) = loop.fit(stack, update, loss_fn, loop.stack_data([dataset]), plan, hooks_)
    return result, tracker, stack


def test_full_batch_trains_in_train_mode_and_evaluates_in_eval_mode():
    result, tracker, stack = fit(nn.Linear(3, 1), regression(), cls=Recorder, epochs=3)
    assert result.status == "completed" and result.epoch == 3
    assert [mode for mode, _ in stack.calls] == [True, False] * 3
    assert all(x.shape[0] == 12 for mode, x in stack.calls if mode)  # full batch, shared by all
    assert [e for e, _ in tracker.epochs] == [1, 2, 3]
    stats = {"weights_l2_norm", "weights_l1_norm", "weights_sparsity"}
    assert set(tracker.epochs[0][1]) == {"train_loss", "valid_loss", "lr", *stats}


def test_mini_batches_cover_the_data_in_a_new_seeded_order_each_epoch():
    dataset = regression(n=10)

    def batches():
        _, _, stack = fit(
            nn.Linear(3, 1),
            dataset,
            cls=Recorder,
            epochs=2,
            batch_size=4,
            generator=torch.Generator().manual_seed(1),
        )
        return [x[0] for mode, x in stack.calls if mode]  # (member 0's batch)

    once = batches()
    assert [len(b) for b in once] == [4, 4, 2, 4, 4, 2]
    epoch1, epoch2 = torch.cat(once[:3]), torch.cat(once[3:])
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(epoch1) == key(epoch2) == key(dataset.x_train)  # every example once
    assert not torch.equal(epoch1, epoch2)  # reshuffled
    assert all(torch.equal(a, b) for a, b in zip(once, batches(), strict=True))


@pytest.mark.parametrize("batch_size", [8, 4, 3])  # one batch; even batches; 3, 3 and 2
def test_train_loss_is_the_mean_over_the_examples_and_valid_loss_is_exact(batch_size):
    dataset = regression(n=8, n_valid=5)
    model = nn.Linear(3, 1)
    before = nn.Linear(3, 1)
    before.load_state_dict(model.state_dict())
    _, tracker, _ = fit(model, dataset, epochs=1, batch_size=batch_size, lr=0.0)  # weights stay
    metrics = tracker.epochs[0][1]
    with torch.no_grad():
        expected_train = nn.functional.mse_loss(before(dataset.x_train), dataset.y_train)
        expected_valid = nn.functional.mse_loss(before(dataset.x_valid), dataset.y_valid)
    assert metrics["train_loss"] == pytest.approx(expected_train.item(), rel=1e-6)
    assert metrics["valid_loss"] == pytest.approx(expected_valid.item(), rel=1e-6)


def test_evaluation_in_chunks_gives_the_same_mean_loss(monkeypatch):
    dataset = regression(n=4, n_valid=50)
    stack = stack_of(nn.Linear(3, 1))
    loss_fn = nn.MSELoss(reduction="none")
    data = loop.stack_data([dataset])
    whole = loop.evaluate(stack, loss_fn, data)[0].item()
    monkeypatch.setattr(loop, "EVAL_CHUNK", 7)
    chunked = loop.evaluate(stack, loss_fn, data)[0].item()
    assert chunked == pytest.approx(whole, rel=1e-6)


def test_classification_reports_accuracy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g)
    y = (x[:, 0] > 0).long()
    dataset = Dataset(x, y, x, y, "classification", (2,), 2)
    _, tracker, _ = fit(nn.Linear(2, 2), dataset, loss="ce", epochs=30, lr=0.5)
    last = tracker.epochs[-1][1]
    assert 0 <= last["train_acc"] <= 1 and last["valid_acc"] > 0.9


def test_a_loss_that_becomes_nan_stops_the_run_at_that_epoch():
    result, tracker, _ = fit(nn.Linear(3, 1), regression(), epochs=100, lr=1e6)
    assert result.status == "diverged"
    assert result.epoch == len(tracker.epochs) < 100
    last = tracker.epochs[-1][1]
    assert not (math.isfinite(last["train_loss"]) and math.isfinite(last["valid_loss"]))
    assert "epoch" in result.error and "loss" in result.error


def test_resuming_from_an_epoch_continues_the_numbering():
    _, tracker, _ = fit(nn.Linear(3, 1), regression(), epochs=5, start_epoch=3)
    assert [e for e, _ in tracker.epochs] == [4, 5]


def test_dropout_is_on_while_training_and_off_in_evaluation():
    torch.manual_seed(0)
    with_dropout = models.mlp(models.MLP(hidden=[8, 8], dropout=0.5), models.NoNorm(), (3,), 1)
    data = regression()
    _, tracker, _ = fit(with_dropout, data, epochs=2, lr=0.0)  # lr 0: the weights stay
    with torch.no_grad():
        with_dropout.eval()  # the member's own model, on the population's weights
        valid = nn.functional.mse_loss(with_dropout(data.x_valid), data.y_valid).item()
        train_eval = nn.functional.mse_loss(with_dropout(data.x_train), data.y_train).item()
    last = tracker.epochs[-1][1]
    assert last["valid_loss"] == pytest.approx(valid, rel=1e-6)
    assert last["train_loss"] != pytest.approx(train_eval, rel=1e-3)  # masks were drawn


def test_a_large_set_is_gathered_batch_by_batch_in_the_same_order(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, generator=g)
    y = (x[:, 0] > 0).long()
    data = Dataset(x, y, x, y, "classification", (2,), 2)

    def run():
        torch.manual_seed(0)
        _, tracker, _ = fit(
            nn.Linear(2, 2),
            data,
            loss="ce",
            epochs=3,
            batch_size=8,
            lr=0.1,
            generator=torch.Generator().manual_seed(1),
        )
        return [m for _, m in tracker.epochs]

    once = run()
    monkeypatch.setattr(loop, "GATHER_ONCE_BYTES", 0)
    assert run() == once  # same batches, same numbers, accuracy included


def test_a_members_own_model_shows_the_populations_weights_and_gradients():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    stack = Stack([a, b], [torch.Generator(), torch.Generator()])
    assert torch.equal(a.weight, wa) and torch.equal(b.weight, wb)
    with torch.no_grad():
        stack.flat.mul_(2)
    assert torch.equal(a.weight, 2 * wa) and torch.equal(b.weight, 2 * wb)
    out = stack.forward(torch.ones(4, 3), training=True, shared=True)
    out[1].sum().backward()  # member 1's loss only
    assert float(a.weight.grad.abs().sum()) == 0 and float(b.weight.grad.abs().sum()) > 0
