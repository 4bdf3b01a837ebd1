"""Optimizers, weight decay and L1/L2 penalties, schedulers, losses and gradient clipping,
built from composed configs and trained in-process on tiny data."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import TINY, read_events, regexp
from test_config import options
from torch import nn
from torch.optim import lr_scheduler

from regexp import config, errors
from regexp.components import data, optim, schedules
from regexp.components.data import Dataset
from regexp.components.models import weights
from regexp.components.options import names
from regexp.engine import hooks, loop, updates
from regexp.engine.stack import SPARSE_BELOW, Stack, WeightStats, weight_mask
from regexp.run import population

SMALL = "model.hidden=[16,16]"


class Recorder:
    def __init__(self):
        self.metrics: list[dict] = []

    def log_epoch(self, epoch, metrics):
        self.metrics.append(metrics)


def binary(n=64, n_valid=32) -> Dataset:
    """Two linearly separable classes in 2-D."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_valid, 2, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return Dataset(x[:n], y[:n], x[n:], y[n:], "classification", (2,), 2)


def fit(conf: config.Config, dataset: Dataset | None = None, epochs: int | None = None):
    """Build what `conf` names, as `regexp train` does (a population of one), and train it;
    returns the model, torch's optimizer for `conf` (its knobs, for comparison) and each
    epoch's metrics."""
    population.seed_everything(conf.seed)
    dataset = dataset or data.load(conf.data, conf.seed)
    model = population.build_model(conf, dataset)
    dropout = torch.Generator().set_state(torch.get_rng_state())
    stack = Stack([model], [dropout])
    decayed = None if conf.optim.decay_norm_and_bias else weight_mask(stack)
    update = updates.build_update([conf.optim], stack.flat, decayed)
    epochs = epochs or conf.train.epochs
    schedule = schedules.build_schedule([conf.sched], epochs, update.lr[:, 0].tolist())
    update.set_lr(schedule.lrs())
    recorder = Recorder()
    (result,) = loop.fit(
        stack,
        update,
        optim.build_loss(conf.loss, dataset.task, dataset.n_outputs, reduction="none"),
        loop.stack_data([dataset]),
        loop.Plan(
            epochs=epochs,
            batch_size=conf.train.batch_size,
            generators=[torch.Generator().manual_seed(conf.seed)],
            penalty=updates.build_penalty([conf.reg], stack),
            clip_grad_norm=conf.train.clip_grad_norm,
            weight_stats_every=conf.log.weight_stats_every,
        ),
        [hooks.Records([recorder]), hooks.Divergence(), hooks.LRSchedule(schedule)],
    )
    assert result.status == "completed", result.error
    return model, optim.build_optimizer(model, conf.optim), recorder.metrics


def parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


# --- optimizers and weight decay -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", options("optim"))
def test_each_optimizer_trains_with_its_pytorch_knobs(compose, name):
    conf = compose(f"optim={name}", SMALL, "optim.weight_decay=1e-3")
    model, optimizer, metrics = fit(conf, epochs=30)
    assert type(optimizer) is getattr(torch.optim, conf.optim.torch_class)
    group = optimizer.param_groups[0]
    for key, value in vars(conf.optim).items():
        if key not in ("name", "decay_norm_and_bias"):
            assert group[key] == (tuple(value) if isinstance(value, list) else value), key
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]


def test_sgd_weight_decay_trains_exactly_like_an_l2_penalty_on_every_parameter(compose):
    lam = 0.05
    decayed, _, _ = fit(compose(SMALL, f"optim.weight_decay={lam}"), epochs=50)
    penalized, _, metrics = fit(compose(SMALL, f"reg.l2={lam}", "reg.include_bias=true"), epochs=50)
    plain, _, _ = fit(compose(SMALL), epochs=50)
    a, b = parameters(decayed), parameters(penalized)
    assert torch.allclose(a, b, rtol=0, atol=1e-6), (a - b).abs().max()
    assert (a - parameters(plain)).abs().max() > 1e-3  # and the decay did something
    assert all(m["penalty"] > 0 for m in metrics)


