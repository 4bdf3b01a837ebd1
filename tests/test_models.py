"""The models in-process: the layers each config asks for, the norms in their places, the
refusals of combinations with no meaning, dropout's modes, and the lessons' nets."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from conftest import read_json, regexp
from torch import nn

from regexp import config, errors
from regexp.components import data, models, optim
from regexp.engine import loop, updates
from regexp.engine.stack import Stack
from regexp.run import population

NORMS = ["none", "bn", "ln", "in", "gn"]
SMALL = {"mlp": ["model.hidden=[16,16]"], "cnn": ["model.head=[16,16]"]}
# The norm layers each model x norm combination must hold: (after the convs, after the Linears).
EXPECTED = {
    ("mlp", "none"): ([], []),
    ("mlp", "bn"): ([], [nn.BatchNorm1d] * 2),
    ("mlp", "ln"): ([], [nn.LayerNorm] * 2),
    ("mlp", "gn"): ([], [nn.GroupNorm] * 2),
    ("cnn", "none"): ([], []),
    ("cnn", "bn"): ([nn.BatchNorm2d] * 2, [nn.BatchNorm1d] * 2),
    ("cnn", "ln"): ([nn.LayerNorm] * 2, [nn.LayerNorm] * 2),
    ("cnn", "in"): ([nn.InstanceNorm2d] * 2, []),  # a head has no maps: instance norm skips it
    ("cnn", "gn"): ([nn.GroupNorm] * 2, [nn.GroupNorm] * 2),
}
NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.InstanceNorm2d, nn.GroupNorm)


def build(conf: config.Config, in_shape=(1, 8, 8), n_outputs=10) -> nn.Sequential:
    return models.build(conf.model, conf.norm, in_shape, n_outputs)


def kinds(model: nn.Module) -> list[type]:
    return [type(m) for m in model]


@pytest.fixture(scope="module")
def digits():
    conf = data.Digits(n_train=64)
    return data.load(conf, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("norm", NORMS)
def test_every_model_and_norm_trains_an_epoch_or_is_refused(compose, digits, model, norm):
    conf = compose(f"model={model}", f"norm={norm}", "data=digits", *SMALL[model])
    if (model, norm) not in EXPECTED:
        with pytest.raises(errors.ConfigError) as info:
            population.build_model(conf, digits)
        assert info.value.key == "norm" and "\n" not in str(info.value)
        assert "use norm=bn, ln or gn, or model=cnn" in str(info.value)
        return
    torch.manual_seed(0)
    net = population.build_model(conf, digits)
    stack = Stack([net], [torch.Generator().manual_seed(0)])  # a population of one
    update = updates.build_update([optim.GD(lr=0.01)], stack.flat)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    data = loop.stack_data([digits])
    (result,) = loop.fit(stack, update, loss_fn, data, loop.Plan(epochs=1, batch_size=16))
    assert result.status == "completed"

    # The layers present are the ones asked for, each norm right after its Linear or Conv
    # and before the activation.
    layers = list(net)
    after_conv = [type(m) for a, m in pairwise(layers) if isinstance(a, nn.Conv2d)]
    after_linear = [type(m) for a, m in pairwise(layers) if isinstance(a, nn.Linear)]
    convs, linears = EXPECTED[model, norm]
    assert [k for k in after_conv if k is not nn.ReLU] == convs
    assert [k for k in after_linear if k is not nn.ReLU] == linears
    assert sum(isinstance(m, NORM_TYPES) for m in layers) == len(convs) + len(linears)
    for i, m in enumerate(layers):
        if isinstance(m, NORM_TYPES):
            assert isinstance(layers[i + 1], nn.ReLU)


def test_norms_normalize_over_what_the_lessons_say(compose):
    ln = build(compose("model=cnn", "norm=ln"))
    assert [tuple(m.normalized_shape) for m in ln if isinstance(m, nn.LayerNorm)] == [
        (6, 8, 8),  # C x H x W of the first conv's maps (digits: padded to keep 8x8)
        (16, 4, 4),
        (120,),
        (84,),
    ]
    gn = build(compose("model=cnn", "norm=gn", "norm.groups=2"))
    assert [(m.num_groups, m.num_channels) for m in gn if isinstance(m, nn.GroupNorm)] == [
        (2, 6),
        (2, 16),
        (2, 120),
        (2, 84),
    ]
    assert [m.weight.shape for m in gn if isinstance(m, nn.GroupNorm)][0] == (6,)  # per channel


def test_norm_knobs_reach_the_layers(compose):
    overrides = ["norm.eps=1e-3", "norm.momentum=0.3", "norm.affine=false"]
    bn = build(compose("model=cnn", "norm=bn", *overrides, "norm.track_running_stats=false"))
    for m in bn:
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert (m.eps, m.momentum, m.affine, m.track_running_stats) == (1e-3, 0.3, False, False)
            assert m.weight is None and m.running_mean is None
    inorm = build(compose("model=cnn", "norm=in", "norm.affine=true", *overrides[:2]))
    (first, _) = [m for m in inorm if isinstance(m, nn.InstanceNorm2d)]
    assert (first.eps, first.momentum, first.affine) == (1e-3, 0.3, True)
    ln = build(compose("norm=ln", "norm.affine=false", "model.hidden=[8]"), (1,), 1)
    assert kinds(ln) == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]
    assert models.count_params(ln) == 1 * 8 + 8 + 8 + 1  # LayerNorm without affine: none
    gn = build(compose("norm=gn", "norm.groups=3", "model.hidden=[6,12]"), (1,), 1)
    assert [m.num_groups for m in gn if isinstance(m, nn.GroupNorm)] == [3, 3]


def test_groups_that_do_not_divide_the_channels_are_refused_with_what_fits(compose):
    with pytest.raises(errors.ConfigError) as info:
        build(compose("norm=gn", "norm.groups=4", "model.hidden=[6,16]"), (1,), 1)
    message = str(info.value)
    assert info.value.key == "norm.groups" and "6 is not divisible by 4" in message
    assert message.endswith("use one of 1, 2") and "\n" not in message
    with pytest.raises(errors.ConfigError, match="norm.groups=5"):
        build(compose("model=cnn", "norm=gn", "norm.groups=5"))


def test_the_lesson_24_mlp_has_81001_parameters(compose):
    net = build(compose(), (1,), 1)
    assert kinds(net) == [nn.Linear, nn.ReLU] * 3 + [nn.Linear]
    assert models.count_params(net) == 81_001
    table = models.describe(net, (1,))
    assert "Total params: 81,001" in table and "Trainable params: 81,001" in table


def test_the_lessons_lenet_is_a_config(compose):
    """conv 6@5x5, pool, conv 16@5x5, pool, fc 120, fc 84, fc classes: on 3x32x32 it has no
    padding (32 -> 28 -> 14 -> 10 -> 5) and LeNet's 62,006 parameters."""
    net = build(compose("model=cnn"), (3, 32, 32), 10)
    assert kinds(net) == [
        *[nn.Conv2d, nn.ReLU, nn.MaxPool2d] * 2,
        nn.Flatten,
        *[nn.Linear, nn.ReLU] * 2,
        nn.Linear,
    ]
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size, m.padding) for m in convs] == [
        (6, (5, 5), (0, 0)),
        (16, (5, 5), (0, 0)),
    ]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)] == [
        (400, 120),
        (120, 84),
        (84, 10),
    ]
    assert models.count_params(net) == 62_006


