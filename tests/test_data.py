"""Dataset sources: IDX parsing, Fashion-MNIST lookup, small built-in sets, .npz files and image folders."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import (
    FASHION_MNIST_CLASSES,
    DataError,
    Dataset,
    list_datasets,
    load_dataset,
    load_image_folder,
    load_npz,
    parse_idx,
    read_idx,
    register_user_dataset,
    sources,
    user_files,
)

# ---------------------------------------------------------------------------------------------------------
# helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX."""
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist_style(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> dict:
    """Four small Fashion-MNIST-style files; returns the arrays written."""
    rng = np.random.default_rng(n_train)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(n_train, dtype=np.uint8) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for key, stem in sources.FASHION_MNIST_FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.fixture
def no_fashion_elsewhere(tmp_path, monkeypatch):
    """Hide the system copy, the user cache and the network, so only what a test sets up is found."""
    monkeypatch.setattr(sources, "SYSTEM_DIRS", (tmp_path / "no-system",))
    monkeypatch.setenv("UE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setenv("UE_NO_DOWNLOAD", "1")


# ---------------------------------------------------------------------------------------------------------
# IDX


def test_parse_idx_roundtrip_and_big_endian_ints():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(arr)), arr)
    ints = struct.pack(">HBBI", 0, 0x0C, 1, 3) + np.array([1, -2, 300], dtype=">i4").tobytes()
    assert parse_idx(ints).tolist() == [1, -2, 300]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x12\x34\x08\x01" + b"\x00" * 8, "not an IDX file"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "not an IDX file"),  # unknown dtype code
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (idx_bytes(np.zeros((4, 5), np.uint8))[:-3], "truncated"),
        (idx_bytes(np.zeros((4, 5), np.uint8)) + b"\x00", "trailing bytes"),
    ],
)
def test_parse_idx_rejects_corrupt_data(data, message):
    with pytest.raises(DataError, match=message):
        parse_idx(data, "f.idx")


def test_read_idx_gz_and_plain_and_broken_gz(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    assert np.array_equal(read_idx(tmp_path / "a"), arr)
    (tmp_path / "b.gz").write_bytes(gzip.compress(idx_bytes(arr))[:-10])  # truncated gzip stream
    with pytest.raises(DataError, match="b.gz"):
        read_idx(tmp_path / "b.gz")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------------
# Fashion-MNIST lookup


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_env_dir(tmp_path, monkeypatch, no_fashion_elsewhere, gz):
    arrays = write_mnist_style(tmp_path / "fm", gz=gz)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "fm"))
    ds = sources.load_fashion_mnist()
    assert ds.class_names == FASHION_MNIST_CLASSES
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_train.dtype == np.float32
    assert np.allclose(ds.x_train[:, 0] * 255, arrays["x_train"])
    assert ds.y_train.dtype == np.int64 and ds.y_test.tolist() == arrays["y_test"].tolist()
    assert ds.source == str(tmp_path / "fm")


def test_fashion_mnist_env_dir_with_corrupt_file_is_an_error(tmp_path, monkeypatch, no_fashion_elsewhere):
    write_mnist_style(tmp_path / "fm", gz=False)
    labels = tmp_path / "fm" / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-5])
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "fm"))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: truncated"):
        sources.load_fashion_mnist()


def test_fashion_mnist_env_dir_without_files_falls_through(tmp_path, monkeypatch, no_fashion_elsewhere):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "empty"))
    write_mnist_style(tmp_path / "cache" / "fashion-mnist", n_train=20)
    _pin(monkeypatch, tmp_path / "cache" / "fashion-mnist")
    assert sources.load_fashion_mnist().num_train == 20
    (tmp_path / "cache" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"FASHION_MNIST_DIR=.*empty \(files missing\)"):
        sources.load_fashion_mnist()


def test_fashion_mnist_mismatched_counts(tmp_path, monkeypatch, no_fashion_elsewhere):
    write_mnist_style(tmp_path / "fm", gz=False)
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "fm"))
    with pytest.raises(DataError, match="labels for 10 images"):
        sources.load_fashion_mnist()


