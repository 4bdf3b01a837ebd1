"""What every dataset returns, and the knobs they share: n_train, draw, label_noise,
standardize."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from omegaconf import MISSING

from regexp.components.lazy import lazy
from regexp.components.options import need
from regexp.errors import ConfigError, show

torch = lazy("torch")
np = lazy("numpy")


@dataclass
class Data:
    """The schema every data option extends; `load` makes the dataset it describes."""

    name: str = MISSING
    figure = ""  # (not a config key) the live figure that suits its runs (plots.PLOTS), or none
    # Subsample the training set to this many examples (stratified), to provoke overfitting;
    # the generated datasets make this many.
    n_train: int | None = None
    # Inputs to mean 0 and std 1 per feature (or image channel), with the training statistics.
    standardize: bool = False
    # Which training set of this size the run draws: null, the one `seed` gives; d, the one
    # seed d gives, tested on seed 0's valid set, so that every run with a draw, whatever its
    # seed or draw, is tested on the same points (as a bias-variance decomposition needs).
    draw: int | None = None

    def load(self, seed: int, device) -> Dataset:
        raise NotImplementedError

    def nbytes(self) -> int | None:
        """About the most memory making this dataset takes, from its config alone; None where
        its files say (they are checked as they are read)."""
        return None

    def seeds(self, seed: int) -> tuple[int, int]:
        """The seeds (train, valid) that the run's training and valid sets are the ones of:
        `seed` for both, or with data.draw=d, d for the training set and 0 for the valid set."""
        return (seed, seed) if self.draw is None else (self.draw, 0)

    def check(self) -> None:
        n = self.n_train
        need(n is None or n >= 1, "data.n_train", n, "null or an integer >= 1")
        d = self.draw
        need(d is None or 0 <= d < 2**32, "data.draw", d, "null or an integer from 0 to 2**32 - 1")


# Making a generated dataset takes about this many times the bytes of what it returns (its
# float64 and other intermediates, measured at the peak on toy_regression and moons).
MAKING = 3


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
    # What the data knows of its valid targets, None where it doesn't (only toy_regression
    # does): the noise-free target f(x) of each valid input, shaped as y_valid, and the std of
    # the noise added to it.
    valid_target: torch.Tensor | None = None
    valid_noise: float | None = None
    # The noise-free target at any inputs as the model sees them (toy_regression): what the
    # bias-variance report decomposes against over the whole input range.
    truth: Callable[[torch.Tensor], torch.Tensor] | None = None
    figure: str = ""  # the live figure its option declares (Data.figure)

    def to(self, device: torch.device) -> Dataset:
        """The same dataset with every tensor on `device`."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(
            self, **{k: v.to(device) for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        )


def subsample(x: np.ndarray, y: np.ndarray, cfg: ClassificationData, rng: np.random.Generator):
    """The training pool (x, y) of an image set cut to a stratified data.n_train picked with
    `rng` (all of it when n_train is null). A draw picks its own n_train; with the whole pool
    and no label noise to draw, every draw would be the same set, so a draw is refused there."""
    whole = cfg.n_train is None or cfg.n_train == len(y)
    if cfg.draw is not None and whole and cfg.label_noise == 0:
        raise ConfigError(
            "data.draw",
            cfg.draw,
            f"null with data.n_train={show(cfg.n_train)} (all {len(y)} training examples) and "
            f"no label noise: every draw would be the same set; set data.n_train below {len(y)} "
            "or data.label_noise > 0",
        )
    if whole:
        return x, y
    if cfg.n_train > len(y):
        raise ConfigError(
            "data.n_train", cfg.n_train, f"at most {len(y)}, the size of {cfg.name}'s training set"
        )
    keep = stratified_pick(y, cfg.n_train, rng)
    return x[keep], y[keep]


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
    labels noised as `cfg` says (with `rng`), the inputs divided by `scale` and standardized.
    Arrays go in as they are (an image set's training set subsampled already), so a uint8
    image set becomes float32 once, on the device, and only for the examples kept."""
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
        mean, std = standardization(xs[0])
        for x in xs:
            x.sub_(mean).div_(std)
    return xs


def standardization(x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training inputs' mean and std per feature or channel (dim 1), as `inputs` takes
    them off."""
    dims = [0, *range(2, x_train.ndim)]  # all but the feature/channel dim
    count = x_train.numel() // x_train.shape[1]  # values per feature (one example: no spread)
    std, mean = torch.std_mean(x_train, dim=dims, correction=int(count > 1), keepdim=True)
    std[std == 0] = 1  # a constant feature (a border pixel), or one example, stays at 0
    return mean, std


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
