"""Every dataset, returned as tensors on the run's device plus what the model needs to know.

base.py    the Dataset and the knobs all share (n_train, label_noise, standardize)
toys.py    the generated ones: the lessons' regression, the 2-D classification toys
images.py  digits (bundled with scikit-learn), MNIST, Fashion-MNIST, CIFAR-10
files.py   reading, checking and fetching the published files of the last three
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from regexp import config
from regexp.data.base import Dataset
from regexp.data.images import cifar10, digits, idx_set
from regexp.data.toys import FUNCTIONS, SHAPES, toy_2d, toy_regression

__all__ = ["Dataset", "FUNCTIONS", "LOADERS", "load"]

# name -> loader(cfg, seed, device) -> Dataset
LOADERS: dict[str, Callable[..., Dataset]] = {
    "toy_regression": toy_regression,
    **dict.fromkeys(SHAPES, toy_2d),
    "digits": digits,
    "mnist": idx_set,
    "fashion_mnist": idx_set,
    "cifar10": cifar10,
}


def load(cfg: config.Data, seed: int, device: torch.device | str = "cpu") -> Dataset:
    """The dataset `cfg` names, made or split with `seed`, on `device`."""
    return LOADERS[cfg.name](cfg, seed, torch.device(device))
