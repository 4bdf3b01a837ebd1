"""The initializers: each gives the statistics it promises, on the layers it is asked to."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from regexp import errors
from regexp.components import init, models


def initialized(compose, *overrides, layer=None) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(layer if layer is not None else nn.Linear(1000, 500))
    init.apply(net, compose(*overrides).init)
    return net[0]


def test_kaiming_normal_std_is_sqrt_2_over_fan(compose):
    w = initialized(compose, "init=kaiming_normal").weight  # fan_in 1000, fan_out 500
    assert w.mean().item() == pytest.approx(0, abs=1e-3)
    assert w.std().item() == pytest.approx(math.sqrt(2 / 1000), rel=0.01)
    w = initialized(compose, "init=kaiming_normal", "init.mode=fan_out").weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 500), rel=0.01)
    w = initialized(compose, "init=kaiming_normal", "init.nonlinearity=tanh").weight
    assert w.std().item() == pytest.approx(5 / 3 / math.sqrt(1000), rel=0.01)  # tanh's gain
    conv = nn.Conv2d(64, 32, 5)  # fan_in = 64 * 5 * 5
    w = initialized(compose, "init=kaiming_normal", layer=conv).weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 1600), rel=0.02)


def test_kaiming_uniform_is_bounded_by_sqrt_6_over_fan_in(compose):
    w = initialized(compose, "init=kaiming_uniform").weight
    bound = math.sqrt(6 / 1000)
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    w = initialized(
        compose, "init=kaiming_uniform", "init.nonlinearity=leaky_relu", "init.a=1"
    ).weight
    assert w.abs().max().item() <= math.sqrt(3 / 1000)  # a = 1: gain 1, a linear unit


def test_xavier_normal_std_is_sqrt_2_over_fan_in_plus_fan_out(compose):
    w = initialized(compose, "init=xavier_normal").weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 1500), rel=0.01)
    w = initialized(compose, "init=xavier_normal", "init.gain=2").weight
    assert w.std().item() == pytest.approx(2 * math.sqrt(2 / 1500), rel=0.01)


def test_xavier_uniform_is_bounded_by_sqrt_6_over_fan_in_plus_fan_out(compose):
    w = initialized(compose, "init=xavier_uniform").weight
    bound = math.sqrt(6 / 1500)
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)


def test_normal_has_its_mean_and_std(compose):
    w = initialized(compose, "init=normal").weight
    assert w.std().item() == pytest.approx(0.01, rel=0.01)  # small, by default
    w = initialized(compose, "init=normal", "init.mean=0.5", "init.std=1").weight
    assert w.mean().item() == pytest.approx(0.5, abs=0.01)
    assert w.std().item() == pytest.approx(1, rel=0.01)


def test_uniform_defaults_to_one_over_sqrt_fan_in(compose):
    for layer, fan_in in [(nn.Linear(1000, 500), 1000), (nn.Conv2d(16, 64, 3), 144)]:
        w = initialized(compose, "init=uniform", layer=layer).weight
        bound = 1 / math.sqrt(fan_in)
        assert w.abs().max().item() <= bound and w.abs().max().item() > 0.98 * bound
    w = initialized(compose, "init=uniform", "init.low=2", "init.high=3").weight
    assert 2 <= w.min().item() < 2.01 and 2.99 < w.max().item() <= 3


@pytest.mark.parametrize(
    "overrides,value",
    [(["init=zeros"], 0.0), (["init=ones"], 1.0), (["init=constant", "init.value=0.25"], 0.25)],
)
def test_constant_initializers_set_every_weight(compose, overrides, value):
    w = initialized(compose, *overrides).weight
    assert torch.equal(w, torch.full_like(w, value))


@pytest.mark.parametrize(
    "overrides,value",
    [
        (["init.bias=zeros"], 0.0),
        (["init.bias=ones"], 1.0),
        (["init.bias=constant", "init.bias_value=-0.5"], -0.5),
    ],
)
def test_bias_schemes_set_every_bias_and_leave_the_weights(compose, overrides, value):
    net = models.build(compose("model=cnn").model, models.NoNorm(), (1, 8, 8), 10)
    before = [w.clone() for w in models.weights(net)]
    init.apply(net, compose(*overrides).init)
    biases = [m.bias for m in net.modules() if isinstance(m, models.weighted())]
    assert len(biases) == 5 and all(torch.equal(b, torch.full_like(b, value)) for b in biases)
    assert all(torch.equal(a, b) for a, b in zip(before, models.weights(net), strict=True))


def test_default_leaves_pytorchs_own_initialization(compose):
    conf = compose("model=cnn", "norm=bn")

    def fresh():
        torch.manual_seed(0)
        return models.build(conf.model, conf.norm, (1, 8, 8), 10)

    ours, pytorchs = init.apply(fresh(), conf.init), fresh()
    assert all(
        torch.equal(a, b)
        for a, b in zip(ours.state_dict().values(), pytorchs.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("layers,changed", [("linear", nn.Linear), ("conv", nn.Conv2d)])
def test_init_layers_picks_the_layers(compose, layers, changed):
    conf = compose("model=cnn", "init=ones", f"init.layers={layers}", "init.bias=zeros")
    net = models.build(conf.model, conf.norm, (1, 8, 8), 10)
    before = {id(m): m.weight.clone() for m in net if isinstance(m, (nn.Linear, nn.Conv2d))}
    init.apply(net, conf.init)
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            touched = isinstance(m, changed)
            assert torch.equal(m.weight, torch.ones_like(m.weight)) == touched
            assert torch.equal(m.weight, before[id(m)]) != touched
            assert (m.bias == 0).all().item() == touched


def test_the_lesson_5_bad_init_draws_linear_weights_from_n_0_1(compose):
    conf = compose("model=cnn", "norm=bn", "init=normal", "init.std=1", "init.layers=linear")
    net = init.apply(models.build(conf.model, conf.norm, (3, 32, 32), 10), conf.init)
    fc = next(m for m in net if isinstance(m, nn.Linear))  # 400 -> 120: 48,000 weights
    assert fc.weight.std().item() == pytest.approx(1, rel=0.02)
    conv = next(m for m in net if isinstance(m, nn.Conv2d))
    assert conv.weight.abs().max().item() <= 1 / math.sqrt(75)  # PyTorch's default bound


@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_norm_layers_keep_weight_1_and_bias_0(compose, norm):
    conf = compose("model=cnn", f"norm={norm}", "init=constant", "init.value=3", "init.bias=ones")
    net = init.apply(models.build(conf.model, conf.norm, (1, 8, 8), 10), conf.init)
    norms = [
        m
        for m in net
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm, nn.GroupNorm))
    ]
    assert len(norms) == 4
    for m in norms:
        assert torch.equal(m.weight, torch.ones_like(m.weight))
        assert torch.equal(m.bias, torch.zeros_like(m.bias))


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["init.layers=bias"], "init.layers"),
        (["init.bias=normal"], "init.bias"),
        (["init=kaiming_normal", "init.mode=fan_avg"], "init.mode"),
        (["init=kaiming_uniform", "init.nonlinearity=gelu"], "init.nonlinearity"),
        (["init=normal", "init.std=-1"], "init.std"),
        (["init=uniform", "init.low=1", "init.high=0"], "init.low"),
        (["init=uniform", "init.low=1"], "init.low"),
    ],
)
def test_init_values_are_checked(compose, overrides, key):
    with pytest.raises(errors.ConfigError) as info:
        compose(*overrides)
    assert info.value.key == key and "\n" not in str(info.value)
