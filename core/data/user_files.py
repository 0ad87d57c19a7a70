"""The user's own data: image folders (on disk or as a zip upload), ``.npz`` files and CIFAR-10 python batches,
validated into a :class:`Dataset`.

Every loader takes the name the user knows the input by (``source_name``: an upload's file name, not the
temporary copy) and raises :class:`DataError` naming it, the file or entry inside, what was found, what was
expected and how to fix it. Nothing is ever unpickled.

Caps, checked before the work they guard starts (module constants, read at call time):

- ``MAX_FILE_BYTES``: one ``.npz``, zip or archive, from its size on disk or in memory;
- ``MAX_DECOMPRESSED_BYTES``: what a ``.npz`` or a zip unpacks to, from its zip directory (``ZipInfo.file_size``)
  and, for a ``.npz``, each array's header (shape x item size), before any array is read;
- ``MAX_IMAGES``: images in one folder or zip, counted before any is opened;
- ``MAX_FOLDER_BYTES``: bytes of the image files of a folder, from their sizes on disk;
- ``MAX_IMAGE_PIXELS``: width x height of one image, from its header before its pixels are decoded (a
  decompression bomb is refused by name);
- ``MAX_DATASET_BYTES``: the float32 image array the dataset holds in memory, from the shapes;
- ``MAX_NPZ_ARRAYS`` and ``MAX_CLASSES``: members of a ``.npz`` and the largest label value.

Links: a symbolic link in an image folder that leads out of the folder refuses the load; a link to a file in the
folder reads that file; a link to a folder in the folder is not followed (its images are there already). A zip
upload holding a link is refused (a zip upload must hold the images themselves).

Unreadable images: an image file that cannot be decoded is skipped and counted, and ``UserData.notes`` names
them; when more than ``UNREADABLE_MAX_FRACTION`` (5%) of the images, and more than one, cannot be decoded,
the load is refused and nothing is loaded.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from .dataset import _DATASETS, _LOADED, DataError, Dataset, register_dataset
from .sources import GRAYSCALE_MODES, IMAGE_SUFFIXES, stratified_split

MAX_FILE_BYTES = 512 * 2**20  # one .npz, zip or archive
MAX_DECOMPRESSED_BYTES = 2 * 2**30  # what a .npz or zip unpacks to (CIFAR-10 as uint8 is 184 MB)
MAX_IMAGES = 200_000  # images in one folder or zip (CIFAR-10 has 60,000)
MAX_FOLDER_BYTES = 4 * 2**30  # image files of one folder on disk
MAX_IMAGE_PIXELS = 4096 * 4096  # width x height of one image (PIL's own bomb limit is 89 million)
MAX_DATASET_BYTES = 2 * 2**30  # the float32 images in memory (CIFAR-10: 737 MB)
MAX_NPZ_ARRAYS = 64  # members of a .npz (a dataset needs at most 5)
MAX_CLASSES = 100_000  # label values of a .npz
UNREADABLE_MAX_FRACTION = 0.05  # share of a folder's images that may be skipped as unreadable

# what zipfile and zlib raise on a damaged or unsupported archive (zipfile itself raises several types)
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
              RuntimeError, struct.error)
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")  # the decoders IMAGE_SUFFIXES need
_MIB = 2**20


@dataclass(frozen=True)
class UserData:
    """A loaded user dataset, and the image files that were skipped as unreadable: (name, reason) pairs."""

    dataset: Dataset
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def notes(self) -> list[str]:
        """What the user should know about the load, one sentence each (empty when nothing was skipped)."""
        if not self.skipped:
            return []
        listed = "; ".join(f"{name} ({reason})" for name, reason in self.skipped[:5])
        more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
        return [f"{len(self.skipped)} unreadable image file(s) skipped: {listed}{more}"]


def _mib(n: int) -> str:
    return f"{n / _MIB:,.1f} MiB" if n >= _MIB else f"{n:,} bytes"


# ----------------------------------------------------------------------------------------------------------
# arrays to images and labels


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
    if len(y) and y.max() >= MAX_CLASSES:  # counting classes allocates one slot per label value
        raise DataError(f"{where}: label {y.max()} is beyond {MAX_CLASSES:,} classes; expected class indices "
                        "0..C-1 for C classes")
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


# ----------------------------------------------------------------------------------------------------------
# .npz


def _open_input(source: str | Path | bytes, where: str, what: str) -> BinaryIO:
    """A seekable binary file for a path or an upload's bytes, after the ``MAX_FILE_BYTES`` check."""
    if isinstance(source, bytes | bytearray | memoryview):
        size = len(source)
    else:
        try:
            info = os.stat(source)
        except OSError as exc:
            raise DataError(source=where, found=f"cannot be read ({exc.strerror or exc})", expected=what,
                            fix="check the path and the file's permissions") from exc
        if not stat.S_ISREG(info.st_mode):
            raise DataError(source=where, found="not a regular file", expected=what, fix="check the path")
        size = info.st_size
    if size > MAX_FILE_BYTES:
        raise DataError(source=where, found=_mib(size), expected=f"at most {_mib(MAX_FILE_BYTES)}",
                        fix="upload a smaller file (fewer or smaller images, or uint8 instead of float)")
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(source))
    try:
        return open(source, "rb")  # the caller closes it
    except OSError as exc:
        raise DataError(source=where, found=f"cannot be read ({exc.strerror or exc})", expected=what) from exc


