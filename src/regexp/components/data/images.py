"""The image sets: scikit-learn's bundled 8x8 digits, and MNIST, Fashion-MNIST and CIFAR-10
from their published files in data.root (fetched there with data.download=true).

Images keep their natural shape, (N, C, H, W): the CNN takes them as they are and the MLP
flattens them. Pixels are scaled to [0, 1], then standardized per channel with the training
statistics when data.standardize is on.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from regexp.components.data import files
from regexp.components.data.base import (
    ClassificationData,
    Dataset,
    classification,
    stratified_split,
    subsample,
)
from regexp.components.lazy import lazy
from regexp.components.options import need, option
from regexp.errors import ConfigError, UserError

np = lazy("numpy")


@option("data")
@dataclass
class Digits(ClassificationData):
    """scikit-learn's bundled 8x8 digits, split into train and valid by stratified sampling."""

    name: str = "digits"
    valid_fraction: float = 0.2
    standardize: bool = True

    def load(self, seed: int, device) -> Dataset:
        return digits(self, seed, device)

    def check(self) -> None:
        super().check()
        f = self.valid_fraction
        need(0 < f < 1, "data.valid_fraction", f, "between 0 and 1")


@dataclass
class FileData(ClassificationData):
    """An image set read from its published files in `root` (train and test split fixed)."""

    root: str = "data"
    download: bool = False  # fetch missing files from the usual mirrors, checksums verified
    standardize: bool = True

    def load(self, seed: int, device) -> Dataset:
        return idx_set(self, seed, device)


@option("data")
@dataclass
class MNIST(FileData):
    name: str = "mnist"


@option("data")
@dataclass
class FashionMNIST(FileData):
    name: str = "fashion_mnist"


@option("data")
@dataclass
class CIFAR10(FileData):
    name: str = "cifar10"

    def load(self, seed: int, device) -> Dataset:
        return cifar10(self, seed, device)