def test_adam_weight_decay_is_an_l2_penalty_and_adamw_decouples_it(compose):
    lam = 0.1
    adam, _, _ = fit(compose("optim=adam", SMALL, f"optim.weight_decay={lam}"), epochs=50)
    adam_l2, _, _ = fit(
        compose("optim=adam", SMALL, f"reg.l2={lam}", "reg.include_bias=true"), epochs=50
    )
    adamw, _, _ = fit(compose("optim=adamw", SMALL, f"optim.weight_decay={lam}"), epochs=50)
    # PyTorch's Adam adds lambda*w to the gradient: the L2 penalty, rescaled by the adaptive
    # denominator. AdamW shrinks the weights directly, which trains differently.
    assert torch.allclose(parameters(adam), parameters(adam_l2), rtol=0, atol=1e-6)
    assert (parameters(adam) - parameters(adamw)).abs().max() > 1e-3


def test_without_decay_on_norm_and_bias_their_group_holds_exactly_the_biases_and_norms(compose):
    conf = compose("norm=bn", SMALL, "optim.weight_decay=1e-2", "optim.decay_norm_and_bias=false")
    model = population.build_model(conf, data.load(conf.data, conf.seed))
    decay, no_decay = optim.build_optimizer(model, conf.optim).param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    assert decay["weight_decay"] == 1e-2 and no_decay["weight_decay"] == 0
    assert {names[id(p)] for p in decay["params"]} == {"0.weight", "3.weight", "6.weight"}
    norms = {f"{i}.{k}" for i in (1, 4) for k in ("weight", "bias")}
    biases = {f"{i}.bias" for i in (0, 3, 6)}
    assert {names[id(p)] for p in no_decay["params"]} == norms | biases
    assert all(isinstance(model[i], nn.BatchNorm1d) for i in (1, 4))

    # The default: one group, everything decayed, as in the lessons.
    conf = compose("norm=bn", SMALL, "optim.weight_decay=1e-2")
    (group,) = optim.build_optimizer(model, conf.optim).param_groups
    assert len(group["params"]) == len(list(model.parameters()))


def test_the_no_decay_group_leaves_biases_alone(compose):
    # One step on zero gradients: only the decay moves a parameter.
    conf = compose(SMALL, "optim.weight_decay=0.5", "optim.decay_norm_and_bias=false")
    model = population.build_model(conf, data.load(conf.data, conf.seed))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = optim.build_optimizer(model, conf.optim)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == name.endswith("weight"), name


# --- penalties and weight statistics ---------------------------------------------------------


def test_the_penalty_joins_the_objective_but_train_loss_stays_the_data_loss(compose):
    dataset = data.load(compose().data, 0)
    model = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
    stack = Stack([model], [torch.Generator()])
    l1, l2 = 0.01, 0.1
    penalty = updates.build_penalty([optim.Reg(l1=l1, l2=l2)], stack)
    w = torch.cat([p.detach().flatten() for p in weights(model)])
    expected = l1 * w.abs().sum() + l2 / 2 * (w**2).sum()
    assert penalty.value(stack.flat).item() == pytest.approx(expected.item(), rel=1e-6)
    with torch.no_grad():
        data_loss = nn.functional.mse_loss(model(dataset.x_train), dataset.y_train).item()

    update = updates.build_update([optim.GD(lr=1e-9)], stack.flat)  # weights all but unchanged
    recorder = Recorder()
    loss_fn = nn.MSELoss(reduction="none")
    data_ = loop.stack_data([dataset])
    loop.fit(
        stack, update, loss_fn, data_, loop.Plan(1, penalty=penalty), [hooks.Records([recorder])]
    )
    (metrics,) = recorder.metrics
    assert metrics["train_loss"] == pytest.approx(data_loss, rel=1e-5)
    assert metrics["penalty"] == pytest.approx(expected.item(), rel=1e-5)

    # Biases and norm parameters only with include_bias.
    everything = updates.build_penalty([optim.Reg(l2=2.0, include_bias=True)], stack)
    total = sum((p.detach() ** 2).sum() for p in model.parameters())
    assert everything.value(stack.flat).item() == pytest.approx(total.item(), rel=1e-6)
    assert updates.build_penalty([optim.Reg()], stack) is None