def _sniff(head: bytes) -> str:
    """What the first bytes of a file look like, for a message."""
    kinds = ((b"\x93NUMPY", "a single .npy array"), (b"PK\x03\x04", "a zip archive"), (b"PK\x05\x06", "an empty zip"),
             (b"\x1f\x8b", "a gzip file"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8", "a JPEG image"),
             (b"%PDF", "a PDF document"), (b"BZh", "a bzip2 file"), (b"\xfd7zXZ", "an xz file"))
    for magic, kind in kinds:
        if head.startswith(magic):
            return kind
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (pickles are never loaded)"
    if not head:
        return "an empty file"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "text"
    return "binary data of an unknown format"


_NPZ_EXPECTED = "a .npz archive of named arrays, as numpy.savez or numpy.savez_compressed write"
_NPZ_FIX = "save the arrays with numpy.savez_compressed('data.npz', x=images, y=labels)"


def _npz_header(fp, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from a .npy header, refusing object and structured dtypes."""
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(fp)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read(fp)
    except Exception as exc:  # numpy's header parser raises several types on malformed input
        raise DataError(source=where, found=f"a damaged array header ({type(exc).__name__}: {exc})"[:300],
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
            if len(members) > MAX_NPZ_ARRAYS:
                raise DataError(source=where, found=f"{len(members):,} arrays",
                                expected=f"at most {MAX_NPZ_ARRAYS} (x, y or x_train, y_train, x_test, y_test)")
            unpacked = sum(i.file_size for i in members)
            if unpacked > MAX_DECOMPRESSED_BYTES:
                raise DataError(source=where, found=f"its arrays unpack to {_mib(unpacked)}",
                                expected=f"at most {_mib(MAX_DECOMPRESSED_BYTES)}",
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
            if images > MAX_DATASET_BYTES:
                raise DataError(source=where, found=f"images that take {_mib(images)} as float32",
                                expected=f"at most {_mib(MAX_DATASET_BYTES)}",
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


def _named(where: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with a DataError's message prefixed by the user's file name."""
    try:
        return fn(*args, **kwargs)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None


def _display_name(source, source_name: str | None) -> str:
    if source_name:
        return source_name
    if isinstance(source, bytes | bytearray | memoryview):
        return "the upload"
    return Path(source).name or str(source)


# ----------------------------------------------------------------------------------------------------------
# image folders and zips of them


@dataclass(frozen=True)
class _ImageFile:
    name: str  # as the user knows it: "pets/cat/1.png" or "pets.zip: pets/cat/1.png"
    label: int
    read: Callable[[], bytes | str]  # the file's bytes, or a path PIL opens itself


class _Unreadable(Exception):
    """An image file that cannot be decoded; the message is the reason shown to the user."""


def _folder_images(root: Path, where: str, max_images: int) -> tuple[list[str], list[_ImageFile]]:
    """Class names and image files of a folder, refusing links out of it and checking the count and byte caps
    before any image is opened."""
    try:
        real_root = root.resolve(strict=True)
    except OSError as exc:
        raise DataError(source=where, found="not a folder", expected="a folder with one sub-folder per class",
                        fix="check the path") from exc
    if not real_root.is_dir():
        raise DataError(source=where, found="not a folder", expected="a folder with one sub-folder per class",
                        fix="check the path, or upload the folder as a zip")

    def entries(folder: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as it:
                return sorted((e for e in it if not e.name.startswith(".") and e.name != "__MACOSX"),
                              key=lambda e: e.name)
        except OSError as exc:
            raise DataError(source=where, where=_rel(folder, root), found=f"cannot be listed ({exc.strerror})",
                            expected="a readable folder", fix="check its permissions") from exc

    def target(entry: os.DirEntry) -> Path | None:
        """Where a link leads (None: a folder inside the root, not followed); refuses a link out of the root."""
        path = Path(entry.path)
        resolved = path.resolve()
        if not resolved.is_relative_to(real_root):
            raise DataError(source=where, where=_rel(path, root),
                            found=f"a link to {resolved}, outside the folder",
                            expected="images inside the folder itself",
                            fix="copy the image into the folder, or remove the link")
        return None if resolved.is_dir() else resolved

    class_dirs: list[Path] = []
    for entry in entries(root):
        if entry.is_symlink():
            if target(entry) is None:
                continue
        elif entry.is_dir(follow_symlinks=False):
            class_dirs.append(Path(entry.path))
    if len(class_dirs) < 2:
        raise DataError(f"{where}: need one sub-folder per class and at least 2 classes; "
                        f"found {len(class_dirs)} sub-folder(s)")

    files: list[_ImageFile] = []
    total = 0
    for label, class_dir in enumerate(class_dirs):
        found: list[Path] = []
        stack = [class_dir]
        while stack:
            folder = stack.pop()
            for entry in entries(folder):
                path = Path(entry.path)
                if entry.is_symlink():
                    resolved = target(entry)
                    if resolved is None or not resolved.is_file():
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                    continue
                elif not entry.is_file(follow_symlinks=False):
                    continue
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                found.append(path)
                total += path.stat().st_size
                if len(files) + len(found) > max_images:
                    raise DataError(source=where, found=f"more than max_images={max_images:,} images",
                                    expected=f"at most {max_images:,}", fix="load a smaller folder")
                if total > MAX_FOLDER_BYTES:
                    raise DataError(source=where, found=f"more than {_mib(MAX_FOLDER_BYTES)} of image files",
                                    expected=f"at most {_mib(MAX_FOLDER_BYTES)}",
                                    fix="use fewer or smaller images")
        if len(found) < 2:
            raise DataError(f"{where}/{class_dir.name}: class {class_dir.name!r} has {len(found)} image(s); "
                            f"every class needs at least 2 ({', '.join(sorted(IMAGE_SUFFIXES))})")
        # path order within a class, as before: a sample's id (its row) stays what it was for the same folder
        files += [_ImageFile(f"{where}/{_rel(p, root)}", label, lambda p=p: str(p)) for p in sorted(found)]
    return [d.name for d in class_dirs], files


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _zip_images(zf: zipfile.ZipFile, where: str, max_images: int) -> tuple[list[str], list[_ImageFile]]:
    """Class names and image files of a zip of an image folder (one top folder may wrap the class folders),
    with the member count and the unpacked size checked from the zip directory before anything is read."""
    infos = zf.infolist()
    if len(infos) > 2 * max_images + 1000:
        raise DataError(source=where, found=f"{len(infos):,} entries", expected=f"at most {max_images:,} images",
                        fix="upload a smaller folder")
    kept: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise DataError(source=where, where=info.filename, found="a path that leads out of the folder",
                            expected="paths inside the zipped folder", fix="zip the folder itself")
        if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(source=where, where=info.filename, found="a symbolic link",
                            expected="the image files themselves",
                            fix="zip the folder without links (zip stores links only when asked with -y)")
        if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
            kept.append((parts, info))
    while kept and all(len(p) >= 3 for p, _ in kept) and len({p[0] for p, _ in kept}) == 1:
        kept = [(p[1:], i) for p, i in kept]  # the folder that wraps the class folders
    kept = [(p, i) for p, i in kept if len(p) >= 2]  # images at the top belong to no class
    if len(kept) > max_images:
        raise DataError(source=where, found=f"{len(kept):,} images", expected=f"at most max_images={max_images:,}",
                        fix="upload a smaller folder")
    unpacked = sum(i.file_size for _, i in kept)
    if unpacked > MAX_DECOMPRESSED_BYTES:
        raise DataError(source=where, found=f"images that unpack to {_mib(unpacked)}",
                        expected=f"at most {_mib(MAX_DECOMPRESSED_BYTES)}", fix="use fewer or smaller images")
    class_names = sorted({p[0] for p, _ in kept})
    if len(class_names) < 2:
        raise DataError(source=where, found=f"{len(class_names)} class folder(s) holding images",
                        expected="one folder per class and at least 2 classes (cat/1.png, dog/2.png, ...)",
                        fix="zip a folder whose sub-folders are the classes")
    label = {c: i for i, c in enumerate(class_names)}
    counts = Counter(p[0] for p, _ in kept)
    for c in class_names:
        if counts[c] < 2:
            raise DataError(f"{where}: class {c!r} has {counts[c]} image(s); every class needs at least 2")

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        def read() -> bytes:
            if info.flag_bits & 0x1:
                raise _Unreadable("encrypted")
            try:
                return zf.read(info)
            except ZIP_ERRORS as exc:
                raise _Unreadable(f"damaged in the zip: {exc}") from exc
        return read

    files = [_ImageFile(f"{where}: {i.filename}", label[p[0]], reader(i))
             for p, i in sorted(kept, key=lambda k: (label[k[0][0]], PurePosixPath(*k[0])))]
    return class_names, files


def _open_image(file: _ImageFile):
    """A PIL image for ``file`` (lazy: only its header is read), limited to the formats of IMAGE_SUFFIXES."""
    from PIL import Image

    data = file.read()
    source = data if isinstance(data, str) else io.BytesIO(data)
    try:
        return Image.open(source, formats=_PIL_FORMATS)
    except Image.DecompressionBombError as exc:  # over twice PIL's own limit: the header says so
        raise _Bomb(str(exc)) from exc
    except Exception as exc:  # PIL's decoders raise many types (OSError, SyntaxError, ValueError, ...)
        raise _Unreadable(_reason(exc)) from exc


class _Bomb(Exception):
    """An image whose header claims more pixels than PIL itself will open."""


def _reason(exc: Exception) -> str:
    """Why an image cannot be decoded, in words that name no temporary path or object."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image in a known format"
    text = re.sub(r"'?(/[^ ']+|<[^>]+>)'?", "", str(exc).split("\n")[0]).strip(" :")
    return (text if len(text) < 80 else text[:77] + "...") or type(exc).__name__


def _too_many_pixels(file: _ImageFile, width: int, height: int) -> DataError:
    return DataError(source=file.name, found=f"{width:,}x{height:,} pixels ({width * height / 1e6:,.0f} megapixels)",
                     expected=f"at most {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels per image "
                              f"(e.g. {math.isqrt(MAX_IMAGE_PIXELS)}x{math.isqrt(MAX_IMAGE_PIXELS)})",
                     fix="shrink the image or remove it; it was not decoded")


def _decode_folder(files: list[_ImageFile], class_names: list[str], where: str, origin: str,
                   test_fraction: float, seed: int, resize_to: tuple[int, int] | None,
                   name: str) -> UserData:
    """Headers first (pixel cap, sizes, modes), then pixels; unreadable files are skipped by the module's rule."""
    from PIL import Image

    skipped: list[tuple[str, str]] = []
    sizes: Counter[tuple[int, int]] = Counter()
    examples: dict[tuple[int, int], str] = {}
    headers: list[tuple[_ImageFile, tuple[int, int]]] = []
    all_gray = True
    for file in files:
        try:
            with _open_image(file) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise _too_many_pixels(file, width, height)
                if width < 1 or height < 1:
                    raise _Unreadable(f"{width}x{height} pixels")
                gray = img.mode in GRAYSCALE_MODES
        except _Bomb as exc:
            pixels = re.search(r"\((\d+) pixels\)", str(exc))
            claimed = f" of {int(pixels[1]) / 1e6:,.0f} megapixels" if pixels else ""
            raise DataError(source=file.name, found=f"a decompression bomb (its header claims an image{claimed})",
                            expected=f"at most {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels per image",
                            fix="remove the file; it was not decoded") from exc
        except _Unreadable as exc:
            skipped.append((file.name, str(exc)))
            continue
        all_gray &= gray
        sizes[(height, width)] += 1
        examples.setdefault((height, width), file.name)
        headers.append((file, (height, width)))
    _check_unreadable(skipped, len(files), where)
    if len(sizes) > 1 and resize_to is None:
        listed = "; ".join(f"{h}x{w}: {n} image(s), e.g. {examples[(h, w)].removeprefix(where).lstrip(':/ ')}"
                           for (h, w), n in sizes.most_common(5))
        raise DataError(f"{where}: images have {len(sizes)} different sizes ({listed}); "
                        "make them one size or pass resize_to=(height, width)")
    if resize_to is not None:
        if len(resize_to) != 2 or min(resize_to) < 1 or resize_to[0] * resize_to[1] > MAX_IMAGE_PIXELS:
            raise DataError(f"resize_to={resize_to!r}: expected (height, width) of at most "
                            f"{MAX_IMAGE_PIXELS:,} pixels")
    out_h, out_w = resize_to or next(iter(sizes))
    channels = 1 if all_gray else 3
    needed = len(headers) * channels * out_h * out_w * 4
    if needed > MAX_DATASET_BYTES:
        raise DataError(source=where, found=f"{len(headers):,} images of {channels}x{out_h}x{out_w} that take "
                                            f"{_mib(needed)} as float32",
                        expected=f"at most {_mib(MAX_DATASET_BYTES)}",
                        fix="use fewer images, or smaller ones (resize_to=(height, width))")

    mode = "L" if all_gray else "RGB"
    x = np.empty((len(headers), channels, out_h, out_w), dtype=np.float32)
    keep = np.ones(len(headers), dtype=bool)
    for i, (file, _) in enumerate(headers):
        try:
            with _open_image(file) as img:
                img = img.convert(mode)
                if img.size != (out_w, out_h):
                    img = img.resize((out_w, out_h), Image.Resampling.BILINEAR)
                pixels = np.asarray(img, dtype=np.float32) / 255.0
        except _Bomb as exc:  # the header was checked above; a file that changed since is unreadable
            skipped.append((file.name, _reason(exc)))
            keep[i] = False
            continue
        except _Unreadable as exc:
            skipped.append((file.name, str(exc)))
            keep[i] = False
            continue
        except Exception as exc:  # a truncated or corrupt image fails only when its pixels are decoded
            skipped.append((file.name, _reason(exc)))
            keep[i] = False
            continue
        x[i] = pixels[None] if all_gray else pixels.transpose(2, 0, 1)
    _check_unreadable(skipped, len(files), where)
    x = x[keep] if not keep.all() else x
    y = np.array([file.label for (file, _), k in zip(headers, keep) if k], dtype=np.int64)
    counts = np.bincount(y, minlength=len(class_names))
    if (counts < 2).any():
        short = [class_names[c] for c in np.flatnonzero(counts < 2)]
        raise DataError(source=where, found=f"class {', '.join(map(repr, short[:5]))} has fewer than 2 readable images",
                        expected="at least 2 readable images per class", fix="add images or fix the broken ones")
    x_train, y_train, x_test, y_test = _named(where, stratified_split, x, y, test_fraction, seed)
    dataset = _named(where, Dataset, name, x_train, y_train, x_test, y_test, tuple(class_names), source=origin)
    return UserData(dataset, tuple(skipped))


def _check_unreadable(skipped: list[tuple[str, str]], total: int, where: str) -> None:
    """The rule: skip unreadable images up to UNREADABLE_MAX_FRACTION of them (always at least one)."""
    allowed = max(1, int(total * UNREADABLE_MAX_FRACTION))
    if len(skipped) > allowed:
        listed = "; ".join(f"{n} ({r})" for n, r in skipped[:3])
        raise DataError(source=where, found=f"{len(skipped):,} of {total:,} images cannot be decoded ({listed}"
                                            f"{' ...' if len(skipped) > 3 else ''})",
                        expected=f"at most {allowed:,} unreadable ({UNREADABLE_MAX_FRACTION:.0%}); "
                                 "nothing was loaded",
                        fix="remove or re-save the broken files")


def load_image_folder(
    path: str | Path,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_images: int | None = None,
    resize_to: tuple[int, int] | None = None,
    name: str | None = None,
    source_name: str | None = None,
) -> Dataset:
    """A dataset from a folder with one sub-folder per class; see ``read_image_folder``, which also says which
    unreadable files were skipped."""
    return read_image_folder(path, test_fraction, seed, max_images, resize_to, name, source_name).dataset


def read_image_folder(
    path: str | Path,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_images: int | None = None,
    resize_to: tuple[int, int] | None = None,
    name: str | None = None,
    source_name: str | None = None,
) -> UserData:
    """A dataset from a folder with one sub-folder per class (sorted names are the classes; images anywhere
    below a class folder belong to it), and the files skipped as unreadable.

    Files whose suffix is not an image suffix (``IMAGE_SUFFIXES``) and hidden files are ignored. Images become
    grayscale if all are grayscale, else RGB. Mixed sizes are rejected unless ``resize_to=(height, width)``.
    Links, caps and unreadable files follow the module's rules.
    """
    root = Path(path)
    where = source_name or root.name or str(root)
    class_names, files = _folder_images(root, where, MAX_IMAGES if max_images is None else max_images)
    return _decode_folder(files, class_names, where, str(root), test_fraction, seed, resize_to,
                          name or Path(where).name)


def read_image_zip(
    source: str | Path | bytes,
    source_name: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_images: int | None = None,
    resize_to: tuple[int, int] | None = None,
    name: str | None = None,
) -> UserData:
    """A dataset from a zip of an image folder (the app's upload of a folder); the same rules as
    ``read_image_folder``. Nothing is extracted to disk."""
    where = _display_name(source, source_name)
    expected = "a zip of a folder with one sub-folder per class"
    with _open_input(source, where, expected) as f:
        head = f.read(8)
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except ZIP_ERRORS as exc:
            raise DataError(source=where, found=_sniff(head), expected=expected,
                            fix="zip the folder (e.g. `zip -r pets.zip pets`) and upload the zip") from exc
        with zf:
            class_names, files = _zip_images(zf, where, MAX_IMAGES if max_images is None else max_images)
            return _decode_folder(files, class_names, where, where, test_fraction, seed, resize_to,
                                  name or Path(where).stem)


# ----------------------------------------------------------------------------------------------------------
# any of them


def load_user_data(source: str | Path | bytes, source_name: str | None = None, name: str | None = None,
                   test_fraction: float = 0.2, seed: int = 0, resize_to: tuple[int, int] | None = None) -> UserData:
    """The user's data from a path (the CLI's ``--data``) or an upload's bytes, whatever it holds: an image
    folder or a zip of one, a ``.npz``, or CIFAR-10's python batches (their folder, ``cifar-10-python.tar.gz``
    or a zip of them). ``source_name`` is the name messages use (an upload's file name)."""
    from . import cifar

    where = _display_name(source, source_name)
    if not isinstance(source, bytes | bytearray | memoryview):
        path = Path(source)
        if path.is_dir():
            if cifar.is_cifar10_folder(path):
                return UserData(cifar.load_cifar10_folder(path, name or "cifar10", source_name=where))
            return read_image_folder(path, test_fraction, seed, None, resize_to, name, source_name)
        if not path.exists():
            raise DataError(source=where, found="no such file or folder",
                            expected="an image folder, a .npz file, a zip or CIFAR-10's python batches",
                            fix="check the path")
    with _open_input(source, where, "a .npz file, a zip of an image folder or CIFAR-10's python batches") as f:
        head = f.read(512)
        is_zip, names = head.startswith(b"PK"), []
        if is_zip:
            try:
                with zipfile.ZipFile(f) as zf:
                    names = zf.namelist()
            except ZIP_ERRORS:  # damaged: the image-zip loader below says so
                names = []
    if is_zip and any(n.endswith(".npy") for n in names):
        return UserData(load_npz(source, test_fraction, seed, name, source_name=where))
    if is_zip and any(PurePosixPath(n).name in cifar.CIFAR10_MEMBERS for n in names):
        return UserData(cifar.load_cifar10_archive(source, source_name=where, name=name or "cifar10"))
    if is_zip:
        return read_image_zip(source, where, test_fraction, seed, None, resize_to, name)
    if head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar":
        return UserData(cifar.load_cifar10_archive(source, source_name=where, name=name or "cifar10"))
    if head.startswith(b"\x93NUMPY"):
        return UserData(load_npz(source, test_fraction, seed, name, source_name=where))  # says what is wrong
    raise DataError(source=where, found=_sniff(head[:8]),
                    expected="a .npz file, a zip of an image folder (one sub-folder per class) or CIFAR-10's "
                             "python batches (cifar-10-python.tar.gz)",
                    fix="save arrays with numpy.savez_compressed, or zip the image folder")


# ----------------------------------------------------------------------------------------------------------
# registration


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
