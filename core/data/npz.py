"""A ``.npz`` of named arrays as a dataset: sizes from the zip directory and each array's header are checked
before any array is read; object arrays are refused (nothing is unpickled)."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from . import user_common as C
from .dataset import DataError, Dataset
from .npy_header import HeaderError, StructuredDtype, read_header
from .sources import stratified_split
from .user_common import (
    ZIP_ERRORS,
    _check_class_sizes,
    _check_labels,
    _display_name,
    _images_to_nchw,
    _mib,
    _named,
    _open_input,
    _sniff,
)

_NPZ_EXPECTED = "a .npz archive of named arrays, as numpy.savez or numpy.savez_compressed write"
_NPZ_FIX = "save the arrays with numpy.savez_compressed('data.npz', x=images, y=labels)"


def _npz_header(fp, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from a .npy header (read without ``ast``: ``npy_header``), refusing object
    and structured dtypes."""
    try:
        shape, fortran, dtype = read_header(fp)
    except StructuredDtype as exc:
        raise DataError(source=where, found="a structured dtype", expected="plain numbers or strings",
                        fix="store each field as its own array") from exc
    except HeaderError as exc:
        raise DataError(source=where, found=f"a damaged array header: {exc}"[:300],
                        expected="arrays written by numpy", fix=_NPZ_FIX) from exc
    if dtype.hasobject:
        raise DataError(source=where, found="an object (pickled) array",
                        expected="numbers or strings; pickled arrays are never loaded",
                        fix="store images as uint8 or float and labels as integers")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(source=where, found=f"a structured dtype {dtype}", expected="plain numbers or strings",
                        fix="store each field as its own array")
    if any(d < 0 for d in shape):
        raise DataError(source=where, found=f"shape {shape}", expected="non-negative dimensions")
    return shape, fortran, dtype


def _read_npz_arrays(source: str | Path | bytes, where: str) -> dict[str, np.ndarray]:
    """All arrays of a .npz archive, never unpickling, with the decompressed sizes checked from the zip directory
    and the array headers before any array is read."""
    with _open_input(source, where, _NPZ_EXPECTED) as f:
        head = f.read(8)
        f.seek(0)
        kind = _sniff(head)
        if kind != "a zip archive":
            fix = _NPZ_FIX if kind != "a single .npy array" else "save with numpy.savez (named arrays), not numpy.save"
            raise DataError(source=where, found=kind, expected=_NPZ_EXPECTED, fix=fix)
        try:
            zf = zipfile.ZipFile(f)
            members = [i for i in zf.infolist() if i.filename.endswith(".npy") and not i.is_dir()]
            if not members:
                found = ", ".join(i.filename for i in zf.infolist()[:5]) or "nothing"
                raise DataError(source=where, found=f"a zip of {found}", expected=_NPZ_EXPECTED, fix=_NPZ_FIX)
            if len(members) > C.MAX_NPZ_ARRAYS:
                raise DataError(source=where, found=f"{len(members):,} arrays",
                                expected=f"at most {C.MAX_NPZ_ARRAYS} (x, y or x_train, y_train, x_test, y_test)")
            unpacked = sum(i.file_size for i in members)
            if unpacked > C.MAX_DECOMPRESSED_BYTES:
                raise DataError(source=where, found=f"its arrays unpack to {_mib(unpacked)}",
                                expected=f"at most {_mib(C.MAX_DECOMPRESSED_BYTES)}",
                                fix="use fewer or smaller images, stored as uint8")
            headers = {}
            for info in members:
                if info.flag_bits & 0x1:
                    raise DataError(source=where, where=info.filename, found="an encrypted member",
                                    expected=_NPZ_EXPECTED, fix=_NPZ_FIX)
                with zf.open(info) as fp:
                    shape, fortran, dtype = _npz_header(fp, f"{where} [{info.filename[:-4]}]")
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > info.file_size:
                    raise DataError(source=where, where=info.filename[:-4],
                                    found=f"shape {shape} of {dtype} needs {_mib(nbytes)} but the member holds "
                                          f"{_mib(info.file_size)}", expected="a complete array", fix=_NPZ_FIX)
                headers[info.filename[:-4]] = (info, shape, fortran, dtype, nbytes)
            images = sum(math.prod(h[1]) for k, h in headers.items() if k in ("x", "x_train", "x_test")) * 4
            if images > C.MAX_DATASET_BYTES:
                raise DataError(source=where, found=f"images that take {_mib(images)} as float32",
                                expected=f"at most {_mib(C.MAX_DATASET_BYTES)}",
                                fix="use fewer or smaller images")
            arrays = {}
            for key, (info, shape, fortran, dtype, nbytes) in headers.items():
                with zf.open(info) as fp:
                    _npz_header(fp, where)
                    data = fp.read(nbytes)
                if len(data) != nbytes:
                    raise DataError(source=where, where=key, found=f"{_mib(len(data))} of array data",
                                    expected=f"{_mib(nbytes)} for shape {shape} of {dtype}", fix=_NPZ_FIX)
                arrays[key] = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
            return arrays
        except DataError:
            raise
        except ZIP_ERRORS as exc:
            raise DataError(source=where, found=f"a damaged archive ({type(exc).__name__}: {exc})"[:300],
                            expected=_NPZ_EXPECTED, fix=_NPZ_FIX) from exc


def load_npz(source: str | Path | bytes, test_fraction: float = 0.2, seed: int = 0, name: str | None = None,
             source_name: str | None = None) -> Dataset:
    """A dataset from a ``.npz`` (a path, or an upload's bytes with its ``source_name``): keys ``x, y`` (split
    here, stratified) or ``x_train, y_train, x_test, y_test``; optional ``class_names``. Never unpickles."""
    where = _display_name(source, source_name)
    arrays = _read_npz_arrays(source, where)
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
        x_train, y_train, x_test, y_test = _named(where, stratified_split, x, y, test_fraction, seed)
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
    origin = where if isinstance(source, bytes | bytearray | memoryview) else str(source)
    return _named(where, Dataset, name or Path(where).stem, x_train, y_train, x_test, y_test, class_names,
                  source=origin)