def test_the_penalty_gradient_is_autograds(compose):
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]
    stack = Stack([model], [torch.Generator()])
    penalty = updates.build_penalty([optim.Reg(l1=0.3, l2=0.7)], stack)
    stack.zero_grad()
    penalty.add_grad(stack.flat, stack.grad)
    w = [reference[0], reference[2]]  # the weights, not the biases
    (0.3 * sum(t.abs().sum() for t in w) + 0.35 * sum((t**2).sum() for t in w)).backward()
    # Read through each parameter's view of the flat gradient, whatever its layout there.
    for param, theirs in zip(model.parameters(), reference, strict=True):
        expected = torch.zeros_like(theirs) if theirs.grad is None else theirs.grad
        assert torch.allclose(param.grad, expected, atol=1e-6)


def test_weight_stats_are_the_norms_and_share_of_near_zero_weights(compose):
    model = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].weight[:3] = 0.0
        model[0].weight[3] = SPARSE_BELOW / 2
        model[0].weight[4] = -SPARSE_BELOW
        model[0].bias.fill_(0.0)  # biases are not weights: they do not count
    stats = WeightStats(Stack([model], [torch.Generator()]))
    values = stats.read([float(t[0]) for t in stats()])
    w = torch.cat([p.detach().flatten() for p in weights(model)])
    assert values["weights_l2_norm"] == pytest.approx(w.norm().item(), rel=1e-6)
    assert values["weights_l1_norm"] == pytest.approx(w.abs().sum().item(), rel=1e-6)
    assert values["weights_sparsity"] == pytest.approx(4 / 16)  # |w| < threshold, strictly


def test_weight_stats_follow_updates_of_the_populations_weights():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(128, 2))
    stack = Stack([model], [torch.Generator()])
    stats = WeightStats(stack)
    with torch.no_grad():
        stack.flat.mul_(2.0)  # an optimizer's in-place update, after the stats were set up
    w = torch.cat([p.detach().flatten() for p in weights(model)])
    l2 = stats.read([float(t[0]) for t in stats()])["weights_l2_norm"]
    assert l2 == pytest.approx(w.norm().item(), rel=1e-6)


def test_weight_stats_come_every_n_epochs_and_in_the_first_and_last(compose):
    _, _, metrics = fit(compose(SMALL, "log.weight_stats_every=4"), epochs=10)
    with_stats = [i + 1 for i, m in enumerate(metrics) if "weights_sparsity" in m]
    assert with_stats == [1, 4, 8, 10]
    _, _, metrics = fit(compose(SMALL, "log.weight_stats_every=0"), epochs=3)
    assert not any("weights_l2_norm" in m for m in metrics)
    _, _, metrics = fit(compose(SMALL), epochs=loop.WEIGHT_STATS_POINTS * 2 + 1)  # null: auto
    with_stats = [i + 1 for i, m in enumerate(metrics) if "weights_sparsity" in m]
    assert with_stats == [1, *range(2, len(metrics), 2), len(metrics)]


@pytest.mark.slow
def test_l1_makes_weights_sparse_and_l2_shrinks_them(compose):
    def last(*overrides):
        conf = compose("model.hidden=[64,64]", "log.weight_stats_every=100", *overrides)
        return fit(conf, epochs=300)[2][-1]

    plain, l1, l2 = last(), last("reg.l1=1e-3"), last("reg.l2=1e-2")
    assert l1["weights_sparsity"] > 2 * plain["weights_sparsity"] + 0.1
    assert l1["weights_sparsity"] > l2["weights_sparsity"]
    assert l2["weights_l2_norm"] < plain["weights_l2_norm"]


# --- schedulers ------------------------------------------------------------------------------

