"""What every dataset returns, and the knobs they share: n_train, label_noise, standardize."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from omegaconf import MISSING

from regexp.errors import ConfigError
from regexp.lazy import lazy
from regexp.options import need

torch = lazy("torch")


@dataclass
class Data:
    """The schema every data option extends; `load` makes the dataset it describes."""

    name: str = MISSING
    # Subsample the training set to this many examples (stratified), to provoke overfitting;
    # the generated datasets make this many.
    n_train: int | None = None
    # Inputs to mean 0 and std 1 per feature (or image channel), with the training statistics.
    standardize: bool = False

    def load(self, seed: int, device) -> Dataset:
        raise NotImplementedError

    def check(self) -> None:
        n = self.n_train
        need(n is None or n >= 1, "data.n_train", n, "null or an integer >= 1")


@dataclass
class ClassificationData(Data):
    label_noise: float = 0.0  # share of training labels replaced at random by another class

    def check(self) -> None:
        super().check()
        need(0 <= self.label_noise <= 1, "data.label_noise", self.label_noise, "between 0 and 1")


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


def classification(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    cfg: ClassificationData,
    rng: np.random.Generator,
    device: torch.device,
    *,
    n_classes: int,
    scale: float = 1.0,
) -> Dataset:
    """A classification Dataset on `device` from arrays in their natural shape: the training
    set subsampled to n_train and its labels noised as `cfg` says, the inputs divided by
    `scale` and standardized. Subsampling happens before the float conversion, so a uint8
    image set becomes float32 once, on the device, and only for the examples kept."""
    if cfg.n_train is not None and cfg.n_train != len(y_train):
        if cfg.n_train > len(y_train):
            raise ConfigError(
                "data.n_train",
                cfg.n_train,
                f"at most {len(y_train)}, the size of {cfg.name}'s training set",
            )
        keep = stratified_pick(y_train, cfg.n_train, rng)
        x_train, y_train = x_train[keep], y_train[keep]
    y_train = torch.from_numpy(np.asarray(y_train, dtype=np.int64))
    if cfg.label_noise > 0:
        y_train = noisy_labels(y_train, cfg.label_noise, n_classes, rng)
    x_train, x_valid = inputs(x_train, x_valid, device, scale, cfg.standardize)
    return Dataset(
        x_train,
        y_train.to(device),
        x_valid,
        torch.from_numpy(np.asarray(y_valid, dtype=np.int64)).to(device),
        "classification",
        tuple(x_train.shape[1:]),
        n_classes,
    )


def inputs(x_train, x_valid, device, scale: float = 1.0, standardize: bool = False):
    """Train and valid inputs as float32 tensors on `device`, divided by `scale` and, when
    asked, standardized per feature or channel (dim 1) with the training statistics.
    Everything after the one conversion to float happens in place."""
    xs = [torch.as_tensor(np.ascontiguousarray(x)).to(device).float() for x in (x_train, x_valid)]
    if scale != 1:
        for x in xs:
            x.div_(scale)
    if standardize:
        dims = [0, *range(2, xs[0].ndim)]  # all but the feature/channel dim
        count = xs[0].numel() // xs[0].shape[1]  # values per feature (one example: no spread)
        std, mean = torch.std_mean(xs[0], dim=dims, correction=int(count > 1), keepdim=True)
        std[std == 0] = 1  # a constant feature (a border pixel), or one example, stays at 0
        for x in xs:
            x.sub_(mean).div_(std)
    return xs


def stratified_pick(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of exactly `k` examples, sorted, each class in proportion to its share of `y`
    (largest remainders round up)."""
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * (k / len(y))
    take = np.floor(quota).astype(int)
    take[np.argsort(take - quota, kind="stable")[: k - take.sum()]] += 1
    picked = [
        rng.permutation(np.flatnonzero(y == c))[:t] for c, t in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator):
    """Indices (rest, picked): a stratified `fraction` of the examples picked, the rest kept."""
    picked = stratified_pick(y, int(round(fraction * len(y))), rng)
    rest = np.ones(len(y), dtype=bool)
    rest[picked] = False
    return np.flatnonzero(rest), picked


def noisy_labels(y: torch.Tensor, share: float, n_classes: int, rng: np.random.Generator):
    """`y` with round(share * len(y)) labels, picked at random, replaced by another class
    drawn at random: exactly that share of the labels is wrong."""
    y = y.clone()
    flip = torch.from_numpy(rng.choice(len(y), int(round(share * len(y))), replace=False))
    shift = torch.from_numpy(rng.integers(1, n_classes, len(flip)))
    y[flip] = (y[flip] + shift) % n_classes
    return y
