"""The root config, its registration with Hydra's ConfigStore, and the checks that span groups.

Each config group's options have their schema dataclasses beside the code that builds them
(data/, models.py, init.py, optim.py, schedules.py), registered as `schema/<group>/<name>`
when those modules are imported, which this one does. The root schema `Config` below is
registered as `schema`: conf/train.yaml names it first in its defaults list, so Hydra types
every key while composing. `validate` then turns the composed config into dataclasses and
runs every check.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from regexp.components.data import Data
from regexp.components.init import Init
from regexp.components.models import MLP, Model, Norm
from regexp.components.optim import LOSSES, Optim, Reg
from regexp.components.options import known, names, need
from regexp.components.schedules import Sched
from regexp.errors import ConfigError, UserError, no_such_key, no_such_option, show
from regexp.run import rundir


def conf_dir() -> Path:
    """conf/ as shipped inside the installed package, else the checkout's top-level conf/."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "conf"


@dataclass
class EarlyStop:
    # Stop when the valid loss has not improved for this many epochs; null: off.
    patience: Optional[int] = None
    min_delta: float = 0.0  # an improvement is a fall of more than this
    # true: the run ends holding the weights of its best valid epoch (also kept as best.pt)
    restore_best: bool = True

    def check(self) -> None:
        patience = self.patience
        need(
            patience is None or patience >= 1,
            "train.early_stop.patience",
            patience,
            "null (off) or an integer >= 1",
        )
        need(self.min_delta >= 0, "train.early_stop.min_delta", self.min_delta, "a number >= 0")


@dataclass
class Train:
    epochs: int = 2000
    batch_size: Optional[int] = None  # null: full batch, as in the lessons
    # Save checkpoint.pt every this many epochs; null: every minute of training. Always at the
    # end and when interrupted.
    checkpoint_every: Optional[int] = None
    clip_grad_norm: Optional[float] = None  # max total gradient norm; null: no clipping
    early_stop: EarlyStop = field(default_factory=EarlyStop)

    def check(self) -> None:
        self.early_stop.check()
        need(self.epochs >= 1, "train.epochs", self.epochs, "an integer >= 1")
        size = self.batch_size
        need(
            size is None or size >= 1,
            "train.batch_size",
            size,
            "null (full batch) or an integer >= 1",
        )
        clip = self.clip_grad_norm
        need(clip is None or clip > 0, "train.clip_grad_norm", clip, "null (off) or a norm > 0")
        every = self.checkpoint_every
        need(
            every is None or every >= 1,
            "train.checkpoint_every",
            every,
            "null (every minute) or an integer >= 1",
        )


@dataclass
class Log:
    hist_every: int = 200  # weight and gradient histograms every this many epochs; 0: never
    # The fit (1-D regression) or decision boundary (2-D data) every this many epochs and at
    # the end, as TensorBoard images and a PNG in the run dir; 0: never.
    figure_every: int = 200
    # weights/l2_norm, l1_norm, sparsity every this many epochs, and in the first and last;
    # null: about 50 times a run (every train.epochs/50); 0: never
    weight_stats_every: Optional[int] = None

    def check(self) -> None:
        need(self.hist_every >= 0, "log.hist_every", self.hist_every, "an integer >= 0")
        need(self.figure_every >= 0, "log.figure_every", self.figure_every, "an integer >= 0")
        every = self.weight_stats_every
        need(
            every is None or every >= 0, "log.weight_stats_every", every, "null or an integer >= 0"
        )


@dataclass
class Config:
    data: Data = MISSING
    model: Model = MISSING
    norm: Norm = MISSING
    init: Init = MISSING
    optim: Optim = MISSING
    sched: Sched = MISSING
    loss: str = "auto"
    reg: Reg = field(default_factory=Reg)
    train: Train = field(default_factory=Train)
    log: Log = field(default_factory=Log)
    seed: int = 0
    device: str = "auto"
    resume: Optional[str] = None  # a run dir: continue that run from its checkpoint
    # torch's CPU threads; null: 1, whatever the launcher (the count moves the last digits,
    # 2 threads thrash on a busy machine, and gain little on a quiet one)
    threads: Optional[int] = None


ConfigStore.instance().store(name="schema", node=Config)

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
GROUPS = ("data", "model", "norm", "init", "optim", "sched")


def validate(cfg: DictConfig) -> Config:
    """The composed config as dataclasses, after every check a value must pass."""
    allowed = {f.name for f in fields(Config)}
    for key in cfg:
        if key not in allowed:
            raise ConfigError(key, cfg[key], f"no such key (keys: {', '.join(sorted(allowed))})")
    refuse_added_keys(cfg)
    conf: Config = OmegaConf.to_object(cfg)
    for key, value in flat(asdict(conf)).items():
        check_number(key, value)
    check(conf)
    return conf


