"""The user's own data: image folders (on disk or as a zip upload), ``.npz`` files and CIFAR-10 python batches,
validated into a :class:`Dataset`.

Every loader takes the name the user knows the input by (``source_name``: an upload's file name, not the
temporary copy) and raises :class:`DataError` naming it, the file or entry inside, what was found, what was
expected and how to fix it. Nothing is ever unpickled.

Caps, checked before the work they guard starts (constants of :mod:`core.data.user_common`, read at call time):

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

import zipfile
from pathlib import Path, PurePosixPath

from .dataset import _DATASETS, _LOADED, DataError, Dataset, register_dataset
from .images import load_image_folder, read_image_folder, read_image_zip  # noqa: F401  (re-exported)
from .npz import load_npz
from .user_common import ZIP_ERRORS, UserData, _display_name, _open_input, _sniff

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


def is_builtin_dataset(name: str) -> bool:
    """Whether ``name`` is one of the project's registered datasets, not the user's data registered by name."""
    return name in _DATASETS and name not in _USER_DATASETS


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
