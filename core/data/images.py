"""Image folders, on disk or as a zip upload, as a dataset: one sub-folder per class. Links, bombs and
unreadable files are handled as :mod:`core.data.user_files` states."""

from __future__ import annotations

import io
import math
import os
import re
import stat
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from . import user_common as C
from .dataset import DataError, Dataset
from .sources import GRAYSCALE_MODES, IMAGE_SUFFIXES, stratified_split
from .user_common import _PIL_FORMATS, ZIP_ERRORS, UserData, _display_name, _mib, _named, _open_input, _sniff


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
                if total > C.MAX_FOLDER_BYTES:
                    raise DataError(source=where, found=f"more than {_mib(C.MAX_FOLDER_BYTES)} of image files",
                                    expected=f"at most {_mib(C.MAX_FOLDER_BYTES)}",
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
    if unpacked > C.MAX_DECOMPRESSED_BYTES:
        raise DataError(source=where, found=f"images that unpack to {_mib(unpacked)}",
                        expected=f"at most {_mib(C.MAX_DECOMPRESSED_BYTES)}", fix="use fewer or smaller images")
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
                     expected=f"at most {C.MAX_IMAGE_PIXELS / 1e6:.1f} megapixels per image "
                              f"(e.g. {math.isqrt(C.MAX_IMAGE_PIXELS)}x{math.isqrt(C.MAX_IMAGE_PIXELS)})",
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
                if width * height > C.MAX_IMAGE_PIXELS:
                    raise _too_many_pixels(file, width, height)
                if width < 1 or height < 1:
                    raise _Unreadable(f"{width}x{height} pixels")
                gray = img.mode in GRAYSCALE_MODES
        except _Bomb as exc:
            pixels = re.search(r"\((\d+) pixels\)", str(exc))
            claimed = f" of {int(pixels[1]) / 1e6:,.0f} megapixels" if pixels else ""
            raise DataError(source=file.name, found=f"a decompression bomb (its header claims an image{claimed})",
                            expected=f"at most {C.MAX_IMAGE_PIXELS / 1e6:.1f} megapixels per image",
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
        if len(resize_to) != 2 or min(resize_to) < 1 or resize_to[0] * resize_to[1] > C.MAX_IMAGE_PIXELS:
            raise DataError(f"resize_to={resize_to!r}: expected (height, width) of at most "
                            f"{C.MAX_IMAGE_PIXELS:,} pixels")
    out_h, out_w = resize_to or next(iter(sizes))
    channels = 1 if all_gray else 3
    needed = len(headers) * channels * out_h * out_w * 4
    if needed > C.MAX_DATASET_BYTES:
        raise DataError(source=where, found=f"{len(headers):,} images of {channels}x{out_h}x{out_w} that take "
                                            f"{_mib(needed)} as float32",
                        expected=f"at most {_mib(C.MAX_DATASET_BYTES)}",
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
    """The rule: skip unreadable images up to C.UNREADABLE_MAX_FRACTION of them (always at least one)."""
    allowed = max(1, int(total * C.UNREADABLE_MAX_FRACTION))
    if len(skipped) > allowed:
        listed = "; ".join(f"{n} ({r})" for n, r in skipped[:3])
        raise DataError(source=where, found=f"{len(skipped):,} of {total:,} images cannot be decoded ({listed}"
                                            f"{' ...' if len(skipped) > 3 else ''})",
                        expected=f"at most {allowed:,} unreadable ({C.UNREADABLE_MAX_FRACTION:.0%}); "
                                 "nothing was loaded",
                        fix="remove or re-save the broken files")


def load_image_folder(path: str | Path, *args, **kwargs) -> Dataset:
    """The dataset of ``read_image_folder`` (same arguments), without the list of skipped files."""
    return read_image_folder(path, *args, **kwargs).dataset


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
    class_names, files = _folder_images(root, where, C.MAX_IMAGES if max_images is None else max_images)
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
            class_names, files = _zip_images(zf, where, C.MAX_IMAGES if max_images is None else max_images)
            return _decode_folder(files, class_names, where, where, test_fraction, seed, resize_to,
                                  name or Path(where).stem)
