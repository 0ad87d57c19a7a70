"""The validation layer: one test per class of bad input (each asserting the message the user reads), and
property tests of every parser and loader: any bytes or text give a valid result or an InputError, never another
exception, within 5 s per input."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as safetensors_bytes

from core import bundle, sweep
from core.data import DataError, ForgetRequestError, cifar, load_dataset, npz, sources, user_common
from core.data.id_lists import parse_ids_bytes, parse_ids_text, read_ids_file
from core.data.requests import request_classes, request_ids
from core.data.user_files import load_npz, load_user_data, read_image_folder, read_image_zip
from core.errors import InputError
from core.store import StoreError
from core.validate import checkpoint_model, load_checkpoint, parse_query

PROPERTY = settings(deadline=5000, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(deadline=5000, max_examples=15, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def ds():
    return load_dataset("digits")


def png_bytes(value: int = 0, size=(9, 9), mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format="PNG")
    return buf.getvalue()


def make_folder(root: Path, per_class: int = 10) -> Path:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(png_bytes(10 * i))
    return root


def zip_of(root: Path, prefix: str = "pets") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for file in sorted(root.rglob("*")):
            if file.is_file() and not file.is_symlink():
                zf.write(file, f"{prefix}/{file.relative_to(root)}")
    return buf.getvalue()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


GOOD_NPZ = npz_bytes(x=np.arange(20 * 64, dtype=np.uint8).reshape(20, 8, 8), y=np.arange(20) % 2)


# ---------------------------------------------------------------------------------------------------------
# one error family


def test_every_validation_error_is_one_type():
    for cls in (DataError, ForgetRequestError, StoreError, sweep.SweepError):
        assert issubclass(cls, InputError) and issubclass(cls, ValueError)
    assert issubclass(StoreError, RuntimeError)  # callers that caught it as a RuntimeError still do
    err = InputError(source="ids.csv", where="line 3", found="'x'", expected="a whole number", fix="remove it")
    assert str(err) == "ids.csv, line 3: 'x'; expected a whole number. Remove it."
    assert (err.source, err.where, err.found) == ("ids.csv", "line 3", "'x'")


# ---------------------------------------------------------------------------------------------------------
# id lists


def test_a_400_digit_id_is_refused_with_its_line_not_an_overflow(ds):
    with pytest.raises(ForgetRequestError, match=r"^forget.csv, line 2: '123456789012…' is a 400-digit number, "
                                                 r"far beyond any training id; expected an id of at most 18 digits"):
        parse_ids_text("7\n" + "1234567890" * 40 + "\n", "forget.csv")
    with pytest.raises(ForgetRequestError, match=r"1 unknown id\(s\): 100000000000… \(401 digits\)"):
        request_ids(ds, [3, 10**400])  # a caller's Python int beyond int64: no OverflowError either


def test_a_file_of_decimals_is_called_decimals_not_empty():
    for text in ("0.5\n1.5\n", "1.5,2.5\n3.5,4.5", "0.25; 0.75"):
        with pytest.raises(ForgetRequestError, match=r"^scores.csv, line 1: '0?\.?\d\.?\d*' is a decimal number; "
                                                     r"expected whole-number training ids") as err:
            parse_ids_text(text, "scores.csv")
        assert "empty" not in str(err.value)
    with pytest.raises(ForgetRequestError, match=r"scores.csv, line 1: a header line 'id' and no ids below it"):
        parse_ids_text("id\n\n", "scores.csv")


def test_non_utf8_text_names_the_file_line_and_byte():
    with pytest.raises(ForgetRequestError, match=r"^ids.txt, line 3: byte 0xe9 is not UTF-8 text; expected a UTF-8 "
                                                 r"text file of training ids. Save the file as UTF-8"):
        parse_ids_bytes(b"1\n2\ncaf\xe9\n", "ids.txt")
    assert parse_ids_bytes("\ufeff4,5".encode("utf-8"), "bom.csv") == [4, 5]
    assert parse_ids_bytes(b"\xff\xfe" + "6\n7".encode("utf-16-le"), "excel.txt") == [6, 7]
    with pytest.raises(ForgetRequestError, match=r"^model.bin, line 1: binary data \(a NUL byte\)"):
        parse_ids_bytes(b"\x00\x01\x02", "model.bin")


def test_duplicate_ids_are_accepted_and_reported(ds, tmp_path):
    (tmp_path / "ids.csv").write_text("id\n4\n9\n4\n4\n")
    ids = read_ids_file(tmp_path / "ids.csv")
    assert ids == [4, 9, 4, 4] and ids.lines == [2, 3, 4, 5] and ids.source == "ids.csv"
    request = request_ids(ds, ids)
    assert request.ids == (4, 9) and request.duplicates_dropped == 2


def test_id_messages_name_the_users_file_and_line(ds, tmp_path):
    (tmp_path / "tmpab12.csv").write_text("1\n2\n99999\n")
    ids = read_ids_file(tmp_path / "tmpab12.csv", source_name="my forget list.csv")
    with pytest.raises(ForgetRequestError, match=r"^my forget list.csv: 1 unknown id\(s\): 99999 \(line 3\)") as err:
        request_ids(ds, ids)
    assert "tmpab12" not in str(err.value)
    with pytest.raises(ForgetRequestError, match=r"^gone.csv: cannot be read"):
        read_ids_file(tmp_path / "missing.csv", source_name="gone.csv")


def test_the_id_list_caps_are_checked_before_parsing(monkeypatch):
    from core.data import id_lists

    monkeypatch.setattr(id_lists, "MAX_IDS_BYTES", 100)
    with pytest.raises(ForgetRequestError, match=r"^big.csv: 1,000 bytes; expected an id list of at most 100 bytes"):
        parse_ids_bytes(b"1," * 500, "big.csv")
    monkeypatch.setattr(id_lists, "MAX_IDS_BYTES", 10_000)
    monkeypatch.setattr(id_lists, "MAX_IDS", 10)
    with pytest.raises(ForgetRequestError, match=r"^many.csv, line 1: more than 10 ids"):
        parse_ids_text(",".join(map(str, range(11))), "many.csv")


# ---------------------------------------------------------------------------------------------------------
# image folders and their zip


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    root = make_folder(tmp_path / "pets")
    Image.new("L", (20_000, 20_000)).save(root / "dog" / "bomb.png")  # 400 megapixels, PIL refuses to open it
    with pytest.raises(DataError, match=r"^pets/dog/bomb.png: a decompression bomb \(its header claims an image of "
                                        r"400 megapixels\); expected at most 16.8 megapixels per image"):
        read_image_folder(root)
    Image.new("L", (5000, 4000)).save(root / "dog" / "bomb.png")  # 20 megapixels: over our cap, under PIL's
    with pytest.raises(DataError, match=r"^pets/dog/bomb.png: 5,000x4,000 pixels \(20 megapixels\); expected at "
                                        r"most 16.8 megapixels per image \(e.g. 4096x4096\)"):
        read_image_folder(root)
    with pytest.raises(DataError, match=r"^pets.zip: pets/dog/bomb.png: 5,000x4,000 pixels"):
        read_image_zip(zip_of(root), "pets.zip")


def test_a_link_out_of_the_folder_is_refused_and_one_inside_is_read(tmp_path):
    root = make_folder(tmp_path / "pets")
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(255))
    (root / "cat" / "sneaky.png").symlink_to(secret)
    with pytest.raises(DataError, match=rf"^pets, cat/sneaky.png: a link to {secret}, outside the folder; expected "
                                        r"images inside the folder itself. Copy the image into the folder"):
        read_image_folder(root)
    (root / "cat" / "sneaky.png").unlink()
    (root / "dog" / "away").symlink_to(tmp_path, target_is_directory=True)  # a folder link out: refused too
    with pytest.raises(DataError, match=r"^pets, dog/away: a link to .*, outside the folder"):
        read_image_folder(root)
    (root / "dog" / "away").unlink()
    (root / "cat" / "again.png").symlink_to(root / "dog" / "0.png")  # inside: read as that file
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)  # a folder inside: not followed
    assert read_image_folder(root).dataset.num_train + len(read_image_folder(root).dataset.y_test) == 21


def test_a_link_in_a_zip_upload_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pets/cat/0.png", png_bytes())
        link = zipfile.ZipInfo("pets/cat/1.png")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match=r"^pets.zip, pets/cat/1.png: a symbolic link; expected the image files"):
        read_image_zip(buf.getvalue(), "pets.zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../evil/0.png", png_bytes())
    with pytest.raises(DataError, match=r"a path that leads out of the folder"):
        read_image_zip(buf.getvalue(), "evil.zip")


def test_unreadable_images_are_skipped_and_counted_up_to_five_percent(tmp_path):
    root = make_folder(tmp_path / "pets", per_class=20)  # 40 images: 2 may be unreadable
    (root / "cat" / "broken.png").write_bytes(b"not a png at all")
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 9), dtype=np.uint8), "L").save(noise, "PNG")
    (root / "dog" / "cut.png").write_bytes(noise.getvalue()[:80])  # its header reads, its pixels do not
    loaded = read_image_folder(root)
    assert loaded.dataset.num_train + len(loaded.dataset.y_test) == 40
    assert loaded.notes == ["2 unreadable image file(s) skipped: pets/cat/broken.png (not an image in a known "
                            "format); pets/dog/cut.png (image file is truncated)"]
    (root / "dog" / "more.jpg").write_bytes(b"\xff\xd8 nope")
    with pytest.raises(DataError, match=r"^pets: 3 of 43 images cannot be decoded \(pets/cat/broken.png .*\); "
                                        r"expected at most 2 unreadable \(5%\); nothing was loaded"):
        read_image_folder(root)
    with pytest.raises(DataError, match=r"^upload.zip: 3 of 43 images cannot be decoded"):  # the zip: the same rule
        read_image_zip(zip_of(root), "upload.zip")


def test_caps_on_images_bytes_and_unpacked_size_come_first(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "pets")
    with pytest.raises(DataError, match=r"^pets: more than max_images=15 images; expected at most 15"):
        read_image_folder(root, max_images=15)
    monkeypatch.setattr(user_common, "MAX_FOLDER_BYTES", 500)
    with pytest.raises(DataError, match=r"^pets: more than 500 bytes of image files"):
        read_image_folder(root)
    data = zip_of(root)
    monkeypatch.setattr(user_common, "MAX_DECOMPRESSED_BYTES", 1000)
    with pytest.raises(DataError, match=r"^pets.zip: images that unpack to [0-9,]+ bytes; expected at most 1,000"):
        read_image_zip(data, "pets.zip")
    monkeypatch.setattr(user_common, "MAX_FILE_BYTES", 100)
    with pytest.raises(DataError, match=r"^pets.zip: [0-9,.]+ (bytes|KiB|MiB); expected at most 100 bytes"):
        load_user_data(data, "pets.zip")
    monkeypatch.setattr(user_common, "MAX_FILE_BYTES", 10**9)
    monkeypatch.setattr(user_common, "MAX_DECOMPRESSED_BYTES", 10**9)
    monkeypatch.setattr(user_common, "MAX_DATASET_BYTES", 1000)
    with pytest.raises(DataError, match=r"^pets.zip: 20 images of 1x9x9 that take 6,480 bytes as float32"):
        read_image_zip(data, "pets.zip")


def test_a_zip_upload_loads_like_the_folder(tmp_path):
    root = make_folder(tmp_path / "pets")
    folder = read_image_folder(root).dataset
    uploaded = load_user_data(zip_of(root, prefix="wrap/pets"), "pets.zip").dataset
    assert uploaded.class_names == ("cat", "dog") and uploaded.fingerprint() == folder.fingerprint()
    assert uploaded.name == "pets" and uploaded.source == "pets.zip"


# ---------------------------------------------------------------------------------------------------------
# .npz


def test_an_npz_that_is_not_a_zip_says_what_it_is_not_allow_pickle(tmp_path):
    cases = {b"hello, world": "text", pickle.dumps({"x": 1}): r"a Python pickle \(pickles are never loaded\)",
             b"": "an empty file", png_bytes(): "a PNG image"}
    for data, found in cases.items():
        with pytest.raises(DataError, match=rf"^data.npz: {found}; expected a .npz archive of named arrays, as "
                                            r"numpy.savez or numpy.savez_compressed write") as err:
            load_npz(data, source_name="data.npz")
        assert "allow_pickle" not in str(err.value)


def test_npz_messages_name_the_upload_not_a_temporary_file(tmp_path):
    temp = tmp_path / "tmpq8x1.npz"
    temp.write_bytes(npz_bytes(x=np.zeros((6, 8, 8), np.uint8), y=np.arange(7)))
    with pytest.raises(DataError, match=r"^holiday photos.npz: 6 images but 7 labels") as err:
        load_npz(temp, source_name="holiday photos.npz")
    assert "tmpq8x1" not in str(err.value)
    assert load_npz(GOOD_NPZ, source_name="mine.npz").name == "mine"


def test_npz_sizes_come_from_the_zip_directory_and_headers_before_any_array_is_read(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("an array was read before its size was checked")

    big = npz_bytes(x=np.zeros((100, 32, 32), np.uint8), y=np.arange(100) % 2)  # 102 KB unpacked, 1 KB packed
    monkeypatch.setattr(user_common, "MAX_DECOMPRESSED_BYTES", 50_000)
    monkeypatch.setattr(npz, "_npz_header", never)
    with pytest.raises(DataError, match=r"^big.npz: its arrays unpack to [0-9,]+ bytes; expected at most 50,000"):
        load_npz(big, source_name="big.npz")
    monkeypatch.undo()
    monkeypatch.setattr(user_common, "MAX_DATASET_BYTES", 100_000)
    with pytest.raises(DataError, match=r"^big.npz: images that take 409,600 bytes as float32; expected at most"):
        load_npz(big, source_name="big.npz")
    # a header that claims more than its member holds is refused before the data is read
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (10**6, 1000, 1000)})
        zf.writestr("x.npy", header.getvalue() + b"\x00" * 64)
        zf.writestr("y.npy", header.getvalue())
    with pytest.raises(DataError, match=r"^liar.npz, x: shape \(1000000, 1000, 1000\) of uint8 needs 953,674.3 "
                                        r"MiB but the member holds"):
        load_npz(buf.getvalue(), source_name="liar.npz")


def test_npz_object_arrays_are_refused_without_unpickling():
    data = npz_bytes(x=np.array([np.zeros((8, 8)), None], dtype=object), y=np.arange(2))
    with pytest.raises(DataError, match=r"^o.npz \[x\]: an object \(pickled\) array; expected numbers or strings; "
                                        r"pickled arrays are never loaded"):
        load_npz(data, source_name="o.npz")


# ---------------------------------------------------------------------------------------------------------
# checkpoints, query parameters, sweep specs


def _parametric_state(ds) -> dict:
    kind = bundle.get_model_kind("parametric")
    net = kind.build(ds, bundle.default_config("parametric", ds.name))
    return {k: v.detach().contiguous() for k, v in net.state_dict().items()}


def test_a_checkpoint_is_safetensors_for_a_registered_kind_with_every_shape_checked(ds):
    state = _parametric_state(ds)
    loaded = load_checkpoint(safetensors_bytes(state), "parametric", ds, "mine.safetensors")
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    classifier = bundle.from_weights("parametric", ds, safetensors_bytes(loaded), where="mine.safetensors")
    assert classifier.split_proba(ds, "test").shape == (len(ds.y_test), 10)
    with pytest.raises(StoreError, match=r"^mine.safetensors are not a readable safetensors file"):
        bundle.from_weights("parametric", ds, b"junk", where="mine.safetensors")
    pt = io.BytesIO()
    torch.save(state, pt)
    with pytest.raises(StoreError, match=r"^mine.pt: a PyTorch checkpoint \(torch.save: a zip of pickles\); expected a "
                                         r"safetensors checkpoint of a parametric model for digits. Save the weights "
                                         r"with safetensors.torch.save_file"):
        load_checkpoint(pt.getvalue(), "parametric", ds, "mine.pt")
    name, tensor = next(iter(state.items()))
    wrong = {**state, name: torch.zeros(*tensor.shape[:-1], tensor.shape[-1] + 1)}
    with pytest.raises(StoreError, match=rf"^mine.safetensors \(weights for the parametric model on digits\): {name} "
                                         r"has shape"):
        load_checkpoint(safetensors_bytes(wrong), "parametric", ds, "mine.safetensors")
    with pytest.raises(StoreError, match=r"do not fit this model: missing \['w_q.weight'"):
        load_checkpoint(safetensors_bytes(state), "spm", ds, "mine.safetensors")
    with pytest.raises(StoreError, match=r"^m.safetensors: model kind 'resnet'; expected one of the registered kinds"):
        load_checkpoint(safetensors_bytes(state), "resnet", ds, "m.safetensors")
    with pytest.raises(StoreError, match=r"^m.safetensors: a truncated safetensors file"):
        load_checkpoint(safetensors_bytes(state)[:500], "parametric", ds, "m.safetensors")



def test_an_uploaded_checkpoint_becomes_a_session_model_keyed_by_its_hash(ds):
    import hashlib

    data = safetensors_bytes(_parametric_state(ds))
    own = checkpoint_model(data, "parametric", ds, "mine.safetensors")
    sha = hashlib.sha256(data).hexdigest()
    assert own.key == f"parametric-upload-{sha[:16]}" and own.meta["weights_sha256"] == sha
    expected = bundle.from_weights("parametric", ds, data).split_proba(ds, "test")
    np.testing.assert_allclose(own.classifier.split_proba(ds, "test"), expected, atol=1e-6)
    assert own.meta["test_acc"] == pytest.approx((expected.argmax(1) == ds.y_test).mean() * 100)
    with pytest.raises(StoreError, match="^mine.safetensors"):
        checkpoint_model(data, "spm", ds, "mine.safetensors")

def test_query_parameters_are_checked_against_the_registries(ds):
    query = parse_query({"dataset": "digits", "model": "spm", "method": "spm-delete", "classes": "3,0,3",
                         "utm_source": "mail"}, class_names=ds.class_names)
    assert (query.dataset, query.model, query.method, query.classes) == ("digits", "spm", "spm-delete", (0, 3))
    assert query.ignored == ("utm_source",) and parse_query({}).dataset is None
    assert parse_query({"classes": "0,Trouser"}).class_tokens == ("0", "Trouser")  # resolved once the data is known
    for params, message in [
        ({"dataset": "imagenet"}, r"^the page address, \?dataset=: unknown dataset 'imagenet'; expected one of "),
        ({"model": "gpt"}, r"\?model=: unknown model kind 'gpt'; expected one of parametric"),
        ({"model": "spm", "method": "ft"}, r"\?method=: ft does not apply to spm models; expected one of spm-delete"),
        ({"classes": "1,42"}, r"\?classes=: unknown class '42'; expected class indices 0..9 or names"),
        ({"dataset": "x" * 500}, r"\?dataset=: 500 characters; expected at most 200"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_query(params, class_names=ds.class_names)
    assert parse_query({"dataset": "upload:mine"}, datasets=["upload:mine"]).dataset == "upload:mine"


def test_sweep_spec_errors_belong_to_the_family(ds):
    with pytest.raises(InputError, match=r"--seeds: '9{20,}"):
        sweep.parse_seeds("9" * 5000)
    with pytest.raises(InputError, match=r"--requests: 'class:1\+99': unknown class 99"):
        sweep.parse_request(ds, "class:1+99", 0)


# ---------------------------------------------------------------------------------------------------------
# property tests: never another exception, never more than 5 s on one input


def _mutate(base: bytes, data) -> bytes:
    """``base`` with a few bytes changed and maybe cut short."""
    out = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        out[data.draw(st.integers(0, len(out) - 1))] = data.draw(st.integers(0, 255))
    return bytes(out[:data.draw(st.integers(0, len(out)))] if data.draw(st.booleans()) else out)


def _valid_or_input_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except InputError:
        return None


ID_TEXT = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(st.integers(-(10**30), 10**30).map(str), st.sampled_from(["id", "x", "1.5", "", '"3"', "1e3"]),
                       st.text(max_size=5)), max_size=30).map(lambda t: "\n".join(",".join(t[i:i + 3])
                                                                                for i in range(0, len(t), 3))),
)


@PROPERTY
@given(text=ID_TEXT)
def test_property_id_text(ds, text):
    ids = _valid_or_input_error(parse_ids_text, text, "t.csv")
    if ids is not None:
        assert all(isinstance(i, int) for i in ids)
        _valid_or_input_error(request_ids, ds, ids)


@PROPERTY
@given(data=st.binary(max_size=400))
def test_property_id_bytes(data):
    _valid_or_input_error(parse_ids_bytes, data, "b.csv")


@PROPERTY
@given(ids=st.one_of(st.lists(st.integers(-(2**70), 2**70), max_size=40),
                     st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=4), st.booleans()), max_size=5)),
       classes=st.lists(st.one_of(st.integers(-(10**30), 10**30), st.text(max_size=30)), max_size=4))
def test_property_requests(ds, ids, classes):
    _valid_or_input_error(request_ids, ds, ids)
    _valid_or_input_error(request_classes, ds, classes)


@PROPERTY
@given(data=st.binary(max_size=300))
def test_property_idx_and_gzip(data):
    _valid_or_input_error(sources.parse_idx, data, "f.idx")
    _valid_or_input_error(sources.gunzip, data, 10_000, "f.gz")
    _valid_or_input_error(sources.gunzip, gzip.compress(data), 100, "f.gz")


@PROPERTY
@given(data=st.binary(max_size=300))
def test_property_any_upload(data):
    _valid_or_input_error(load_user_data, data, "upload.bin")
    _valid_or_input_error(load_npz, b"PK\x03\x04" + data, source_name="u.npz")


NPY_HEADER_TEXT = st.one_of(
    st.text(max_size=200),
    st.builds("{{'descr': {!r}, 'fortran_order': {}, 'shape': {}, }}".format,
              st.one_of(st.sampled_from(["<f4", "|u1", "<U3", "|O", "<i8", ">f2", "V8", "|b1"]), st.text(max_size=8)),
              st.sampled_from(["True", "False", "1", ""]),
              st.one_of(st.lists(st.integers(0, 2**70), max_size=4).map(tuple).map(repr), st.text(max_size=12))),
)


@PROPERTY
@given(header=NPY_HEADER_TEXT, version=st.sampled_from([1, 2, 3]), body=st.binary(max_size=64))
def test_property_npy_header(header, version, body):
    """An array header (numpy's format, read without ast) of any text: its shape, order and dtype, or a
    HeaderError; inside an upload, a dataset or the user's error."""
    from core.data.npy_header import HeaderError, read_header

    raw = header.encode("utf-8" if version == 3 else "latin-1", errors="replace")
    member = b"\x93NUMPY" + bytes([version, 0]) + len(raw).to_bytes(2 if version == 1 else 4, "little") + raw + body
    try:
        shape, fortran, dtype = read_header(io.BytesIO(member))
        assert all(n >= 0 for n in shape) and isinstance(fortran, bool) and isinstance(dtype, np.dtype)
    except HeaderError:
        pass
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x.npy", member)
        zf.writestr("y.npy", member)
    _valid_or_input_error(load_npz, archive.getvalue(), source_name="h.npz")


@PROPERTY
@given(data=st.data())
def test_property_damaged_npz(data):
    _valid_or_input_error(load_npz, _mutate(GOOD_NPZ, data), source_name="d.npz")


@pytest.fixture(scope="module")
def good_zip(tmp_path_factory):
    return zip_of(make_folder(tmp_path_factory.mktemp("zip") / "pets", per_class=3))


@FEW
@given(data=st.data())
def test_property_damaged_image_zip(good_zip, data):
    _valid_or_input_error(read_image_zip, _mutate(good_zip, data), "z.zip")


@FEW
@given(files=st.lists(st.one_of(st.binary(max_size=200), st.builds(png_bytes, st.integers(0, 255),
                                                                    st.tuples(st.integers(1, 40), st.integers(1, 40)))),
                      min_size=4, max_size=8),
       suffixes=st.lists(st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tif", ".webp", ".txt"]), min_size=8))
def test_property_image_folder(files, suffixes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "f"
        for i, content in enumerate(files):
            (root / ("a" if i % 2 else "b")).mkdir(parents=True, exist_ok=True)
            (root / ("a" if i % 2 else "b") / f"{i}{suffixes[i]}").write_bytes(content)
        _valid_or_input_error(read_image_folder, root, resize_to=(8, 8))
        _valid_or_input_error(load_user_data, root)


GOOD_BATCH = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2], b"batch_label": b"x"},
                          protocol=2)


@PROPERTY
@given(data=st.data(), raw=st.binary(max_size=200))
def test_property_cifar_pickles(data, raw):
    _valid_or_input_error(cifar.parse_cifar_pickle, raw, "data_batch_1")
    parsed = _valid_or_input_error(cifar.parse_cifar_pickle, _mutate(GOOD_BATCH, data), "data_batch_1")
    if parsed is not None:
        _valid_or_input_error(cifar._cifar10_batch, parsed, "data_batch_1")
    _valid_or_input_error(cifar.load_cifar10_archive, raw, "c.tar.gz")
    _valid_or_input_error(cifar.load_cifar10_archive, gzip.compress(raw), "c.tar.gz")


@FEW
@given(data=st.data(), raw=st.binary(max_size=200))
def test_property_checkpoints(ds, data, raw):
    good = safetensors_bytes(_parametric_state(ds))
    _valid_or_input_error(load_checkpoint, raw, "parametric", ds, "r.safetensors")
    _valid_or_input_error(load_checkpoint, _mutate(good, data), "parametric", ds, "m.safetensors")


@PROPERTY
@given(seeds=st.text(max_size=40), request=st.text(max_size=40))
def test_property_sweep_specs(ds, seeds, request):
    _valid_or_input_error(sweep.parse_seeds, seeds)
    _valid_or_input_error(sweep.parse_request, ds, request, 0)
    _valid_or_input_error(sweep.parse_request, ds, "class:" + request, 0)


CONFIG_FIELDS = st.sampled_from(["k", "vit.width", "vit.mlp_ratio", "self_retrieval", "keys.x"])
CONFIG_VALUES = st.one_of(st.text(max_size=12), st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "2.5", "[1, 2]",
                                                                  "null", "{}", "9" * 400, "true"]))


@PROPERTY
@given(pairs=st.lists(st.one_of(st.text(max_size=30), st.tuples(CONFIG_FIELDS, CONFIG_VALUES).map("=".join)),
                      max_size=4))
def test_property_config_pairs(pairs):
    from core.cli import config_with
    from core.models.munkey import MunkeyConfig

    _valid_or_input_error(config_with, MunkeyConfig, pairs)


@PROPERTY
@given(params=st.dictionaries(st.sampled_from(["dataset", "model", "method", "classes", "other"]) | st.text(max_size=8),
                              st.one_of(st.text(max_size=250), st.lists(st.text(max_size=20), max_size=3),
                                        st.integers(), st.none())),
       named=st.booleans())
def test_property_query_parameters(ds, params, named):
    _valid_or_input_error(parse_query, params, ds.class_names if named else None)


def test_a_fifo_in_an_image_folder_is_ignored_not_waited_on(tmp_path):
    root = make_folder(tmp_path / "pets")
    os.mkfifo(root / "cat" / "pipe.png")
    assert read_image_folder(root).dataset.num_classes == 2
