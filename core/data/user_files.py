"""The user's own data: image folders and .npz files, validated into a :class:`Dataset`."""

from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from .dataset import _DATASETS, _LOADED, DataError, Dataset, register_dataset
from .sources import GRAYSCALE_MODES, IMAGE_SUFFIXES, stratified_split


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