def refuse_added_keys(node: DictConfig, path: str = "") -> None:
    """A key added with `+` that the typed config does not have (`+model.hiden=[8]`, which
    would train with the default) is refused, with the closest known name."""
    schema = OmegaConf.get_type(node)
    if not is_dataclass(schema):
        return
    known = {f.name for f in fields(schema)}
    for key in node:
        where = f"{path}{key}"
        if key not in known:
            raise UserError(no_such_key(where, schema))
        if not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            refuse_added_keys(node[key], f"{where}.")


# More torch threads than any machine here has cores (100,000 crashed torch's thread pool). A
# bound of the config, not of the machine: a sweep checked on one node runs on another.
MOST_THREADS = 256

# Beyond these, a number means nothing to a run here, and breaks inside torch (overflow, inf).
LARGEST_FLOAT, LARGEST_INT = 1e30, 2**53


def check_number(key: str, value) -> None:
    """Every number, in a list too, is finite and of a size that can mean something."""
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(key, value, "a finite number")
        if isinstance(v, float) and abs(v) > LARGEST_FLOAT:
            raise ConfigError(key, value, f"a number of at most {LARGEST_FLOAT:g} in size")
        if isinstance(v, int) and abs(v) > LARGEST_INT:
            raise ConfigError(key, value, "an integer of at most 2**53 in size")


def check(conf: Config) -> None:
    """Every group's own checks, then those that span groups."""
    for group in GROUPS:
        known(group, getattr(conf, group).name, names(group))
    known("loss", conf.loss, ["auto", *LOSSES])
    need(
        DEVICE.fullmatch(conf.device) is not None,
        "device",
        conf.device,
        "auto, cpu, cuda, cuda:N or mps",
    )
    need(0 <= conf.seed < 2**32, "seed", conf.seed, "an integer from 0 to 2**32 - 1")
    for part in (*GROUPS, "reg", "train", "log"):
        getattr(conf, part).check()

    m, i = conf.model, conf.init
    need(
        m.bias or i.bias == "default",
        "init.bias",
        i.bias,
        "default with model.bias=false, which leaves no biases to set",
    )
    need(
        not (i.layers == "conv" and isinstance(m, MLP)),
        "init.layers",
        i.layers,
        "all or linear with model=mlp, which has no conv layers",
    )
    need(
        conf.threads is None or 1 <= conf.threads <= MOST_THREADS,
        "threads",
        conf.threads,
        f"null (1) or an integer from 1 to {MOST_THREADS}",
    )
    if conf.resume is not None:
        rundir.checkpoint_of(conf.resume)


# What may change when a run goes on (`resume=`); anything else would make it another run.
RESUME_MAY_CHANGE = ("train.epochs", "train.checkpoint_every", "device", "threads", "log.")


def identity(conf: Config) -> str:
    """What makes the run `conf` describes the run it is, whatever a resume may change: its
    config less RESUME_MAY_CHANGE, as JSON. A checkpoint carries its run's, to prove it
    belongs to the run it is resumed in."""
    import json

    kept = {
        k: v
        for k, v in flat(asdict(conf)).items()
        if not k.startswith(RESUME_MAY_CHANGE) and k != "resume"
    }
    return json.dumps(kept, sort_keys=True, default=str)


def flat(tree, prefix: str = "") -> dict:
    """A nested config as {dotted key: leaf value}."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}


def compose(overrides: list[str], hydra: bool = False) -> DictConfig:
    """The train config with `overrides`, composed without running an app (no output dir);
    with `hydra`, Hydra's own config too, under `hydra`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    check_group_choices(overrides)
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        return hydra_compose("train", overrides=overrides, return_hydra_config=hydra)


