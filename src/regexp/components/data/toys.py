"""The generated datasets: the lessons' 1-D regression and the 2-D classification toys.

The 2-D toys are TensorFlow Playground's shapes (circles, xor, gauss, spiral) and
scikit-learn's moons, scaled to about [-1, 1]^2, two classes of equal size, with Gaussian
jitter of std `noise` on each coordinate. Train and valid points come from two random
streams of the run's seed, so the valid set stays the same when n_train changes; with
data.draw=d, the training stream is seed d's and the valid stream seed 0's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from regexp.components.data.base import (
    MAKING,
    ClassificationData,
    Data,
    Dataset,
    classification,
    inputs,
    standardization,
)
from regexp.components.lazy import lazy
from regexp.components.options import known, need, option

torch = lazy("torch")
np = lazy("numpy")

# f in the toy regression y = w*f(x) + noise
FUNCTIONS = {
    "linear": lambda x: x,
    "sin": lambda x: torch.sin(math.pi * x),
    "cubic": lambda x: x**3,
}


@option("data")
@dataclass
class ToyRegression(Data):
    """The lesson-24 data: y = w*f(x) + noise on x = linspace(x_range)."""

    name: str = "toy_regression"
    figure = "fit"
    n_train: int = 10
    n_valid: int = 10
    w: float = 1.5
    function: str = "linear"  # f: linear (x), sin (sin(pi*x)) or cubic (x^3)
    noise_train: float = 0.5
    noise_valid: float = 0.3
    x_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])

    def load(self, seed: int, device) -> Dataset:
        return toy_regression(self, seed, device)

    def nbytes(self) -> int:
        return MAKING * (self.n_train + self.n_valid) * (4 + 4)  # float32 x and y

    def check(self) -> None:
        super().check()
        need(self.n_valid >= 1, "data.n_valid", self.n_valid, "an integer >= 1")
        known("data.function", self.function, FUNCTIONS)
        for key in ("noise_train", "noise_valid"):
            value = getattr(self, key)
            need(value >= 0, f"data.{key}", value, "a standard deviation >= 0")
        need(
            len(self.x_range) == 2 and self.x_range[0] < self.x_range[1],
            "data.x_range",
            self.x_range,
            "[low, high] with low < high",
        )


def toy_regression(cfg: ToyRegression, seed: int, device) -> Dataset:
    """The lesson-24 data: train and valid on the same x grid, y = w*f(x) plus their own noise
    (one generator: the training noise first, then the valid noise). A draw is fresh noise on
    the grid; the dataset knows f(x) and the noise std of its valid targets."""
    f = FUNCTIONS[cfg.function]

    def both(seed: int):
        """Seed's (x, w*f(x), y) of the training set, then of the valid set."""
        g = torch.Generator().manual_seed(seed)
        for n, noise in ((cfg.n_train, cfg.noise_train), (cfg.n_valid, cfg.noise_valid)):
            x = torch.linspace(*cfg.x_range, n).unsqueeze(1)
            target = cfg.w * f(x)
            yield x, target, target + noise * torch.randn(x.shape, generator=g)

    train_seed, valid_seed = cfg.seeds(seed)
    (x_train, _, y_train), _ = both(train_seed)
    _, (x_valid, target, y_valid) = both(valid_seed)
    mean, std = standardization(x_train) if cfg.standardize else (0.0, 1.0)
    x_train, x_valid = inputs(x_train, x_valid, device, standardize=cfg.standardize)
    return Dataset(
        x_train,
        y_train.to(device),
        x_valid,
        y_valid.to(device),
        "regression",
        (1,),
        1,
        valid_target=target.to(device),
        valid_noise=cfg.noise_valid,
        truth=lambda x: cfg.w * f(x.cpu() * std + mean),  # (x as the model sees it)
    )


# Each shape: (class, count, rng) -> that many points of the class, before the jitter.


def _moons(c: int, k: int, rng: np.random.Generator) -> np.ndarray:
    t = math.pi * rng.random(k)
    if c == 0:
        x, y = np.cos(t), np.sin(t)
    else:
        x, y = 1 - np.cos(t), 0.5 - np.sin(t)
    return np.stack([x - 0.5, y - 0.25], 1)  # centred


def _circles(c: int, k: int, rng: np.random.Generator) -> np.ndarray:
    r = 0.5 * rng.random(k) if c == 0 else 0.7 + 0.3 * rng.random(k)  # a disc inside a ring
    t = 2 * math.pi * rng.random(k)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _spiral(c: int, k: int, rng: np.random.Generator) -> np.ndarray:
    r = rng.random(k)
    t = 1.75 * 2 * math.pi * r + math.pi * c  # two arms, half a turn apart
    return np.stack([r * np.sin(t), r * np.cos(t)], 1)


def _xor(c: int, k: int, rng: np.random.Generator) -> np.ndarray:
    a = 0.05 + 0.95 * rng.random((k, 2))  # |x| and |y|, kept off the axes
    sx = rng.choice([-1.0, 1.0], k)
    sy = sx if c == 0 else -sx  # class 0 where x*y > 0
    return a * np.stack([sx, sy], 1)


def _gauss(c: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return (-0.4 if c == 0 else 0.4) + 0.15 * rng.standard_normal((k, 2))


SHAPES = {"moons": _moons, "circles": _circles, "spiral": _spiral, "xor": _xor, "gauss": _gauss}


def points_2d(shape: str, n: int, noise: float, rng: np.random.Generator):
    """n points of `shape` (float32, (n, 2)) and their classes: n//2 of class 1, the rest 0."""
    sizes = (n - n // 2, n // 2)
    x = np.concatenate([SHAPES[shape](c, k, rng) for c, k in enumerate(sizes)])
    x += noise * rng.standard_normal((n, 2))
    return x.astype(np.float32), np.repeat([0, 1], sizes)


@dataclass
class Toy2D(ClassificationData):
    """A 2-D two-class toy (TensorFlow Playground's shapes), in about [-1, 1]^2."""

    figure = "decision_boundary"

    n_train: int = 200
    n_valid: int = 1000
    noise: float = 0.1  # the std of the Gaussian jitter added to each coordinate

    def load(self, seed: int, device) -> Dataset:
        return toy_2d(self, seed, device)

    def nbytes(self) -> int:
        return MAKING * (self.n_train + self.n_valid) * (2 * 4 + 8)  # float32 (x, y), int64 class

    def check(self) -> None:
        super().check()
        need(self.n_valid >= 1, "data.n_valid", self.n_valid, "an integer >= 1")
        need(self.noise >= 0, "data.noise", self.noise, "a standard deviation >= 0")


@option("data")
@dataclass
class Moons(Toy2D):
    name: str = "moons"
    noise: float = 0.2


@option("data")
@dataclass
class Circles(Toy2D):
    name: str = "circles"


@option("data")
@dataclass
class Spiral(Toy2D):
    name: str = "spiral"
    noise: float = 0.05


@option("data")
@dataclass
class Xor(Toy2D):
    name: str = "xor"


@option("data")
@dataclass
class Gauss(Toy2D):
    name: str = "gauss"


def toy_2d(cfg: Toy2D, seed: int, device) -> Dataset:
    t, v = cfg.seeds(seed)
    x_train, y_train = points_2d(cfg.name, cfg.n_train, cfg.noise, np.random.default_rng([t, 0]))
    x_valid, y_valid = points_2d(cfg.name, cfg.n_valid, cfg.noise, np.random.default_rng([v, 1]))
    rng = np.random.default_rng([t, 2])  # label noise
    return classification(x_train, y_train, x_valid, y_valid, cfg, rng, device, n_classes=2)
