"""MNIST, Fashion-MNIST and CIFAR-10 from small files written here in their published formats,
and the one-line refusal of a missing, truncated or wrong-format file."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from regexp import errors
from regexp.components import data
from regexp.components.data import files

IDX_NAMES = {
    "train-images-idx3-ubyte": 0,
    "train-labels-idx1-ubyte": 0,
    "t10k-images-idx3-ubyte": 1,
    "t10k-labels-idx1-ubyte": 1,
}


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, magic: int | None = None):
    """`array` as an IDX file of unsigned bytes: magic 0x0000080N, N big-endian sizes, data."""
    magic = 0x0800 + array.ndim if magic is None else magic
    payload = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def idx_set(folder: Path, n=(30, 10), *, gz=True, seed=0) -> dict[str, np.ndarray]:
    """The four MNIST files with n[0] training and n[1] test images in `folder`."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, part in IDX_NAMES.items():
        if "images" in name:
            arrays[name] = rng.integers(0, 256, (n[part], 28, 28), dtype=np.uint8)
        else:
            arrays[name] = np.arange(n[part], dtype=np.uint8) % 10
        write_idx(folder / (name + (".gz" if gz else "")), arrays[name], gz=gz)
    return arrays


def cifar_batches(folder: Path, n=(6, 4)) -> dict[str, np.ndarray]:
    """data_batch_1..5 with n[0] images each and test_batch with n[1], as CIFAR-10 ships them:
    pickles of dicts with bytes keys whose array names numpy.core.multiarray (protocol 3
    stands in for Python 2's protocol 2, which Python 3 writes bytes in differently)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        k = n[1] if name == "test_batch" else n[0]
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, k)],
            b"data": rng.integers(0, 256, (k, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(k)],
        }
        raw = pickle.dumps(batch, protocol=3).replace(b"numpy._core.", b"numpy.core.")
        (folder / name).write_bytes(raw)
        batches[name] = batch
    return batches


def load(compose, name, root, *overrides):
    conf = compose(f"data={name}", f"data.root={root}", "data.standardize=false", *overrides)
    return data.load(conf.data, conf.seed)


@pytest.mark.slow
def test_mnist_from_gzipped_files_directly_in_root(compose, tmp_path):
    arrays = idx_set(tmp_path)
    d = load(compose, "mnist", tmp_path)
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_valid.shape == (10, 1, 28, 28)
    assert d.in_shape == (1, 28, 28) and d.n_outputs == 10 and d.x_train.dtype == torch.float32
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float()[:, None] / 255
    assert torch.allclose(d.x_train, expected)
    assert d.y_valid.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    sub = load(compose, "mnist", tmp_path, "data.n_train=20")
    assert len(sub.y_train) == 20 and sub.y_train.bincount().tolist() == [2] * 10
    assert torch.equal(sub.x_train, load(compose, "mnist", tmp_path, "data.n_train=20").x_train)
    other = load(compose, "mnist", tmp_path, "data.n_train=20", "seed=1")
    assert not torch.equal(sub.x_train, other.x_train)  # the subsample follows the seed
    noisy = load(compose, "mnist", tmp_path, "data.n_train=20", "data.label_noise=0.5")
    assert (noisy.y_train != sub.y_train).sum() == 10


def test_fashion_mnist_from_plain_files_in_torchvisions_layout(compose, tmp_path):
    idx_set(tmp_path / "FashionMNIST" / "raw", gz=False)
    d = load(compose, "fashion_mnist", tmp_path)
    assert d.x_train.shape == (30, 1, 28, 28) and len(d.y_valid) == 10
    standardized = data.load(compose("data=fashion_mnist", f"data.root={tmp_path}").data, 0)
    assert abs(standardized.x_train.mean()) < 1e-4


def test_cifar10_from_its_python_batches(compose, tmp_path):
    batches = cifar_batches(tmp_path / "cifar-10-batches-py")
    d = load(compose, "cifar10", tmp_path)
    assert d.x_train.shape == (30, 3, 32, 32) and d.x_valid.shape == (4, 3, 32, 32)
    assert d.in_shape == (3, 32, 32) and d.n_outputs == 10
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)  # channels first, row-major
    assert torch.allclose(d.x_train[0], torch.from_numpy(first).float() / 255)
    assert d.y_valid.tolist() == batches["test_batch"][b"labels"]
    standardized = data.load(compose("data=cifar10", f"data.root={tmp_path}").data, 0).x_train
    per_channel = standardized.mean(dim=(0, 2, 3))
    assert per_channel.abs().max() < 1e-4 and standardized.std(dim=(0, 2, 3)).min() > 0.99


def refusal(compose, name, root) -> str:
    with pytest.raises(errors.UserError) as info:
        load(compose, name, root)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("gz", [False, True])
def test_a_truncated_idx_file_is_refused_naming_it(compose, tmp_path, gz):
    idx_set(tmp_path, gz=gz)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    message = refusal(compose, "mnist", tmp_path)
    assert message.startswith(f"{path}: truncated")
    assert "MNIST's training images in IDX format" in message


def test_a_wrong_magic_number_is_refused_naming_the_file_and_the_expected_one(compose, tmp_path):
    idx_set(tmp_path, gz=False)
    labels = np.zeros(10, dtype=np.uint8)
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", labels)  # a labels file in its place
    message = refusal(compose, "mnist", tmp_path)
    assert message.startswith(f"{path}: not MNIST's test images in IDX format")
    assert "magic number 0x00000803" in message and "its magic number is 0x00000801" in message


def test_idx_files_of_the_wrong_image_size_or_label_count_are_refused(compose, tmp_path):
    idx_set(tmp_path, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((30, 32, 32), dtype=np.uint8))
    assert "holds shape 30x32x32; expected" in refusal(compose, "mnist", tmp_path)
    idx_set(tmp_path, gz=False)
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29, dtype=np.uint8))
    assert refusal(compose, "mnist", tmp_path) == (
        f"{path}: 29 labels for 30 images; expected one label per image"
    )


def test_damaged_or_foreign_cifar_batches_are_refused(compose, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    cifar_batches(folder)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    assert refusal(compose, "cifar10", tmp_path).startswith(f"{path}: truncated; expected a CIFAR")

    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    assert f"{path}: holds a list; expected a CIFAR-10 python batch" in refusal(
        compose, "cifar10", tmp_path
    )

    class Payload:  # what a malicious pickle does: call something on load
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    path.write_bytes(pickle.dumps({b"data": Payload()}, protocol=3))
    message = refusal(compose, "cifar10", tmp_path)
    assert "mkdir" in message and "expected a CIFAR-10 python batch" in message
    assert not (tmp_path / "pwned").exists()


def test_missing_files_are_refused_with_where_they_were_looked_for(compose, tmp_path):
    message = refusal(compose, "mnist", tmp_path / "nowhere")
    assert message.startswith(f"data.root={tmp_path / 'nowhere'}: MNIST's train-images-idx3-ubyte")
    assert f"{tmp_path / 'nowhere' / 'MNIST' / 'raw'}" in message
    assert "data.download=true" in message
    idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    message = refusal(compose, "mnist", tmp_path)
    assert "t10k-labels-idx1-ubyte" in message and "train-images" not in message
    assert "CIFAR-10's data_batch_1" in refusal(compose, "cifar10", tmp_path)


def test_the_checksum_rejects_a_file_that_is_not_the_published_one(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"not the real thing")
    files.verify(path, hashlib.md5(b"not the real thing").hexdigest())  # the right one passes
    with pytest.raises(errors.UserError) as info:
        files.verify(path, "f68b3c2dcbeaaa9fbdd348bbdeb94873")
    assert str(info.value).startswith(f"{path}: MD5 ")
    assert "expected f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(info.value)


def test_download_fetches_the_missing_files_from_the_first_good_mirror(
    compose, tmp_path, monkeypatch
):
    """The mirrors here are file:// URLs (urllib treats them as it does http://): a dead one,
    one serving altered files, and one with the published files."""
    from regexp.components.data import images

    good = tmp_path / "good"
    idx_set(good)
    (tmp_path / "bad").mkdir()
    for name in IDX_NAMES:
        (tmp_path / "bad" / f"{name}.gz").write_bytes(b"altered")
    spec = images.IDX_SETS["mnist"]
    mirrors = tuple(f"{(tmp_path / m).as_uri()}/" for m in ("dead", "bad", "good"))
    md5 = {name: files.md5(good / f"{name}.gz") for name in spec.md5}
    monkeypatch.setitem(images.IDX_SETS, "mnist", replace(spec, mirrors=mirrors, md5=md5))
    root = tmp_path / "root"
    d = load(compose, "mnist", root, "data.download=true")
    assert d.x_train.shape == (30, 1, 28, 28)
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(
        f"{name}.gz" for name in IDX_NAMES
    )  # torchvision's layout, no partial files left

    monkeypatch.setitem(images.IDX_SETS, "mnist", replace(spec, mirrors=mirrors[:2], md5=md5))
    with pytest.raises(errors.UserError) as info:
        load(compose, "mnist", tmp_path / "elsewhere", "data.download=true")
    message = str(info.value)
    assert message.startswith("could not download train-images-idx3-ubyte.gz: ")
    assert "No such file" in message and "not the published file" in message
    assert not list((tmp_path / "elsewhere").rglob("*.gz*"))


def test_download_unpacks_cifar10s_archive(compose, tmp_path, monkeypatch):
    import tarfile

    from regexp.components.data import images

    cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(images, "CIFAR_URL", archive.as_uri())
    monkeypatch.setattr(images, "CIFAR_MD5", files.md5(archive))
    d = load(compose, "cifar10", tmp_path / "root", "data.download=true")
    assert d.x_train.shape == (30, 3, 32, 32)
    assert (tmp_path / "root" / "cifar-10-batches-py" / "test_batch").is_file()


MEMORY_PROBE = """
import resource, sys, time
from pathlib import Path
import torch  # (data imports it on first use: its own memory is not the data's)
from regexp.components import data