def test_the_lesson_5_lenet_with_batch_norm_is_a_config(compose):
    """BatchNorm2d after each conv and BatchNorm1d after fc 120 only."""
    net = build(compose("model=cnn", "norm=bn", "model.head_norm_layers=1"), (3, 32, 32), 2)
    norms = [(i, type(m)) for i, m in enumerate(net) if isinstance(m, NORM_TYPES)]
    assert [k for _, k in norms] == [nn.BatchNorm2d, nn.BatchNorm2d, nn.BatchNorm1d]
    fc120 = net[norms[-1][0] - 1]
    assert isinstance(fc120, nn.Linear) and fc120.out_features == 120


@pytest.mark.slow
@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("norm", NORMS)
def test_the_cnn_fits_each_image_shape(compose, in_shape, norm):
    net = build(compose("model=cnn", f"norm={norm}", "model.dropout2d=0.2"), in_shape, 10)
    x = torch.randn(4, *in_shape)
    assert net(x).shape == (4, 10)
    net.eval()
    assert net(x).shape == (4, 10)
    # The padding is picked so the small 8x8 digits still reach the head.
    padding = [m.padding for m in net if isinstance(m, nn.Conv2d)]
    assert padding == [(2, 2)] * 2 if in_shape == (1, 8, 8) else [(0, 0)] * 2


