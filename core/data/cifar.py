"""CIFAR-10 from the official python batches, read without running anything a pickle names."""

from __future__ import annotations

import io
import math
import os
import pickle
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from .dataset import DataError, Dataset, register_dataset
from .user_common import ZIP_ERRORS, _display_name, _open_input, _sniff

CIFAR10_ENV = "CIFAR10_DIR"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_FOLDER = "cifar-10-batches-py"  # what the official cifar-10-python.tar.gz extracts to
CIFAR10_ROW = 3 * 32 * 32  # one image per row: 1024 red, 1024 green, 1024 blue values, each plane row-major
CIFAR_BATCH_MAX_BYTES = 64 * 2**20  # an official batch is ~31 MB (10,000 x 3,072 bytes plus labels and names)
CIFAR_META_MAX_BYTES = 2**20  # the official batches.meta is 158 bytes
CIFAR_ARCHIVE_MAX_UNPACKED = 256 * 2**20  # cifar-10-python.tar.gz unpacks to about 178 MB
CIFAR10_MEMBERS = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE, CIFAR10_META_FILE)
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


def read_cifar_pickle(path: str | Path, max_bytes: int | None = None, source_name: str | None = None) -> dict:
    """One CIFAR python pickle file as a dict with str keys (arrays as numpy arrays); refuses any file over
    ``max_bytes`` (default: the cap on a batch, ``CIFAR_BATCH_MAX_BYTES``), checked before the file is read.
    Messages call it ``source_name`` (default: the path)."""
    path = Path(path)
    max_bytes = CIFAR_BATCH_MAX_BYTES if max_bytes is None else max_bytes
    where = source_name or str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc})") from exc
    _check_size(size, max_bytes, where)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc})") from exc
    return parse_cifar_pickle(data, where)


def _check_size(size: int, max_bytes: int, where: str) -> None:
    if size > max_bytes:
        raise DataError(f"{where}: {size:,} bytes, over the {max_bytes:,}-byte cap for this file; "
                        "an official CIFAR-10 batch is about 31 MB")