EPOCHS = 12
SCHEDULES = {
    "none": ([], None),
    "step": (["sched.step_size=3", "sched.gamma=0.5"], lambda o: lr_scheduler.StepLR(o, 3, 0.5)),
    "multistep": (
        ["sched.milestones=[2,5,9]", "sched.gamma=0.5"],
        lambda o: lr_scheduler.MultiStepLR(o, [2, 5, 9], 0.5),
    ),
    "exponential": (["sched.gamma=0.7"], lambda o: lr_scheduler.ExponentialLR(o, 0.7)),
    "cosine": (  # T_max=null: the run's epochs
        ["sched.eta_min=0.001"],
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=EPOCHS, eta_min=0.001),
    ),
    "plateau": (  # mode max on a falling loss: no epoch improves, so lr falls
        [
            "sched.mode=max",
            "sched.patience=2",
            "sched.factor=0.5",
            "sched.cooldown=1",
            "sched.min_lr=0.004",
        ],
        lambda o: lr_scheduler.ReduceLROnPlateau(
            o, mode="max", factor=0.5, patience=2, cooldown=1, min_lr=0.004
        ),
    ),
    "lambda": (
        ["sched.gamma=0.5", "sched.step_size=3"],
        lambda o: lr_scheduler.LambdaLR(o, lambda epoch: 0.5 ** (epoch // 3)),
    ),
}


def test_every_scheduler_option_is_tested():
    assert sorted(SCHEDULES) == options("sched") == names("sched")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_each_scheduler_steps_per_epoch_like_pytorchs_own(compose, name):
    overrides, make = SCHEDULES[name]
    conf = compose(f"sched={name}", *overrides, SMALL, "optim.lr=0.02")
    _, _, metrics = fit(conf, epochs=EPOCHS)
    logged = [m["lr"] for m in metrics]

    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.02)
    scheduler = make(reference) if make else None
    expected = []
    for m in metrics:
        expected.append(reference.param_groups[0]["lr"])
        reference.step()  # no gradients: changes nothing, but schedulers expect it first
        if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step(m["valid_loss"])
        elif scheduler is not None:
            scheduler.step()
    assert logged == pytest.approx(expected, rel=1e-12)
    assert len(set(logged)) == 1 if name == "none" else len(set(logged)) > 1


