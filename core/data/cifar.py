"""CIFAR-10 from the official python batches, read without running anything a pickle names."""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset, register_dataset

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