def rss():  # bytes resident now
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()

def high_water():  # bytes: the most resident since the last reset
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024

cfg = data.MNIST(root=sys.argv[1])
# The high-water mark from here on (not the imports'): with the kernel reclaiming pages of an
# idle process, its import-time peak could stand above what it holds now.
Path("/proc/self/clear_refs").write_text("5")
before = rss()
start = time.perf_counter()
d = data.load(cfg, 0)
seconds = time.perf_counter() - start
peak = high_water()
floats = sum(t.numel() * t.element_size() for t in (d.x_train, d.x_valid))
print(floats, rss() - before, peak - before, seconds)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc")
def test_mnist_sized_files_load_within_their_float32_size(tmp_path):
    """60,000 + 10,000 images: the float32 tensors are built once, in place, from uint8."""
    import subprocess

    idx_set(tmp_path, n=(60_000, 10_000), gz=False)
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    floats, kept, peak, _ = (float(v) for v in done.stdout.split())
    assert floats == 70_000 * 784 * 4
    # Once loaded, the data takes its float32 size (and a little slack); on the way, never a
    # second float copy of it: at most the uint8 arrays (a quarter) and the standardization's
    # temporaries, well under 2x.
    assert kept < 1.25 * floats, (kept / floats, done.stdout)
    assert peak < 1.75 * floats, (peak / floats, done.stdout)
