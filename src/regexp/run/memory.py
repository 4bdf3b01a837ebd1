"""Whether a run fits in the memory free on its device, checked before anything is allocated
(the kernel would kill it without a word, or the machine would thrash): its dataset from the
config alone, before it is made; its model on the meta device, which gives every tensor's
shape and allocates nothing, before it is built. A refusal names the key to change."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch

from regexp import config
from regexp.components import data, models, optim
from regexp.errors import ConfigError


def free_memory(device: torch.device) -> int | None:
    """The bytes free on `device` (the memory the OS can still give, on the CPU, within the
    limit of the process's cgroup: a container's, a Slurm job's --mem), or None where it cannot
    be known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        free = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(min(free, _cgroup_room()))


CGROUPS, OWN_CGROUPS = Path("/sys/fs/cgroup"), Path("/proc/self/cgroup")
# A cgroup's memory files under CGROUPS, v2 then v1: its controller's folder, its
# limit, its use, and the reclaimable page cache that its use counts (memory.stat's key).
CGROUP_FILES = [
    ("", "memory.max", "memory.current", "inactive_file"),
    ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
]


def _cgroup_room() -> float:
    """What the process's cgroup may still take (its limit less what it holds but can't give
    back), or infinity where it has no limit."""
    try:
        lines = OWN_CGROUPS.read_text().splitlines()
    except OSError:
        return math.inf
    paths = dict(line.split(":", 2)[1:] for line in lines if line.count(":") >= 2)
    for mount, limit, usage, cache in CGROUP_FILES:
        own = paths.get(mount, "/").lstrip("/")  # (v2's line is "0::/path")
        for folder in (CGROUPS / mount / own, CGROUPS / mount):
            try:
                most = (folder / limit).read_text().strip()
                used = int((folder / usage).read_text())
                stat = dict(
                    line.split() for line in (folder / "memory.stat").read_text().splitlines()
                )
            except (OSError, ValueError):
                continue
            if not most.isdigit() or int(most) >= 2**62:  # "max", or v1's no limit
                return math.inf
            return max(0, int(most) - used + int(stat.get(cache, 0)))
    return math.inf


def gb(n: int) -> str:
    return f"{n / 2**30:.3g} GB"


def check_data(cfg: data.Data) -> None:
    """Refuse a generated dataset too large to make in the memory free (it is made on the
    CPU); a file set's files are checked as they are read (files.py)."""
    need, free = cfg.nbytes(), free_memory(torch.device("cpu"))
    if need is None or free is None or need <= free:
        return
    key = max(("n_train", "n_valid"), key=lambda k: getattr(cfg, k, 0))
    raise ConfigError(
        f"data.{key}",
        getattr(cfg, key),
        f"a size that fits: making data={cfg.name} with {cfg.n_train:,} training and "
        f"{cfg.n_valid:,} valid examples needs about {gb(need)}, and the machine has "
        f"{gb(free)} free",
    )


@dataclasses.dataclass
class Size:
    """What a model of a config takes in memory."""

    params: int  # parameters
    param_bytes: int
    example_bytes: int  # the activations of one example through it

    def need(self, batch: int, copies: int) -> int:
        """Bytes to train on `batch` examples at a time, with `copies` of the parameters
        (weights, gradients, optimizer buffers), and twice the activations (kept for the
        backward pass, and their gradients)."""
        return copies * self.param_bytes + 2 * self.example_bytes * batch


def size(conf: config.Config, model_cfg: models.Model, dataset: data.Dataset) -> Size:
    """The size of `model_cfg`'s model for `dataset`, built on the meta device and passed two
    examples there (in eval mode: batch norm normalizes one example by itself)."""
    outputs = optim.model_outputs(conf.loss, dataset.task, dataset.n_outputs)
    with torch.device("meta"):
        model = models.build(model_cfg, conf.norm, dataset.in_shape, outputs).eval()
        examples = torch.empty(2, *dataset.in_shape)
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(lambda m, i, out: sizes.append(out.numel() * out.element_size()))
        for m in model.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        model(examples)
    for hook in hooks:
        hook.remove()
    return Size(
        sum(p.numel() for p in model.parameters()),
        sum(p.numel() * p.element_size() for p in model.parameters()),
        sum(sizes) // len(examples),
    )


def check_model(
    conf: config.Config, dataset: data.Dataset, device: torch.device, training: bool = True
) -> None:
    """Refuse a model that cannot be trained (or, not `training`, shown with two examples) in
    the memory free on `device`, before it is built. The estimate: 4 copies of the parameters
    (weights, gradients, two optimizer buffers) and a batch's activations twice. What is to
    blame: the model's field that, at its default, would make the run fit (model.channels=
    [200000]); else the batch, when a smaller one fits; else the model."""
    n = len(dataset.x_train)
    batch, copies = (min(conf.train.batch_size or n, n), 4) if training else (2, 1)
    model = size(conf, conf.model, dataset)
    need, free = model.need(batch, copies), free_memory(device)
    if free is None or need <= free:
        return
    shown = f"{model.params:,} parameters"
    if model.example_bytes * batch > model.param_bytes:
        shown = f"the activations of a batch of {batch:,} through a model of {shown}"
    why = (
        f"a size that fits: {'the run' if training else 'the model'} needs about {gb(need)} "
        f"({shown}), and {device} has {gb(free)} free"
    )
    field = _field_to_blame(conf, dataset, batch, copies, free)
    most = (free - copies * model.param_bytes) // max(1, 2 * model.example_bytes)
    if field is None and training and most >= 1:
        key = "train.batch_size" if conf.train.batch_size else "data.n_train"
        raise ConfigError(key, batch, f"{why}; a train.batch_size of at most {most:,} fits")
    if field is None:
        field = "channels" if isinstance(conf.model, models.CNN) else "hidden"
    raise ConfigError(f"model.{field}", getattr(conf.model, field), why)


def _field_to_blame(conf, dataset, batch: int, copies: int, free: int) -> str | None:
    """The first field of the model config that, set back to its default, makes it fit."""
    default = type(conf.model)()
    for field in dataclasses.fields(default):
        value = getattr(default, field.name)
        if getattr(conf.model, field.name) == value:
            continue
        try:
            smaller = size(conf, dataclasses.replace(conf.model, **{field.name: value}), dataset)
        except ConfigError:
            continue  # (its default does not fit the other fields)
        if smaller.need(batch, copies) <= free:
            return field.name
    return None