def check_group_choices(overrides: list[str]) -> None:
    """An override of one of regexp's config groups names one of its options: `data=null`,
    `data=5` or `data=../train` (a path Hydra would follow out of the group) is refused with
    the group's options. A name that no file has is Hydra's to refuse (a --config-dir may
    add options)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in overrides:
        try:
            override = parser.parse_override(arg)
            group = override.key_or_group
            hydras = group.startswith("hydra/")  # (its options come from plugins too)
            if not hydras and (group.startswith("hydra") or not (conf_dir() / group).is_dir()):
                continue
            sweep = override.is_sweep_override()
            values = list(override.sweep_iterator()) if sweep else [override.value()]
        except HydraException:
            continue  # not an override, or a sweep of a kind with no list: Hydra says why
        for value in values:
            if hydras and not isinstance(value, str):
                raise UserError(
                    f"{group}={show(value)}: no such option; a group's choice is the name of "
                    f"one of its options ({group}=NAME; regexp train --hydra-help lists them)"
                )
            if hydras:
                continue
            if not isinstance(value, str) or "/" in value:
                options = sorted(f.stem for f in (conf_dir() / group).glob("*.yaml"))
                raise UserError(no_such_option(group, show(value), options))


# conf/train.yaml's run and sweep dirs: `_NAME` for +experiment=NAME, nothing without one; and
# a fresh dir each, resolved once per config (cached, and the cache goes with a sweep job's
# config to the process that runs it). At import, as a job's process (a joblib worker)
# resolves its dir once it has the schema here.
if not OmegaConf.has_resolver("regexp_named"):
    OmegaConf.register_new_resolver("regexp_named", lambda name: f"_{name}" if name else "")
if not OmegaConf.has_resolver("regexp_fresh"):
    OmegaConf.register_new_resolver("regexp_fresh", rundir.fresh, use_cache=True)
if not OmegaConf.has_resolver("regexp_hydra_record"):
    OmegaConf.register_new_resolver("regexp_hydra_record", rundir.hydra_record_dir)


def override_key(override: str) -> str:
    """The key an override sets: `model.dropout` of `+model.dropout=0.5`."""
    return override.lstrip("+~").split("=", 1)[0]


def parse_names(names: str) -> list[tuple[str, str | None]]:
    """The keys of `regexp_saved_dirname`'s argument, each with the override a job's dir name
    takes for it ('key=value'), or None where the name leaves the key out ('key')."""
    return [(override_key(entry), entry if "=" in entry else None) for entry in names.split("|")]


# The keys whose values make replicas of one setting rather than another setting.
REPLICA_KEYS = ("seed", "data.draw")


def naming_overrides(overrides: list[str], naming: DictConfig) -> list[str]:
    """The overrides (as given) that name a sweep job's dir: its overrides less
    `naming.exclude_keys` (keys that never name a dir, and those the CLI found the same in
    every job), or all of them where that leaves none (a sweep of one job); sorted as Hydra's
    override_dirname sorts them, but with the replica keys last."""
    excluded = set(naming.exclude_keys)
    kept = [o for o in overrides if override_key(o) not in excluded] or list(overrides)
    return sorted(kept, key=lambda o: (override_key(o) in REPLICA_KEYS, o))


def job_dirname(overrides: list[str], naming: DictConfig) -> str:
    """A sweep job's dir name, which TensorBoard shows as its run's name: what the sweep
    varies, each key by its shortest ending that tells it apart (short_keys), the seed last.
    TensorBoard's sidebar shows about 30 characters of a name and cuts the rest: what makes
    the setting leads, and `weight_decay=0.01,seed=1` fits where `optim.weight_decay=0.01,
    seed=1` loses its seed."""
    named = naming_overrides(overrides, naming)
    short = short_keys(map(override_key, named))
    items = [
        short[override_key(o)] + (naming.kv_sep + o.split("=", 1)[1] if "=" in o else "")
        for o in named
    ]
    return naming.item_sep.join(items)


def short_keys(keys) -> dict[str, str]:
    """Each dotted key by its shortest ending that none of the other `keys` ends with:
    optim.weight_decay as weight_decay, but model.dropout beside norm.dropout whole."""
    keys = list(dict.fromkeys(keys))
    short = {}
    for key in keys:
        parts = key.split(".")
        endings = (".".join(parts[-n:]) for n in range(1, len(parts) + 1))
        short[key] = next(
            end
            for end in endings
            if end == key or not any(o == end or o.endswith("." + end) for o in keys if o != key)
        )
    return short


def dirname(*, _root_: DictConfig) -> str:
    """conf/train.yaml's `hydra.sweep.subdir`: the job's dir name from its overrides."""
    return job_dirname(list(_root_.hydra.overrides.task), _root_.hydra.job.config.override_dirname)


def saved_dirname(names: str, *, _root_: DictConfig) -> str:
    """A job's dir name in a resumed sweep (resume.resumed_sweep): `dirname`, from the job's
    overrides with the values the sweep started with for the keys its resumes gave again
    (`names`: parse_names), so that each job goes on in the dir it started in."""
    started = dict(parse_names(names))
    lines = []
    for override in _root_.hydra.overrides.task:
        line = started.get(override_key(override), override)
        if line is not None:
            lines.append(line)
    return job_dirname(lines, _root_.hydra.job.config.override_dirname)


if not OmegaConf.has_resolver("regexp_dirname"):
    OmegaConf.register_new_resolver("regexp_dirname", dirname)
if not OmegaConf.has_resolver("regexp_saved_dirname"):
    OmegaConf.register_new_resolver("regexp_saved_dirname", saved_dirname)


@dataclass
class Member:
    """One run of a population: its config, its run dir and the overrides that made it."""

    conf: Config
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    start_epoch: int = 0  # a resumed member's checkpoint: a population's members start together
    # A sweep job's overrides that name its dir (what the sweep varies); None: a lone run.
    named: list[str] | None = None
    # Where its lines go, as its lone run's job logging writes them (Hydra's file handler:
    # train.log), when it trains beside others; None: the process's own logging, as alone.
    log_file: Path | None = None
    log_format: str = "[%(asctime)s][%(levelname)s] %(message)s"
