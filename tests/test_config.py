"""The config: every group option composes against its schema; the checks refuse bad values."""

from __future__ import annotations

import pytest
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from regexp import config, errors

GROUPS = ["data", "model", "norm", "init", "optim", "sched"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (config.conf_dir() / group).glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "group,option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda v: str(v)
)
def test_every_group_option_composes_with_its_schema(compose, group, option):
    conf = compose(f"{group}={option}")
    node = getattr(conf, group)
    assert node.name == option
    # The YAML is typed by the dataclass registered for it, not a loose dict.
    assert type(node).__name__ != "dict" and hasattr(node, "__dataclass_fields__")


def test_defaults_are_the_lesson_24_setup(compose):
    conf = compose()
    assert (conf.data.name, conf.model.name, conf.norm.name) == ("toy_regression", "mlp", "none")
    assert conf.model.hidden == [200, 200, 200] and conf.model.activation == "relu"
    assert (conf.optim.name, conf.optim.lr, conf.optim.momentum) == ("sgd", 0.01, 0.9)
    assert conf.optim.weight_decay == 0.0 and conf.sched.name == "none"
    assert conf.train.epochs == 2000 and conf.train.batch_size is None
    assert conf.log.hist_every == 200 and conf.seed == 0 and conf.device == "auto"
    assert conf.data.n_train == 10 and conf.data.w == 1.5


def test_overrides_are_typed(compose):
    conf = compose("optim.weight_decay=1e-2", "train.batch_size=4", "model.hidden=[8,4]")
    assert conf.optim.weight_decay == pytest.approx(0.01) and conf.train.batch_size == 4
    assert conf.model.hidden == [8, 4]


def test_a_key_of_another_option_is_refused(compose):
    with pytest.raises(Exception) as info:
        compose("optim=adam", "optim.momentum=0.9")  # momentum is SGD's, not Adam's
    assert isinstance(info.value.__cause__, (ConfigKeyError, ConfigAttributeError))
    assert info.value.__cause__.full_key == "optim.momentum"


def test_a_wrong_type_is_refused(compose):
    with pytest.raises(Exception) as info:
        compose("train.epochs=ten")
    assert isinstance(info.value.__cause__, ValidationError)


@pytest.mark.slow
@pytest.mark.parametrize(
    "override,key",
    [
        ("optim.lr=0", "optim.lr"),
        ("optim.weight_decay=-1e-3", "optim.weight_decay"),
        ("model.dropout=1", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("model.activation=relu6", "model.activation"),
        ("device=gpu", "device"),
        ("loss=hinge", "loss"),
        ("reg.l1=-1", "reg.l1"),
        ("reg.l2=-0.1", "reg.l2"),
        ("train.clip_grad_norm=0", "train.clip_grad_norm"),
        ("log.weight_stats_every=-1", "log.weight_stats_every"),
        ("optim=rmsprop optim.alpha=1", "optim.alpha"),
        ("optim=adagrad optim.lr_decay=-1", "optim.lr_decay"),
        ("optim=adamw optim.eps=0", "optim.eps"),
        ("sched=multistep sched.milestones=[]", "sched.milestones"),
        ("sched=plateau sched.factor=1", "sched.factor"),
        ("sched=plateau sched.mode=up", "sched.mode"),
        ("sched=cosine sched.T_max=0", "sched.T_max"),
        ("sched=exponential sched.gamma=0", "sched.gamma"),
        ("sched=lambda sched.step_size=0", "sched.step_size"),
        ("sched=plateau sched.cooldown=-1", "sched.cooldown"),
        ("data.x_range=[1,-1]", "data.x_range"),
    ],
)
def test_checks_name_the_key_and_what_is_allowed(compose, override, key):
    with pytest.raises(errors.ConfigError) as info:
        compose(*override.split())
    assert info.value.key == key
    message = str(info.value)
    assert message.startswith(f"{key}=") and "\n" not in message and "allowed" in message


def test_a_key_in_a_run_name_is_its_shortest_ending_that_tells_it_apart():
    from regexp.config import short_keys

    keys = ["optim.weight_decay", "seed", "model.dropout", "norm", "optim.lr", "data.draw"]
    assert list(short_keys(keys).values()) == [
        "weight_decay",
        "seed",
        "dropout",
        "norm",
        "lr",
        "draw",
    ]
    assert short_keys(["model.dropout", "norm.dropout", "optim.lr"]) == {
        "model.dropout": "model.dropout", "norm.dropout": "norm.dropout", "optim.lr": "lr"
    }  # fmt: skip
    assert short_keys(["lr", "optim.lr"]) == {"lr": "lr", "optim.lr": "optim.lr"}
