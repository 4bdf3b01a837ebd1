"""Every dataset, returned as tensors on the run's device plus what the model needs to know.

base.py    the Dataset and the knobs all share (n_train, draw, label_noise, standardize)
toys.py    the generated ones: the lessons' regression, the 2-D classification toys
images.py  digits (bundled with scikit-learn), MNIST, Fashion-MNIST, CIFAR-10
files.py   reading, checking and fetching the published files of the last three

Each data option's schema sits beside its loader and registers itself (regexp.options).
"""

from __future__ import annotations

from regexp.components.data.base import ClassificationData, Data, Dataset
from regexp.components.data.images import CIFAR10, MNIST, Digits, FashionMNIST, FileData
from regexp.components.data.toys import (
    FUNCTIONS,
    Circles,
    Gauss,
    Moons,
    Spiral,
    Toy2D,
    ToyRegression,
    Xor,
)
from regexp.components.lazy import lazy

torch = lazy("torch")

__all__ = [
    "CIFAR10",
    "MNIST",
    "Circles",
    "ClassificationData",
    "Data",
    "Dataset",
    "Digits",
    "FUNCTIONS",
    "FashionMNIST",
    "FileData",
    "Gauss",
    "Moons",
    "Spiral",
    "Toy2D",
    "ToyRegression",
    "Xor",
    "load",
]


def load(cfg: Data, seed: int, device="cpu") -> Dataset:
    """The dataset `cfg` names, made or split with `seed`, on `device`."""
    dataset = cfg.load(seed, torch.device(device))
    dataset.figure = cfg.figure
    return dataset