@pytest.mark.parametrize(
    "overrides,in_shape,key,says",
    [
        (["model=cnn"], (1,), "model", "use model=mlp"),
        (["model=cnn", "model.padding=0"], (1, 8, 8), "model.padding", "null picks one"),
        (["model=cnn", "model.channels=[4,4,4,4]"], (1, 8, 8), "model.channels", "at most 3"),
        (
            ["model=cnn", "norm=in", "model.head_norm_layers=1"],
            (1, 8, 8),
            "model.head_norm_layers",
            "conv maps only",
        ),
        (
            ["model=cnn", "norm=in", "model.channels=[4]", "model.kernel=8", "model.pool=1"],
            (1, 8, 8),
            "norm",
            "1x1",
        ),
    ],
)
def test_a_model_that_does_not_fit_the_data_is_refused(compose, overrides, in_shape, key, says):
    with pytest.raises(errors.ConfigError) as info:
        build(compose(*overrides), in_shape)
    assert info.value.key == key and says in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    "override",
    [
        "model.kernel=0",
        "model.pool=0",
        "model.padding=-1",
        "model.channels=[]",
        "model.head=[0]",
        "model.dropout2d=1",
        "model.head_norm_layers=3",
    ],
)
def test_cnn_values_are_checked(compose, override):
    with pytest.raises(errors.ConfigError) as info:
        compose("model=cnn", override)
    assert info.value.key == override.split("=")[0]


@pytest.mark.parametrize(
    "overrides",
    [["norm=bn", "norm.eps=0"], ["norm=in", "norm.momentum=2"], ["norm=gn", "norm.groups=0"]],
)
def test_norm_values_are_checked(compose, overrides):
    with pytest.raises(errors.ConfigError) as info:
        compose(*overrides)
    assert info.value.key == overrides[-1].split("=")[0]


def test_dropout_acts_in_train_mode_and_not_in_eval_mode(compose):
    net = build(compose("model.dropout=0.5", "model.hidden=[256,256]"), (32,), 4)
    # Before each Linear after the first, as in the lesson-25 net.
    assert kinds(net) == [
        nn.Linear,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
    ]
    x = torch.randn(64, 32)
    without = nn.Sequential(*[m for m in net if not isinstance(m, nn.Dropout)])
    net.train()
    assert not torch.equal(net(x), net(x))  # a new mask each pass
    net.eval()
    assert torch.equal(net(x), net(x)) and torch.allclose(net(x), without(x))


def test_dropout2d_zeroes_whole_channels_in_train_mode_only(compose):
    net = build(compose("model=cnn", "model.dropout2d=0.5"), (1, 28, 28))
    drops = [m for m in net if isinstance(m, nn.Dropout2d)]
    assert len(drops) == 2
    seen = []
    drops[0].register_forward_hook(lambda m, i, out: seen.append((i[0], out)))
    x = torch.randn(8, 1, 28, 28)
    net.train()
    net(x)
    net.eval()
    net(x)
    (train_in, train_out), (eval_in, eval_out) = seen
    zeroed = (train_out == 0).flatten(2).all(2)  # (N, C): whole maps
    assert 0 < zeroed.float().mean() < 1
    kept = ~zeroed
    assert torch.allclose(train_out[kept], 2 * train_in[kept])  # survivors scaled by 1/(1-p)
    assert torch.equal(eval_out, eval_in)


def test_a_norm_with_no_meaning_stops_train_before_it_starts(tmp_path):
    done = regexp(
        "train", "norm=in", "train.epochs=1", "hydra.run.dir=run", cwd=tmp_path, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "regexp train: error: norm=in is not allowed: a norm for an MLP: instance norm "
        "normalizes each channel of a conv map over its pixels, and flat features have no "
        "pixels; use norm=bn, ln or gn, or model=cnn"
    ]
    assert "Traceback" not in done.stdout + done.stderr
    run_dir = tmp_path / "run"
    assert read_json(run_dir / "summary.json")["status"] == "failed"
    assert not list(run_dir.glob("events.out.tfevents.*")) and not (run_dir / "model.txt").exists()


def test_a_cnn_run_records_its_layer_table(tmp_path):
    args = ["model=cnn", "norm=bn", "data=digits", "data.n_train=100", "train.batch_size=32"]
    regexp("train", *args, "train.epochs=2", "hydra.run.dir=run", cwd=tmp_path)
    table = (tmp_path / "run" / "model.txt").read_text()
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["status"] == "completed"
    assert f"Total params: {summary['params']:,}" in table
    assert "Conv2d" in table and "BatchNorm2d" in table and "[2, 16, 4, 4]" in table
    printed = regexp("summary", *args, cwd=tmp_path).stdout
    assert printed.strip() == table.strip()  # `regexp summary` shows the same table