def test_a_lambda_schedule_trains_with_the_lr_of_torchs_lambdalr(tmp_path):
    regexp(
        "train",
        *TINY,
        "train.epochs=7",
        "optim.lr=0.1",
        "sched=lambda",
        "sched.gamma=0.5",
        "sched.step_size=2",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    with open(tmp_path / "run" / "metrics.csv") as f:
        logged = [float(r["lr"]) for r in csv.DictReader(f)]
    reference = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = lr_scheduler.LambdaLR(reference, lambda epoch: 0.5 ** (epoch // 2))
    expected = []
    for _ in range(7):
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        scheduler.step()
    assert logged == pytest.approx(expected, rel=1e-12)
    assert logged == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,make",
    [
        ("step", lambda o: lr_scheduler.StepLR(o, step_size=20, gamma=0.8)),
        ("multistep", lambda o: lr_scheduler.MultiStepLR(o, [20, 60, 90, 135, 180], gamma=0.8)),
        ("exponential", lambda o: lr_scheduler.ExponentialLR(o, gamma=0.8)),
        ("lambda", lambda o: lr_scheduler.LambdaLR(o, lambda epoch: 0.1 ** (epoch // 20))),
    ],
)
def test_the_lessons_schedules_are_the_configs_defaults(compose, name, make):
    # Lesson 9: lr 0.1 for 200 epochs under each schedule.
    conf = compose(f"sched={name}", "optim.lr=0.1", "train.epochs=200")
    ours = optim.build_optimizer(nn.Linear(1, 1), conf.optim)
    scheduler = optim.build_scheduler(ours, conf.sched, conf.train.epochs)
    theirs = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = make(theirs)
    for _ in range(conf.train.epochs):
        assert ours.param_groups[0]["lr"] == theirs.param_groups[0]["lr"]
        ours.step()  # no gradients: changes nothing, but schedulers expect it first
        theirs.step()
        scheduler.step()
        reference.step()


# --- losses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["auto", "mse", "l1", "smooth_l1"])
def test_each_regression_loss_trains(compose, name):
    conf = compose(f"loss={name}", SMALL)
    _, _, metrics = fit(conf, epochs=30)
    expected = {"auto": nn.MSELoss, "mse": nn.MSELoss, "l1": nn.L1Loss}.get(name, nn.SmoothL1Loss)
    assert type(optim.build_loss(name, "regression", 1)) is expected
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("name,outputs", [("ce", 2), ("auto", 2), ("bce", 1)])
def test_classification_losses_train_and_bce_uses_one_logit(compose, name, outputs):
    conf = compose(f"loss={name}", "model.hidden=[8]", "optim.lr=0.1")
    dataset = binary()
    model, _, metrics = fit(conf, dataset, epochs=40)
    assert model[-1].out_features == outputs
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["valid_acc"] > 0.9  # separable: the accuracy of one logit is right too


def test_bce_is_computed_from_logits_so_it_stays_finite():
    loss = optim.build_loss("bce", "classification", 2)
    logits = torch.tensor([[1000.0], [-1000.0], [0.0]])
    y = torch.tensor([0, 0, 1])
    assert loss(logits, y).item() == pytest.approx((1000 + 0 + math.log(2)) / 3)
    assert loop.correct(logits[None], y[None]).item() == 1  # logit > 0 predicts class 1


@pytest.mark.parametrize(
    "name,task,n_outputs,allowed",
    [
        ("ce", "regression", 1, "mse, l1, smooth_l1"),
        ("bce", "regression", 1, "mse, l1, smooth_l1"),
        ("mse", "classification", 10, "ce, bce"),
        ("bce", "classification", 10, "ce (bce is for 2 classes)"),
    ],
)
def test_a_loss_that_does_not_fit_the_task_is_refused(name, task, n_outputs, allowed):
    with pytest.raises(errors.ConfigError) as info:
        optim.build_loss(name, task, n_outputs)
    assert info.value.key == "loss" and allowed in str(info.value)


@pytest.mark.parametrize("args", [["loss=ce"], ["data=digits", "loss=bce"]])
def test_the_cli_refuses_a_misfit_loss_before_training(tmp_path, args):
    done = regexp("train", *args, "train.epochs=1", "hydra.run.dir=run", cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("regexp train: error: loss=") and "Traceback" not in done.stdout
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert not (tmp_path / "run" / "metrics.csv").exists()


# --- gradient clipping -----------------------------------------------------------------------


def test_clip_grad_norm_bounds_each_step(compose):
    conf = compose(SMALL, "optim.momentum=0", "optim.lr=1", "train.clip_grad_norm=0.001")
    population.seed_everything(conf.seed)
    model = population.build_model(conf, data.load(conf.data, conf.seed))
    before = parameters(model)
    model, _, _ = fit(conf, epochs=1)  # same seed: same initial weights
    assert (parameters(model) - before).norm() <= 0.001 * (1 + 1e-5)
    free, _, _ = fit(compose(SMALL, "optim.momentum=0", "optim.lr=1"), epochs=1)
    assert (parameters(free) - before).norm() > 0.01


# --- what a run records ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_logs_the_penalty_and_weight_stats_to_tensorboard_and_csv(tmp_path):
    regexp(
        "train",
        *TINY,
        "reg.l1=1e-3",
        "log.weight_stats_every=2",
        "optim=adamw",
        "sched=cosine",
        "train.clip_grad_norm=1",
        "hydra.run.dir=run",
        cwd=tmp_path,
    )
    events = read_events(tmp_path / "run")
    assert [s.step for s in events.Scalars("loss/penalty")] == [1, 2, 3, 4, 5]
    for tag in ("weights/l2_norm", "weights/l1_norm", "weights/sparsity"):
        assert [s.step for s in events.Scalars(tag)] == [1, 2, 4, 5]
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[4:] == [
        "penalty",
        "weights_l2_norm",
        "weights_l1_norm",
        "weights_sparsity",
    ]
    assert [r["weights_sparsity"] == "" for r in rows] == [False, False, True, False, False]
    assert float(rows[3]["weights_l1_norm"]) == pytest.approx(
        events.Scalars("weights/l1_norm")[2].value
    )
    lrs = [s.value for s in events.Scalars("lr")]
    assert lrs[0] == pytest.approx(1e-3) and lrs == sorted(lrs, reverse=True)  # cosine: down