def parse_cifar_pickle(data: bytes, where: str) -> dict:
    """A CIFAR python pickle's bytes as a dict with str keys (arrays as numpy arrays); refuses any pickled
    global beyond a numeric array's (see ``_ArrayUnpickler``). ``where`` names the file in messages."""
    try:
        loaded = _ArrayUnpickler(io.BytesIO(data), where).load()
        if not isinstance(loaded, dict):
            raise DataError(f"{where}: expected a pickled dict, found {type(loaded).__name__}")
        out = {}
        for key, value in loaded.items():
            name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            out[name] = _as_array(value, f"{where} [{name[:40]!r}]") if isinstance(value, _PickledArray) else value
        return out
    except DataError:
        raise
    except Exception as exc:  # any malformed pickle: truncated, wrong opcodes, stand-ins called wrongly, too deep
        raise DataError(f"{where}: not a CIFAR-10 python batch ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _cifar10_batch(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 3, 32, 32), int64 labels (N,)) of one parsed batch, checked."""
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        found = ", ".join(sorted(k[:40] for k in batch)[:10]) or "none"
        raise DataError(f"{where}: no {' or '.join(missing)} entry; found {found}")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR10_ROW:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: data must be uint8 of shape (N, {CIFAR10_ROW}); found {found}")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise DataError(f"{where}: labels must be a list of integers; found {type(labels).__name__}")
    if len(labels) != len(data):
        raise DataError(f"{where}: {len(data)} images but {len(labels)} labels")
    if labels and (min(labels) < 0 or max(labels) >= len(CIFAR10_CLASSES)):  # before int64: no overflow
        low, high = (str(v) if len(str(v)) < 20 else f"{str(v)[:12]}…" for v in (min(labels), max(labels)))
        raise DataError(f"{where}: labels must lie in 0..{len(CIFAR10_CLASSES) - 1}; found {low}..{high}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64).reshape(-1)


def _cifar10_names(meta: dict | None, where: str) -> tuple[str, ...]:
    """The class names of ``batches.meta``; the official names when there is no such file."""
    if meta is None:
        return CIFAR10_CLASSES
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != len(CIFAR10_CLASSES) \
            or not all(isinstance(n, bytes | str) for n in names):
        found = f"a list of {len(names)}" if isinstance(names, list) else type(names).__name__
        raise DataError(f"{where}: label_names must be a list of {len(CIFAR10_CLASSES)} names; found {found}")
    return tuple((n.decode("utf-8", "replace") if isinstance(n, bytes) else n)[:100] for n in names)


def _cifar10_dataset(batches: dict[str, dict], meta: dict | None, where, name: str, origin: str) -> Dataset:
    """The dataset from parsed batches (keyed by file name); ``where(file)`` names a file in messages."""
    class_names = _cifar10_names(meta, where(CIFAR10_META_FILE))
    train = [_cifar10_batch(batches[f], where(f)) for f in CIFAR10_TRAIN_FILES]
    x_test, y_test = _cifar10_batch(batches[CIFAR10_TEST_FILE], where(CIFAR10_TEST_FILE))
    x_train = np.concatenate([x for x, _ in train]).astype(np.float32)
    x_train /= 255.0
    x_test = x_test.astype(np.float32)
    x_test /= 255.0
    return Dataset(name, x_train, np.concatenate([y for _, y in train]), x_test, y_test, class_names, source=origin)


def is_cifar10_folder(path: str | Path) -> bool:
    """True when ``path`` holds CIFAR-10's python batches, or the extracted folder that holds them."""
    folder = Path(path)
    return (folder / CIFAR10_TEST_FILE).is_file() or (folder / CIFAR10_FOLDER).is_dir()


def load_cifar10_folder(path: str | Path, name: str = "cifar10", source_name: str | None = None) -> Dataset:
    """CIFAR-10 from its python batches (``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
    ``batches.meta``) in ``path``, the extracted ``cifar-10-batches-py`` folder or the folder holding it.
    Every file is size-capped and read with ``_ArrayUnpickler``: nothing it names can run. Images become
    float32 NCHW in [0, 1]; ids follow the batches' order (data_batch_1 first). Messages name the files under
    ``source_name`` when given (else their paths)."""
    folder = Path(path)
    if not (folder / CIFAR10_TEST_FILE).is_file() and (folder / CIFAR10_FOLDER).is_dir():
        folder = folder / CIFAR10_FOLDER
    missing = [f for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE) if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{source_name or folder}: missing {', '.join(missing)}; set ${CIFAR10_ENV} to the "
                        f"extracted `{CIFAR10_FOLDER}` folder of cifar-10-python.tar.gz (nothing is downloaded)")

    def where(file: str) -> str:
        return f"{source_name}/{file}" if source_name else str(folder / file)

    meta_path = folder / CIFAR10_META_FILE
    meta = read_cifar_pickle(meta_path, CIFAR_META_MAX_BYTES, where(CIFAR10_META_FILE)) if meta_path.is_file() \
        else None
    files = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    batches = {f: read_cifar_pickle(folder / f, source_name=where(f)) for f in files}
    return _cifar10_dataset(batches, meta, where, name, str(folder))


def load_cifar10_archive(source: str | Path | bytes, source_name: str | None = None, name: str = "cifar10") -> Dataset:
    """CIFAR-10 from ``cifar-10-python.tar.gz`` (or any tar or zip holding the python batches), a path or an
    upload's bytes; nothing is extracted to disk. The archive's unpacked size is summed from its member headers
    as they come and refused past ``CIFAR_ARCHIVE_MAX_UNPACKED``; each batch is capped like a file."""
    where_archive = _display_name(source, source_name)
    expected = "cifar-10-python.tar.gz, or a tar or zip of data_batch_1..5, test_batch and batches.meta"
    found: dict[str, bytes] = {}

    def take(member: str, size: int, read) -> None:
        base = PurePosixPath(member).name
        if base not in CIFAR10_MEMBERS:
            return
        if base in found:
            raise DataError(source=where_archive, found=f"{base} twice", expected=expected,
                            fix="pack one copy of each batch")
        _check_size(size, CIFAR_META_MAX_BYTES if base == CIFAR10_META_FILE else CIFAR_BATCH_MAX_BYTES,
                    f"{where_archive}: {member}")
        found[base] = read()

    with _open_input(source, where_archive, expected) as f:
        head = f.read(512)
        f.seek(0)
        try:
            if head.startswith(b"PK"):
                with zipfile.ZipFile(f) as zf:
                    infos = [i for i in zf.infolist() if not i.is_dir()]
                    unpacked = sum(i.file_size for i in infos if PurePosixPath(i.filename).name in CIFAR10_MEMBERS)
                    _check_unpacked(unpacked, where_archive)
                    for info in infos:
                        take(info.filename, info.file_size, lambda i=info: zf.read(i))
            else:
                unpacked = 0
                with tarfile.open(fileobj=f, mode="r|*") as tf:  # a stream: one pass, nothing extracted
                    for member in tf:
                        unpacked += member.size
                        _check_unpacked(unpacked, where_archive)
                        if member.isreg():
                            take(member.name, member.size, lambda m=member: tf.extractfile(m).read())
        except DataError:
            raise
        except (tarfile.TarError, *ZIP_ERRORS) as exc:
            raise DataError(source=where_archive, found=f"{_sniff(head[:8])} that cannot be read "
                                                        f"({type(exc).__name__}: {str(exc)[:120]})",
                            expected=expected, fix="upload the official cifar-10-python.tar.gz") from exc
    missing = [f for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE) if f not in found]
    if missing:
        raise DataError(source=where_archive, found=f"no {', '.join(missing)}", expected=expected,
                        fix="upload the official cifar-10-python.tar.gz")

    def where(file: str) -> str:
        return f"{where_archive}: {file}"

    meta = parse_cifar_pickle(found[CIFAR10_META_FILE], where(CIFAR10_META_FILE)) if CIFAR10_META_FILE in found \
        else None
    batches = {f: parse_cifar_pickle(found.pop(f), where(f)) for f in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)}
    return _cifar10_dataset(batches, meta, where, name, where_archive)


def _check_unpacked(unpacked: int, where: str) -> None:
    if unpacked > CIFAR_ARCHIVE_MAX_UNPACKED:
        raise DataError(source=where, found=f"members that unpack to more than {CIFAR_ARCHIVE_MAX_UNPACKED:,} bytes",
                        expected="CIFAR-10's python batches (about 178 MB unpacked)",
                        fix="upload the official cifar-10-python.tar.gz")


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

