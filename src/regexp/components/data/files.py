"""The published files of MNIST, Fashion-MNIST and CIFAR-10: find, read, check, fetch.

A file that is missing, truncated or not in the expected format is refused with a
UserError: one line naming the file and what was expected.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import pickle
import reprlib
import zlib
from pathlib import Path

from regexp.components.lazy import lazy
from regexp.errors import UserError

np = lazy("numpy")

log = logging.getLogger("regexp")

GZIP_MAGIC = b"\x1f\x8b"
# Deflate's densest output: 1032 bytes out per byte in (zlib's documentation). A header that
# announces more data than its file could hold at that rate is damaged, whatever it says.
DEFLATE_MOST = 1032


def find(root: Path, folders: list[str], name: str) -> Path | None:
    """`name` (or `name`.gz) directly in `root` or in one of its `folders`, else None."""
    for folder in ["", *folders]:
        for candidate in (name, name + ".gz"):
            path = root / folder / candidate
            if path.is_file():
                return path
    return None


def _gzipped(path: Path) -> bool:
    """Whether the file is gzipped (whatever its name)."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _open(path: Path):
    """The file's bytes as a stream, through gzip when it is gzipped."""
    return gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")  # noqa: SIM115


# --- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------


def read_idx(path: Path, shape: tuple[int, ...], what: str) -> np.ndarray:
    """An IDX file of unsigned bytes as a writable uint8 array. `shape` is the expected
    shape with 0 for the count; `what` names the content for the error messages."""
    magic = 0x0800 + len(shape)
    expected = f"{what} in IDX format (magic number 0x{magic:08x}, shape {_dims(shape)})"
    try:
        with _open(path) as f:
            header = f.read(4)
            if header != magic.to_bytes(4, "big"):
                found = f"0x{header.hex()}" if len(header) == 4 else f"{len(header)} bytes"
                raise UserError(f"{path}: not {expected}: its magic number is {found}")
            raw = f.read(4 * len(shape))
            if len(raw) < 4 * len(shape):
                raise UserError(f"{path}: truncated in its header; expected {expected}")
            dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4"))
            if any(e and d != e for d, e in zip(dims[1:], shape[1:], strict=True)):
                raise UserError(f"{path}: holds shape {_dims(dims)}; expected {expected}")
            _check_capacity(path, dims, f.tell(), expected)
            array = np.empty(dims, dtype=np.uint8)
            got = _read_into(f, memoryview(array.reshape(-1)))
            if got < array.size:
                raise UserError(
                    f"{path}: truncated: {got} of the {array.size} data bytes its header "
                    f"announces; expected {expected}"
                )
            if f.read(1):
                raise UserError(f"{path}: longer than its header says; expected {expected}")
    except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:
        raise UserError(f"{path}: truncated or corrupt ({exc}); expected {expected}") from None
    return array


def _check_capacity(path: Path, dims: tuple[int, ...], header: int, expected: str) -> None:
    """Refuse, before anything is allocated for it, data that the header of `path` announces
    and the file cannot hold: more bytes than follow the header, or, gzipped, than deflate
    could pack into its size."""
    size = path.stat().st_size
    room = size * DEFLATE_MOST if _gzipped(path) else size - header
    announced = math.prod(dims)
    if announced > room:
        raise UserError(
            f"{path}: truncated or corrupt: its header announces {_dims(dims)} "
            f"({announced:,} bytes of data), more than a file of {size:,} bytes can hold; "
            f"expected {expected}"
        )


def _read_into(f, buffer: memoryview) -> int:
    """Fill `buffer` from `f`; returns the bytes read, fewer only at the end of the file."""
    done = 0
    while done < len(buffer):
        n = f.readinto(buffer[done:])
        if not n:
            break
        done += n
    return done


def _dims(dims) -> str:
    return "x".join("N" if d == 0 else str(d) for d in dims)


# --- CIFAR-10's python batches ----------------------------------------------------------------


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch (a dict of bytes, lists and one numpy array) and nothing
    else: a pickle can run any code it names, so only numpy's array rebuilders pass."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy 1
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images (N, 3, 32, 32) uint8 and labels (N,) int64, each a
    class number."""
    expected = (
        "a CIFAR-10 python batch (a pickled dict with b'data', N x 3072 uint8, and b'labels')"
    )
    try:
        with _open(path) as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except EOFError:
        raise UserError(f"{path}: truncated; expected {expected}") from None
    except Exception as exc:  # whatever a damaged pickle raises, it is the file's fault
        why = "truncated" if "truncated" in str(exc) else f"not a batch ({exc})"
        raise UserError(f"{path}: {why}; expected {expected}") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path}: holds a {type(batch).__name__}; expected {expected}")
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3072
        and isinstance(labels, (list, np.ndarray))
        and len(labels) == len(data)
    ):
        raise UserError(f"{path}: has not the keys, shapes or types of {expected}")
    wrong = _not_classes(labels, CIFAR_CLASSES)
    if wrong:
        raise UserError(
            f"{path}: its b'labels' hold {wrong}; expected one class number from 0 to "
            f"{CIFAR_CLASSES - 1} per image"
        )
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


CIFAR_CLASSES = 10


def _not_classes(labels: list | np.ndarray, n: int) -> str:
    """What in `labels` is not a class number from 0 to n - 1 (a float, bytes, -1, a nested
    list...), or "" where they all are."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            return f"a {labels.ndim}-D array of {labels.dtype}"
        wrong = labels[(labels < 0) | (labels >= n)]
        return f"the label {wrong[0]}" if len(wrong) else ""
    for label in labels:
        if type(label) is not int or not 0 <= label < n:  # (not a bool, float or numpy scalar)
            return f"the label {reprlib.repr(label)}"
    return ""


# --- fetching -------------------------------------------------------------------------------


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected_md5: str) -> None:
    """Refuse a file whose MD5 is not the published one."""
    found = md5(path)
    if found != expected_md5:
        raise UserError(f"{path}: MD5 {found}, expected {expected_md5}: not the published file")


def fetch(urls: list[str], dest: Path, expected_md5: str) -> Path:
    """Download `dest` from the first of `urls` that answers with the published file."""
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
            verify(part, expected_md5)
        except (OSError, UserError) as exc:  # no network, refused, timed out, a wrong file
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        part.replace(dest)
        return dest
    part.unlink(missing_ok=True)
    raise UserError(f"could not download {dest.name}: {'; '.join(errors)}")


def extract_tar(archive: Path, into: Path) -> None:
    import tarfile

    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # refuses absolute paths and links out of `into`
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)  # noqa: S202