def digits(cfg: Digits, seed: int, device) -> Dataset:
    """scikit-learn's bundled 8x8 digits as 1x8x8 images, split into train and valid."""
    x, y = _digits_arrays()
    if not 1 <= round(cfg.valid_fraction * len(y)) <= len(y) - 1:
        raise ConfigError(
            "data.valid_fraction",
            cfg.valid_fraction,
            f"a share of the {len(y)} digits that leaves at least one on each side",
        )
    train_seed, valid_seed = cfg.seeds(seed)
    train, valid = stratified_split(y, cfg.valid_fraction, np.random.default_rng(valid_seed))
    # The subsample and the label noise go on from the stream of train_seed's split, as in a
    # run of that seed: so data.draw=0 is seed 0's data, and a draw is a seed's but for the
    # split, which stays seed 0's.
    rng = np.random.default_rng(train_seed)
    stratified_split(y, cfg.valid_fraction, rng)
    x_train, y_train = subsample(x[train], y[train], cfg, rng)
    return classification(
        x_train, y_train, x[valid], y[valid], cfg, rng, device, n_classes=10, scale=16.0
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits, (N, 1, 8, 8) float32 in 0..16, and their labels. Read from the CSV
    file scikit-learn ships, as its load_digits does, without importing scikit-learn (which
    takes a second); through load_digits where that file is not found."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        x, y = table[:, :-1], table[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data.astype(np.float32), bunch.target
    return x.reshape(-1, 1, 8, 8), y


# --- MNIST and Fashion-MNIST: four IDX files each -------------------------------------------


@dataclass(frozen=True)
class IdxSet:
    title: str
    folder: str  # torchvision's: root/<folder>/raw/
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # of each published .gz file


IMAGES, LABELS = "{}-images-idx3-ubyte", "{}-labels-idx1-ubyte"

IDX_SETS = {
    "mnist": IdxSet(
        "MNIST",
        "MNIST",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": IdxSet(
        "Fashion-MNIST",
        "FashionMNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}


def idx_set(cfg: FileData, seed: int, device) -> Dataset:
    """MNIST or Fashion-MNIST: 60,000 training and 10,000 test images of 1x28x28."""
    spec = IDX_SETS[cfg.name]
    root, folder = Path(cfg.root).expanduser(), f"{spec.folder}/raw"

    def fetch(missing: list[str]) -> None:
        for name in missing:
            urls = [f"{mirror}{name}.gz" for mirror in spec.mirrors]
            files.fetch(urls, root / folder / f"{name}.gz", spec.md5[name])

    paths = _locate(cfg, root, [folder], spec.title, list(spec.md5), fetch)
    split = {}
    for part, title in (("train", "training"), ("t10k", "test")):
        images = files.read_idx(
            paths[IMAGES.format(part)], (0, 28, 28), f"{spec.title}'s {title} images"
        )
        labels = files.read_idx(paths[LABELS.format(part)], (0,), f"{spec.title}'s {title} labels")
        _check_labels(paths[LABELS.format(part)], labels, len(images))
        _check_some(paths[IMAGES.format(part)], len(images), f"{spec.title}'s {title} images")
        split[part] = images[:, None], labels
    rng = np.random.default_rng(cfg.seeds(seed)[0])  # the test set is the valid set
    x_train, y_train = subsample(*split["train"], cfg, rng)
    return classification(
        x_train, y_train, *split["t10k"], cfg, rng, device, n_classes=10, scale=255.0
    )


# --- CIFAR-10: the python pickle batches ----------------------------------------------------

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"


def cifar10(cfg: FileData, seed: int, device) -> Dataset:
    """CIFAR-10: 50,000 training and 10,000 test images of 3x32x32."""
    root = Path(cfg.root).expanduser()

    def fetch(missing: list[str]) -> None:
        archive = files.fetch([CIFAR_URL], root / CIFAR_URL.rsplit("/", 1)[1], CIFAR_MD5)
        files.extract_tar(archive, root)

    paths = _locate(cfg, root, [CIFAR_FOLDER], "CIFAR-10", CIFAR_BATCHES, fetch)
    batches = {name: files.read_cifar_batch(path) for name, path in paths.items()}
    for name, (images, labels) in batches.items():
        _check_labels(paths[name], labels, len(images))
    test = batches.pop("test_batch")
    _check_some(paths["test_batch"], len(test[0]), "CIFAR-10's test images")
    x_train = np.concatenate([images for images, _ in batches.values()])
    y_train = np.concatenate([labels for _, labels in batches.values()])
    where = f"{paths['data_batch_1']} to data_batch_5"
    _check_some(where, len(x_train), "CIFAR-10's training images")
    rng = np.random.default_rng(cfg.seeds(seed)[0])  # the test set is the valid set
    x_train, y_train = subsample(x_train, y_train, cfg, rng)
    return classification(x_train, y_train, *test, cfg, rng, device, n_classes=10, scale=255.0)


# --- shared ---------------------------------------------------------------------------------


def _locate(cfg: FileData, root: Path, folders: list[str], title: str, names, fetch):
    """{name: path} of each file in `names`, in root or one of its `folders`. Missing files
    are fetched with `fetch(missing)` when data.download is on, else refused."""
    for attempt in ("find", "fetched"):
        paths = {name: files.find(root, folders, name) for name in names}
        missing = [name for name, path in paths.items() if path is None]
        if not missing or not cfg.download or attempt == "fetched":
            break
        fetch(missing)
    if missing:
        where = " or ".join(str(root / folder) for folder in ["", *folders])
        raise UserError(
            f"data.root={cfg.root}: {title}'s {', '.join(missing)} (or .gz) not found in "
            f"{where}; put {title}'s published files there, or set data.download=true to "
            "fetch them"
        )
    return paths


def _check_some(where, n: int, what: str) -> None:
    """A split with no images has nothing to train or test on: refused, naming its file."""
    if n == 0:
        raise UserError(f"{where}: no images; expected {what}, at least one")


def _check_labels(path: Path, labels: np.ndarray, n_images: int) -> None:
    if len(labels) != n_images:
        raise UserError(
            f"{path}: {len(labels)} labels for {n_images} images; expected one label per image"
        )
    if len(labels) and labels.max() >= 10:
        raise UserError(f"{path}: a label {labels.max()}; expected classes 0 to 9")