def test_fashion_mnist_skips_a_broken_system_copy(tmp_path, monkeypatch, no_fashion_elsewhere):
    write_mnist_style(tmp_path / "system")
    (tmp_path / "system" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    monkeypatch.setattr(sources, "SYSTEM_DIRS", (tmp_path / "system",))
    write_mnist_style(tmp_path / "cache" / "fashion-mnist", n_train=20)
    _pin(monkeypatch, tmp_path / "cache" / "fashion-mnist")
    ds = sources.load_fashion_mnist()
    assert ds.num_train == 20 and ds.source == str(tmp_path / "cache" / "fashion-mnist")


def test_fashion_mnist_missing_everywhere_names_places_and_remedies(no_fashion_elsewhere):
    with pytest.raises(DataError) as info:
        sources.load_fashion_mnist()
    message = str(info.value)
    for expected in ("FASHION_MNIST_DIR", "no-system", "cache", "apt-get install dataset-fashion-mnist",
                     "digits", "mnist-5k"):
        assert expected in message


def _pin(monkeypatch, folder: Path) -> None:
    """The pinned checksums become those of the (fake) files in ``folder``."""
    import hashlib

    monkeypatch.setattr(sources, "FASHION_MNIST_SHA256", {
        stem: hashlib.sha256(gzip.decompress((folder / f"{stem}.gz").read_bytes())).hexdigest()
        for stem in sources.FASHION_MNIST_FILES.values()})


def _serve(monkeypatch, folder: Path, requested: list | None = None) -> None:
    """urlopen answers from ``folder``, whose files are the pinned ones."""

    def fake_urlopen(url, timeout):
        if requested is not None:
            requested.append((url, timeout))
        return io.BytesIO((folder / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(sources.urllib.request, "urlopen", fake_urlopen)
    _pin(monkeypatch, folder)


def test_a_cached_file_that_does_not_verify_is_not_used_but_downloaded_again(tmp_path, monkeypatch,
                                                                             no_fashion_elsewhere):
    served = tmp_path / "served"
    write_mnist_style(served)
    cached = tmp_path / "cache" / "fashion-mnist"
    write_mnist_style(cached, n_train=20)  # e.g. an unverified http download of an older version
    _pin(monkeypatch, served)
    with pytest.raises(DataError, match=r"fashion-mnist \(.*train-images-idx3-ubyte.gz: SHA-256 [0-9a-f]{64} "
                                        r"differs from the pinned"):
        sources.load_fashion_mnist()
    monkeypatch.delenv("UE_NO_DOWNLOAD")
    _serve(monkeypatch, served)
    assert sources.load_fashion_mnist().num_train == 30


def test_fashion_mnist_download_is_https_and_checked_against_pinned_sha256(tmp_path, monkeypatch,
                                                                           no_fashion_elsewhere):
    monkeypatch.delenv("UE_NO_DOWNLOAD")
    served = tmp_path / "served"
    write_mnist_style(served)
    _serve(monkeypatch, served)
    real = dict(sources.FASHION_MNIST_SHA256)
    tampered = served / "t10k-labels-idx1-ubyte.gz"
    labels = sources.parse_idx(gzip.decompress(tampered.read_bytes()))
    tampered.write_bytes(gzip.compress(idx_bytes((labels + 1) % 10)))  # still a valid IDX file
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: SHA-256 [0-9a-f]{64} differs from the pinned "
                                        r"[0-9a-f]{64}; the download was discarded"):
        sources.load_fashion_mnist()
    cached = tmp_path / "cache" / "fashion-mnist"
    assert "t10k-labels-idx1-ubyte.gz" not in [p.name for p in cached.iterdir()]  # nothing unverified is kept
    assert not list(cached.glob("*.part"))
    assert sources.FASHION_MNIST_URL.startswith("https://")
    with pytest.raises(DataError, match="https only"):
        sources.download_idx_files("http://example.org/", cached, checksums=real)


def test_a_gzip_bomb_download_is_refused_within_the_cap(tmp_path, monkeypatch, no_fashion_elsewhere):
    monkeypatch.delenv("UE_NO_DOWNLOAD")
    monkeypatch.setattr(sources, "IDX_MAX_BYTES", 10_000)
    bomb = gzip.compress(b"\0" * 5_000_000)  # 5 MB of zeros in about 5 KB
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(bomb))
    with pytest.raises(DataError, match="unpacks to more than 10,000 bytes"):
        sources.load_fashion_mnist()


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's copy is not installed")
def test_the_pinned_checksums_are_those_of_the_official_files():
    """Debian's files are recompressed (their gzip MD5s differ from upstream's), but what they unpack to has the
    MD5s published beside the upstream archives; the pinned SHA-256s are of that content."""
    import hashlib

    official_md5 = {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
                    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
                    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}
    for stem, sha256 in sources.FASHION_MNIST_SHA256.items():
        data = gzip.decompress(Path(f"/usr/share/datasets/fashion-mnist/{stem}.gz").read_bytes())
        assert hashlib.md5(data).hexdigest() == official_md5[stem]
        assert hashlib.sha256(data).hexdigest() == sha256


def test_fashion_mnist_download_is_verified_then_cached(tmp_path, monkeypatch, no_fashion_elsewhere):
    monkeypatch.delenv("UE_NO_DOWNLOAD")
    served = tmp_path / "served"
    write_mnist_style(served)
    requested = []
    _serve(monkeypatch, served, requested)

    ds = sources.load_fashion_mnist()
    assert ds.num_train == 30 and len(requested) == 4
    assert all(url.startswith(sources.FASHION_MNIST_URL) and t == 10 for url, t in requested)
    assert sorted(p.name for p in (tmp_path / "cache" / "fashion-mnist").iterdir()) == sorted(
        f"{stem}.gz" for stem in sources.FASHION_MNIST_FILES.values()
    )


def test_fashion_mnist_download_failure_and_bad_payload(tmp_path, monkeypatch, no_fashion_elsewhere):
    monkeypatch.delenv("UE_NO_DOWNLOAD")

    def offline(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="network unreachable.*apt-get install"):
        sources.load_fashion_mnist()

    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>"))
    with pytest.raises(DataError, match="not a gzip file"):
        sources.load_fashion_mnist()
    assert not list((tmp_path / "cache" / "fashion-mnist").glob("*.gz"))  # nothing bad left in the cache


# ---------------------------------------------------------------------------------------------------------
# small built-in sets


def test_registry_lists_the_named_sets():
    assert {"fashion-mnist", "digits", "mnist-5k"} <= set(list_datasets())
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("no-such-set")


def test_digits_is_deterministic_and_stratified():
    ds = load_dataset("digits")
    again = sources.load_digits()
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.fingerprint() == again.fingerprint()
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
    assert ds.class_names == tuple("0123456789")
    test_counts = np.bincount(ds.y_test, minlength=10)
    test_share = test_counts / (ds.class_counts() + test_counts)
    assert np.all(np.abs(test_share - 0.2) < 0.02)


def test_mnist_5k():
    ds = load_dataset("mnist-5k")
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.class_counts().tolist() == [400] * 10
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0


# ---------------------------------------------------------------------------------------------------------
# .npz


def _labels(n: int, classes: int = 3) -> np.ndarray:
    return np.arange(n) % classes


@pytest.mark.parametrize(
    "x",
    [
        np.random.default_rng(0).integers(0, 256, (30, 9, 10), dtype=np.uint8),  # N,H,W uint8
        np.random.default_rng(0).random((30, 9, 10, 3)),  # N,H,W,C float64
        np.random.default_rng(0).random((30, 1, 9, 10), dtype=np.float32),  # N,C,H,W float32
        np.random.default_rng(0).integers(0, 256, (30, 9, 10, 1)).astype(np.int64),  # ints 0..255
    ],
    ids=["nhw-uint8", "nhwc-float", "nchw-float32", "nhw1-int64"],
)
def test_npz_xy_layouts(tmp_path, x):
    np.savez(tmp_path / "d.npz", x=x, y=_labels(30))
    ds = load_npz(tmp_path / "d.npz")
    assert ds.x_train.shape[2:] == (9, 10) and ds.num_train == 24 and len(ds.y_test) == 6
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.class_names == ("0", "1", "2") and ds.class_counts().tolist() == [8, 8, 8]
    assert ds.name == "d" and ds.source == str(tmp_path / "d.npz")


def test_npz_values_survive_the_layout_change(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    y = np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    ds = load_npz(tmp_path / "d.npz")
    assert np.allclose(ds.x_train.transpose(0, 2, 3, 1) * 255, x)
    assert ds.y_train.tolist() == y.tolist()


def test_npz_presplit_with_class_names_and_medmnist_labels(tmp_path):
    x = np.zeros((10, 12, 12), np.uint8)
    np.savez_compressed(
        tmp_path / "m.npz",
        x_train=x, y_train=_labels(10, 2)[:, None],  # MedMNIST stores labels as (N, 1)
        x_test=x[:4], y_test=_labels(4, 2)[:, None],
        class_names=np.array(["cat", "dog"]),
    )
    ds = load_npz(tmp_path / "m.npz", name="pets")
    assert ds.name == "pets" and ds.class_names == ("cat", "dog")
    assert ds.num_train == 10 and ds.y_test.tolist() == [0, 1, 0, 1]


def test_npz_split_is_deterministic(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((40, 8, 8)), y=_labels(40, 4))
    assert load_npz(tmp_path / "d.npz").fingerprint() == load_npz(tmp_path / "d.npz").fingerprint()
    assert load_npz(tmp_path / "d.npz").fingerprint() != load_npz(tmp_path / "d.npz", seed=1).fingerprint()


GOOD_X = np.zeros((12, 8, 8), np.uint8)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": GOOD_X, "labels": _labels(12)}, "expected keys x, y or x_train"),
        ({"x": np.zeros((12, 8), np.uint8), "y": _labels(12)}, r"shape \(N, H, W\)"),
        ({"x": np.zeros((12, 2, 8, 8), np.uint8), "y": _labels(12)}, "channel axis"),
        ({"x": np.zeros((12, 3, 8, 3), np.uint8), "y": _labels(12)}, "channel axis"),
        ({"x": np.zeros((12, 4, 4), np.uint8), "y": _labels(12)}, "at least 8x8"),
        ({"x": GOOD_X, "y": _labels(12).astype(float)}, "labels must be integers; got float64"),
        ({"x": GOOD_X, "y": _labels(12).astype(bool)}, "labels must be integers"),
        ({"x": GOOD_X, "y": _labels(12) - 1}, "non-negative"),
        ({"x": GOOD_X, "y": np.zeros((12, 2), int)}, r"shape \(N,\) or \(N, 1\)"),
        ({"x": GOOD_X, "y": _labels(11)}, "12 images but 11 labels"),
        ({"x": GOOD_X, "y": np.zeros(12, int)}, "at least 2 classes"),
        ({"x": GOOD_X, "y": np.r_[np.zeros(11, int), 1]}, "at least 2 samples; too few in class 1"),
        ({"x": GOOD_X, "y": np.r_[np.zeros(6, int), np.full(6, 2)]}, "too few in class 1"),  # gap in labels
        ({"x": np.full((12, 8, 8), np.nan), "y": _labels(12)}, "NaN"),
        ({"x": np.full((12, 8, 8), 2.0), "y": _labels(12)}, r"must lie in \[0, 1\]"),
        ({"x": np.full((12, 8, 8), 300), "y": _labels(12)}, "0..255"),
        ({"x": GOOD_X.astype(complex), "y": _labels(12)}, "uint8"),
        ({"x": GOOD_X[:0], "y": _labels(0)}, "no images"),
        ({"x": GOOD_X, "y": _labels(12), "class_names": np.array(["a", "b"])}, "label 2 has no name"),
        ({"x": GOOD_X, "y": _labels(12), "class_names": np.arange(3)}, "class_names must be a 1-D string"),
        ({"x_train": GOOD_X, "y_train": _labels(12), "x_test": GOOD_X[:3], "y_test": _labels(2)},
         "3 test images but 2 test labels"),
        ({"x_train": GOOD_X, "y_train": _labels(12), "x_test": GOOD_X[:0], "y_test": _labels(0)},
         "test split is empty"),
        ({"x_train": GOOD_X, "y_train": _labels(12, 2), "x_test": GOOD_X[:3], "y_test": np.array([2, 2, 2])},
         "class 2 has no training samples"),
        ({"x_train": GOOD_X, "y_train": _labels(12), "x_test": np.zeros((3, 9, 9), np.uint8),
          "y_test": _labels(3)}, "training images are"),
    ],
)
def test_npz_rejections(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_npz(tmp_path / "bad.npz")


def test_npz_never_unpickles(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([GOOD_X, None], dtype=object), y=_labels(2))
    with pytest.raises(DataError, match="pickled"):
        load_npz(tmp_path / "obj.npz")


def test_npz_is_read_without_ast_in_any_layout_numpy_writes_and_a_structured_array_is_named(tmp_path, monkeypatch):
    """An upload is read in a page's thread while other sessions' pages may be compiling, and CPython 3.11's AST
    builder is not safe in two threads: numpy's header reader (ast.literal_eval) is not used. Fortran order and
    the .npy format versions 1.0-3.0 read as numpy reads them."""
    import ast

    from numpy.lib import format as npy

    from core.data.npz import _read_npz_arrays

    x = np.asfortranarray(np.arange(12 * 8 * 8, dtype=np.uint8).reshape(12, 8, 8))
    for version in ((1, 0), (2, 0), (3, 0)):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, array in (("x", x), ("y", _labels(12))):
                member = io.BytesIO()
                npy.write_array(member, array, version=version)
                archive.writestr(f"{name}.npy", member.getvalue())
        with monkeypatch.context() as patched:
            patched.setattr(ast, "literal_eval", lambda *a, **k: pytest.fail("ast used"))
            patched.setattr(ast, "parse", lambda *a, **k: pytest.fail("ast used"))
            arrays = _read_npz_arrays(buffer.getvalue(), "mine.npz")
        np.testing.assert_array_equal(arrays["x"], x)
        np.testing.assert_array_equal(arrays["y"], _labels(12))
        assert load_npz(buffer.getvalue(), test_fraction=0.25, source_name="mine.npz").num_train == 9
    np.savez(tmp_path / "rec.npz", x=np.zeros(12, dtype=[("a", "<f4"), ("b", "u1")]), y=_labels(12))
    with pytest.raises(DataError, match=r"rec.npz \[x\]: a structured dtype; expected plain numbers"):
        load_npz(tmp_path / "rec.npz")


def test_npz_not_an_archive(tmp_path):
    np.save(tmp_path / "single.npy", GOOD_X)
    with pytest.raises(DataError, match="single.npy: a single .npy array; expected a .npz archive") as err:
        load_npz(tmp_path / "single.npy")
    assert "numpy.savez (named arrays), not numpy.save" in str(err.value)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataError, match="junk.npz: a damaged archive"):
        load_npz(tmp_path / "junk.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match="text.npz: text; expected a .npz archive of named arrays") as err:
        load_npz(tmp_path / "text.npz")
    assert "allow_pickle" not in str(err.value) and "savez_compressed" in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# image folders


def make_folder(root: Path, per_class: int = 5, size=(10, 12), classes=("cat", "dog")) -> Path:
    """Grey PNGs, ``per_class`` per class sub-folder."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size, dtype=np.uint8)
            Image.fromarray(pixels, "L").save(root / name / f"{i}.png")
    return root


def test_image_folder_grayscale(tmp_path):
    root = make_folder(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("ignored: not an image suffix")
    (root / "dog" / ".hidden.png").write_bytes(b"ignored: hidden")
    ds = load_image_folder(root)
    assert ds.name == "pets" and ds.class_names == ("cat", "dog")
    assert ds.x_train.shape == (8, 1, 10, 12) and len(ds.y_test) == 2
    assert ds.class_counts().tolist() == [4, 4]


def test_image_folder_rgb_when_any_image_has_colour(tmp_path):
    root = make_folder(tmp_path / "d")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8), "RGB").save(root / "dog" / "colour.png")
    Image.fromarray(np.full((10, 12), 255, np.uint8), "L").save(root / "dog" / "white.jpg")
    ds = load_image_folder(root)
    assert ds.image_shape == (3, 10, 12)
    all_x = np.concatenate([ds.x_train, ds.x_test])
    assert any(np.allclose(img, 1.0) for img in all_x)  # grey white became RGB white


def test_image_folder_mixed_sizes_rejected_unless_resized(tmp_path):
    root = make_folder(tmp_path / "d")
    Image.fromarray(np.zeros((20, 16), np.uint8), "L").save(root / "cat" / "big.png")
    expected = r"2 different sizes.*10x12: 10 image\(s\).*20x16: 1 image\(s\), e.g. cat"
    with pytest.raises(DataError, match=expected):
        load_image_folder(root)
    ds = load_image_folder(root, resize_to=(16, 16))
    assert ds.image_shape == (1, 16, 16) and ds.num_train + len(ds.y_test) == 11


def test_image_folder_rejections(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_image_folder(tmp_path / "nope")
    only = make_folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(DataError, match="at least 2 classes"):
        load_image_folder(only)
    root = make_folder(tmp_path / "d")
    (root / "empty").mkdir()
    (root / "empty" / "readme.md").write_text("no images here")
    with pytest.raises(DataError, match="class 'empty' has 0 image"):
        load_image_folder(root)
    (root / "empty" / "readme.md").unlink()
    (root / "empty").rmdir()
    with pytest.raises(DataError, match="max_images=5"):
        load_image_folder(root, max_images=5)
    tiny = make_folder(tmp_path / "tiny", size=(4, 4))
    with pytest.raises(DataError, match="at least 8x8"):
        load_image_folder(tiny)


# ---------------------------------------------------------------------------------------------------------
# user registration


def _tiny_dataset(name: str = "mine") -> Dataset:
    x = np.zeros((4, 1, 8, 8), np.float32)
    y = np.array([0, 1, 0, 1])
    return Dataset(name, x, y, x[:2], y[:2], ("a", "b"), source="memory-test")


@pytest.fixture
def clean_registry():
    """Undo user registrations so other tests see only the built-in sets."""
    before = set(list_datasets())
    yield
    for name in set(list_datasets()) - before:
        user_files._DATASETS.remove(name)
        user_files._LOADED.pop(name, None)
        user_files._USER_DATASETS.discard(name)


def test_register_user_dataset(clean_registry):
    first, second = _tiny_dataset(), _tiny_dataset()
    register_user_dataset("my-upload", first)
    assert "my-upload" in list_datasets() and "memory-test" in list_datasets()["my-upload"]
    assert load_dataset("my-upload") is first
    register_user_dataset("my-upload", second)  # a new upload under the same name replaces the old
    assert load_dataset("my-upload") is second
    with pytest.raises(DataError, match="built-in"):
        register_user_dataset("digits", first)
    with pytest.raises(DataError, match="empty"):
        register_user_dataset("  ", first)
    with pytest.raises(DataError, match="expected a Dataset"):
        register_user_dataset("x", "not a dataset")  # type: ignore[arg-type]
