"""What the loaders of the user's own data share: the caps (see :mod:`core.data.user_files`), the result
type, label and image checks, and reading an upload or a path under the byte cap."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .dataset import DataError, Dataset

MAX_FILE_BYTES = 512 * 2**20  # one .npz, zip or archive
MAX_DECOMPRESSED_BYTES = 2 * 2**30  # what a .npz or zip unpacks to (CIFAR-10 as uint8 is 184 MB)
MAX_IMAGES = 200_000  # images in one folder or zip (CIFAR-10 has 60,000)
MAX_FOLDER_BYTES = 4 * 2**30  # image files of one folder on disk
MAX_IMAGE_PIXELS = 4096 * 4096  # width x height of one image (PIL's own bomb limit is 89 million)
MAX_DATASET_BYTES = 2 * 2**30  # the float32 images in memory (CIFAR-10: 737 MB)
MAX_NPZ_ARRAYS = 64  # members of a .npz (a dataset needs at most 5)
MAX_CLASSES = 100_000  # label values of a .npz
UNREADABLE_MAX_FRACTION = 0.05  # share of a folder's images that may be skipped as unreadable

# what zipfile and zlib raise on a damaged or unsupported archive (zipfile itself raises several types; an
# unsupported compression method raises a subclass of RuntimeError)
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError,
              struct.error)
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
