"""The training loop in-process: modes, batches, metrics, divergence."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from regexp import train
from regexp.data import Dataset


def regression(n=12, n_valid=6) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x, xv = torch.randn(n, 3, generator=g), torch.randn(n_valid, 3, generator=g)
    return Dataset(x, x.sum(1, keepdim=True), xv, xv.sum(1, keepdim=True), "regression", (3,), 1)


class Recorder(nn.Module):
    """A linear model that records the mode and the inputs of every forward pass."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.calls: list[tuple[bool, torch.Tensor]] = []

    def forward(self, x):
        self.calls.append((self.training, x.clone()))
        return self.linear(x)


class Metrics:
    def __init__(self):
        self.epochs: list[tuple[int, dict]] = []

    def log_epoch(self, epoch, metrics, model):
        self.epochs.append((epoch, metrics))


def fit(model, dataset, **kw):
    optimizer = torch.optim.SGD(model.parameters(), lr=kw.pop("lr", 0.01))
    tracker = Metrics()
    result = train.fit(model, optimizer, nn.MSELoss(), dataset, tracker=tracker, **kw)
    return result, tracker


def test_full_batch_trains_in_train_mode_and_evaluates_in_eval_mode():
    model = Recorder()
    result, tracker = fit(model, regression(), epochs=3)
    assert result.status == "completed" and result.epoch == 3
    assert [mode for mode, _ in model.calls] == [True, False] * 3
    assert all(x.shape[0] == 12 for mode, x in model.calls if mode)  # full batch
    assert [e for e, _ in tracker.epochs] == [1, 2, 3]
    stats = {"weights_l2_norm", "weights_l1_norm", "weights_sparsity"}
    assert set(tracker.epochs[0][1]) == {"train_loss", "valid_loss", "lr", *stats}


def test_mini_batches_cover_the_data_in_a_new_seeded_order_each_epoch():
    dataset = regression(n=10)
    model = Recorder()
    fit(model, dataset, epochs=2, batch_size=4, generator=torch.Generator().manual_seed(1))
    batches = [x for mode, x in model.calls if mode]
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    epoch1, epoch2 = torch.cat(batches[:3]), torch.cat(batches[3:])
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(epoch1) == key(epoch2) == key(dataset.x_train)  # every example once
    assert not torch.equal(epoch1, epoch2)  # reshuffled
    again = Recorder()
    fit(again, dataset, epochs=2, batch_size=4, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(model.calls, again.calls, strict=True))


@pytest.mark.parametrize("batch_size", [8, 4, 3])  # one batch; even batches; 3, 3 and 2
def test_train_loss_is_the_mean_over_the_examples_and_valid_loss_is_exact(batch_size):
    dataset = regression(n=8, n_valid=5)
    model = nn.Linear(3, 1)
    before = nn.Linear(3, 1)
    before.load_state_dict(model.state_dict())
    _, tracker = fit(model, dataset, epochs=1, batch_size=batch_size, lr=0.0)  # weights stay
    metrics = tracker.epochs[0][1]
    with torch.no_grad():
        expected_train = nn.functional.mse_loss(before(dataset.x_train), dataset.y_train)
        expected_valid = nn.functional.mse_loss(before(dataset.x_valid), dataset.y_valid)
    assert metrics["train_loss"] == pytest.approx(expected_train.item(), rel=1e-6)
    assert metrics["valid_loss"] == pytest.approx(expected_valid.item(), rel=1e-6)


def test_evaluation_in_chunks_gives_the_same_mean_loss(monkeypatch):
    dataset = regression(n=4, n_valid=50)
    model = nn.Linear(3, 1)
    whole = train.evaluate(model, nn.MSELoss(), dataset.x_valid, dataset.y_valid)[0].item()
    monkeypatch.setattr(train, "EVAL_CHUNK", 7)
    chunked = train.evaluate(model, nn.MSELoss(), dataset.x_valid, dataset.y_valid)[0].item()
    assert chunked == pytest.approx(whole, rel=1e-6)


def test_classification_reports_accuracy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=g)
    y = (x[:, 0] > 0).long()
    dataset = Dataset(x, y, x, y, "classification", (2,), 2)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = Metrics()
    train.fit(model, optimizer, nn.CrossEntropyLoss(), dataset, epochs=30, tracker=tracker)
    last = tracker.epochs[-1][1]
    assert 0 <= last["train_acc"] <= 1 and last["valid_acc"] > 0.9


def test_a_loss_that_becomes_nan_stops_the_run_at_that_epoch():
    model = nn.Linear(3, 1)
    result, tracker = fit(model, regression(), epochs=100, lr=1e6)
    assert result.status == "diverged"
    assert result.epoch == len(tracker.epochs) < 100
    last = tracker.epochs[-1][1]
    assert not (math.isfinite(last["train_loss"]) and math.isfinite(last["valid_loss"]))
    assert "epoch" in result.error and "loss" in result.error


def test_resuming_from_an_epoch_continues_the_numbering():
    _, tracker = fit(nn.Linear(3, 1), regression(), epochs=5, start_epoch=3)
    assert [e for e, _ in tracker.epochs] == [4, 5]


def test_modes_are_switched_only_for_models_whose_modes_matter():
    from regexp import models

    plain = models.mlp(models.MLP(hidden=[8]), models.NoNorm(), (3,), 1)
    assert not train.modes_matter(plain)
    with_dropout = models.mlp(models.MLP(hidden=[8, 8], dropout=0.5), models.NoNorm(), (3,), 1)
    with_bn = models.mlp(models.MLP(hidden=[8]), models.BatchNorm(), (3,), 1)
    assert train.modes_matter(with_dropout) and train.modes_matter(with_bn)
    assert train.modes_matter(Recorder())  # unknown modules may read self.training

    # Dropout is on while training and off in evaluation (lr 0: the weights stay).
    data = regression()
    _, tracker = fit(with_dropout, data, epochs=2, lr=0.0)
    with torch.no_grad():
        with_dropout.eval()
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
        model = nn.Linear(2, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = Metrics()
        train.fit(
            model,
            optimizer,
            nn.CrossEntropyLoss(),
            data,
            epochs=3,
            batch_size=8,
            tracker=tracker,
            generator=torch.Generator().manual_seed(1),
        )
        return [m for _, m in tracker.epochs]

    once = run()
    monkeypatch.setattr(train, "GATHER_ONCE_BYTES", 0)
    assert run() == once  # same batches, same numbers, accuracy included
