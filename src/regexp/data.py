"""Every dataset, returned as tensors on the run's device plus what the model needs to know."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from regexp import config


@dataclass
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_valid: torch.Tensor
    y_valid: torch.Tensor
    task: str  # "regression" or "classification"
    in_shape: tuple[int, ...]  # one example's shape: (1,) for the toy line, (1, 8, 8) for digits
    n_outputs: int  # regression targets, or classes

    def to(self, device: torch.device) -> Dataset:
        tensors = {
            k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_valid", "y_valid")
        }
        return Dataset(**tensors, task=self.task, in_shape=self.in_shape, n_outputs=self.n_outputs)


def load(cfg: config.Data, seed: int, device: torch.device | str = "cpu") -> Dataset:
    """The dataset `cfg` names, made or split with `seed`, on `device`."""
    return LOADERS[cfg.name](cfg, seed).to(torch.device(device))


def toy_regression(cfg: config.ToyRegression, seed: int) -> Dataset:
    """The lesson-24 data: train and valid on the same x grid, y = w*x plus their own noise."""
    g = torch.Generator().manual_seed(seed)

    def points(n: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.linspace(*cfg.x_range, n).unsqueeze(1)
        return x, cfg.w * x + noise * torch.randn(x.shape, generator=g)

    x_train, y_train = points(cfg.n_train, cfg.noise_train)
    x_valid, y_valid = points(cfg.n_valid, cfg.noise_valid)
    return Dataset(x_train, y_train, x_valid, y_valid, "regression", (1,), 1)


def digits(cfg: config.Digits, seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits as 1x8x8 images, split and standardized."""
    from sklearn.datasets import load_digits  # heavy: only when digits is chosen

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    return _classification(x, bunch.target, cfg, seed)


def _classification(x: np.ndarray, y: np.ndarray, cfg, seed: int) -> Dataset:
    """Split (stratified), subsample, add label noise and standardize an array dataset."""
    rng = np.random.default_rng(seed)
    n_classes = int(y.max()) + 1
    train, valid = _stratified_split(y, cfg.valid_fraction, rng)
    if cfg.n_train is not None and cfg.n_train < len(train):
        keep, _ = _stratified_split(y[train], 1 - cfg.n_train / len(train), rng)
        train = train[keep]
    x_train, y_train, x_valid, y_valid = x[train], y[train].copy(), x[valid], y[valid]
    if cfg.label_noise > 0:
        flip = rng.random(len(y_train)) < cfg.label_noise
        y_train[flip] = rng.integers(0, n_classes, flip.sum())
    if cfg.standardize:
        mean, std = x_train.mean(), x_train.std()
        x_train, x_valid = (x_train - mean) / std, (x_valid - mean) / std
    return Dataset(
        torch.from_numpy(np.ascontiguousarray(x_train)),
        torch.from_numpy(y_train).long(),
        torch.from_numpy(np.ascontiguousarray(x_valid)),
        torch.from_numpy(y_valid).long(),
        "classification",
        tuple(x.shape[1:]),
        n_classes,
    )


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    """Indices (rest, picked): `fraction` of each class picked at random, the rest kept."""
    rest, picked = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * len(idx)))
        picked.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(picked))


LOADERS: dict[str, Callable[..., Dataset]] = {
    "toy_regression": toy_regression,
    "digits": digits,
}
