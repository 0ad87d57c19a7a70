"""CIFAR-10 at paper scale: the python-batch loader (never runs what a pickle names), the CIFAR ResNet-18,
the SPM authors' recipe and per-dataset model configs, and mixed precision that leaves CPU training alone."""

import os
import pickle
import struct
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from core import bundle
from core.data import DataError, Dataset, cifar, list_datasets
from core.data.cifar import CIFAR10_CLASSES, load_cifar10_folder, read_cifar_pickle
from core.models import get_model_kind
from core.models.encoders import CifarResNet18, EncoderConfig, build_encoder
from core.models.parametric import ParametricConfig
from core.models.spm import SPMConfig
from core.models.training import TrainConfig, make_schedule, mixed_precision

PER_BATCH, PER_TEST = 4, 6  # tiny batches: 20 training and 6 test images


def _batch(rng: np.random.Generator, n: int, start: int) -> dict:
    """One batch as the official files hold it: bytes keys, a uint8 (N, 3072) array, labels as a list."""
    return {b"batch_label": b"training batch", b"labels": [(start + i) % 10 for i in range(n)],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{start + i}.png".encode() for i in range(n)]}


def _dump(path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture
def cifar_dir(tmp_path):
    """A cifar-10-batches-py folder in the official format; returns (folder, the batches written)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = _batch(rng, PER_BATCH, (i - 1) * PER_BATCH)
        _dump(folder / f"data_batch_{i}", batches[f"data_batch_{i}"])
    batches["test_batch"] = _batch(rng, PER_TEST, 3)
    _dump(folder / "test_batch", batches["test_batch"])
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_CLASSES],
                                    b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072})
    return folder, batches


def test_official_batches_load_as_float_nchw(cifar_dir):
    folder, batches = cifar_dir
    ds = load_cifar10_folder(folder)
    assert ds.name == "cifar10" and ds.class_names == CIFAR10_CLASSES
    assert ds.x_train.shape == (5 * PER_BATCH, 3, 32, 32) and ds.x_test.shape == (PER_TEST, 3, 32, 32)
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert ds.y_train.tolist() == sum((b[b"labels"] for b in train), [])  # ids follow data_batch_1..5
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"]
    # a row is 1024 red, then 1024 green, then 1024 blue values, each 32x32 row-major
    row = train[1][b"data"][2]
    first_of_batch_2 = ds.x_train[PER_BATCH + 2]
    assert np.array_equal(first_of_batch_2[1], row[1024:2048].reshape(32, 32) / np.float32(255))
    assert first_of_batch_2[2, 0, 5] == np.float32(row[2048 + 5]) / np.float32(255)


def test_the_registered_dataset_reads_the_folder_the_environment_names(cifar_dir, monkeypatch):
    folder, _ = cifar_dir
    assert "cifar10" in list_datasets()
    monkeypatch.delenv("CIFAR10_DIR", raising=False)
    with pytest.raises(DataError, match=r"CIFAR10_DIR.*cifar-10-batches-py.*nothing is downloaded"):
        cifar.load_cifar10()
    monkeypatch.setenv("CIFAR10_DIR", str(folder.parent))  # the folder holding the extracted one also works
    assert cifar.load_cifar10().num_train == 5 * PER_BATCH
    (folder / "data_batch_4").unlink()
    monkeypatch.setenv("CIFAR10_DIR", str(folder))
    with pytest.raises(DataError, match=r"missing data_batch_4; set \$CIFAR10_DIR to the extracted"):
        cifar.load_cifar10()


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch written the way Python 2's cPickle wrote the official files: str (not bytes) for keys and for
    the array's raw data, numpy.core.multiarray, ints for dtype flags (built opcode by opcode)."""
    def text(b: bytes) -> bytes:  # SHORT_BINSTRING / BINSTRING
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def num(n: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", n)

    dtype = (b"cnumpy\ndtype\n" + text(b"u1") + num(0) + num(1) + b"\x87R"
             + b"(" + num(3) + text(b"|") + b"NNN" + num(-1) + num(-1) + num(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + num(0) + b"\x85" + text(b"b")
             + b"\x87R" + b"(" + num(1) + num(data.shape[0]) + num(data.shape[1]) + b"\x86" + dtype + b"\x89"
             + text(data.tobytes()) + b"tb")
    return (b"\x80\x02}(" + text(b"data") + array + text(b"labels") + b"](" + b"".join(map(num, labels)) + b"e"
            + text(b"batch_label") + text(b"training batch 1 of 5") + b"u.")


def test_python2_pickles_as_shipped_load_too(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    (tmp_path / "data_batch_1").write_bytes(_py2_batch(data, [7, 0, 9]))
    batch = read_cifar_pickle(tmp_path / "data_batch_1")
    assert np.array_equal(batch["data"], data) and batch["data"].dtype == np.uint8
    assert batch["labels"] == [7, 0, 9] and batch["batch_label"] == b"training batch 1 of 5"


class _RunsOnLoad:
    """Unpickling this calls ``fn(arg)``: what a hostile batch file would carry."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "exec", "bytes(n)"])
def test_a_pickle_naming_any_other_global_is_refused_and_nothing_runs(cifar_dir, how):
    folder, batches = cifar_dir
    marker = folder.parent / "pwned"
    payload = {"os.system": _RunsOnLoad(os.system, f"touch {marker}"),
               "exec": _RunsOnLoad(exec, f"open({str(marker)!r}, 'w').close()"),
               "bytes(n)": _RunsOnLoad(bytes, 10**12)}[how]  # 1 TB, were it allocated
    evil = dict(batches["data_batch_2"])
    evil[b"labels"] = payload
    _dump(folder / "data_batch_2", evil)
    refused = {"os.system": f"{os.system.__module__}.system", "exec": "exec", "bytes(n)": "bytes"}[how]
    with pytest.raises(DataError, match="data_batch_2") as err:
        load_cifar10_folder(folder)
    assert "refused" in str(err.value) and refused in str(err.value)
    assert not marker.exists()


def test_object_arrays_are_refused(cifar_dir):
    folder, batches = cifar_dir
    bad = dict(batches["test_batch"])
    bad[b"data"] = np.array([[1, "x"]], dtype=object)
    _dump(folder / "test_batch", bad)
    with pytest.raises(DataError, match=r"test_batch \['data'\]: an array of dtype '\|?O8?'; expected integers"):
        load_cifar10_folder(folder)


@pytest.mark.parametrize("change, message", [
    (lambda b: {**b, b"data": b[b"data"][:, :3000]}, r"data_batch_3: data must be uint8 of shape \(N, 3072\); "
                                                      r"found uint8 \(4, 3000\)"),
    (lambda b: {**b, b"data": b[b"data"].astype(np.float32)},
     r"data_batch_3 \['data'\]: an array of dtype 'f4'; expected integers"),
    (lambda b: {**b, b"labels": b[b"labels"][:3]}, r"data_batch_3: 4 images but 3 labels"),
    (lambda b: {**b, b"labels": [0, 1, 10, 2]}, r"data_batch_3: labels must lie in 0..9; found 0..10"),
    (lambda b: {k: v for k, v in b.items() if k != b"labels"}, r"data_batch_3: no labels entry"),
    (lambda b: [b[b"data"]], r"data_batch_3: expected a pickled dict, found list"),
])
def test_malformed_batches_are_refused_naming_the_file(cifar_dir, change, message):
    folder, batches = cifar_dir
    _dump(folder / "data_batch_3", change(batches["data_batch_3"]))
    with pytest.raises(DataError, match=message):
        load_cifar10_folder(folder)


def test_a_truncated_batch_is_a_data_error(cifar_dir):
    folder, _ = cifar_dir
    path = folder / "data_batch_1"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR-10 python batch"):
        load_cifar10_folder(folder)


def test_the_size_cap_is_checked_before_anything_is_read(cifar_dir, monkeypatch):
    folder, _ = cifar_dir
    (folder / "batches.meta").unlink()  # the official class names then; only the batches are read
    monkeypatch.setattr(cifar, "CIFAR_BATCH_MAX_BYTES", 1000)

    def never(*args, **kwargs):
        raise AssertionError("the file was unpickled despite its size")

    monkeypatch.setattr(cifar, "_ArrayUnpickler", never)
    with pytest.raises(DataError, match=r"data_batch_1: [0-9,]+ bytes, over the 1,000-byte cap"):
        load_cifar10_folder(folder)


def _archive(folder, kind: str) -> bytes:
    """The batches of ``folder`` packed as the official tar.gz (under cifar-10-batches-py/) or as a zip."""
    import io
    import tarfile
    import zipfile

    buf = io.BytesIO()
    if kind == "tar.gz":
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            tf.add(folder, arcname="cifar-10-batches-py")
    else:
        with zipfile.ZipFile(buf, "w") as zf:
            for file in sorted(folder.iterdir()):
                zf.write(file, f"batches/{file.name}")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_the_official_archive_loads_from_an_upload_without_extracting(cifar_dir, kind):
    from core.data.user_files import load_user_data

    folder, batches = cifar_dir
    data = _archive(folder, kind)
    from_folder = load_cifar10_folder(folder)
    loaded = load_user_data(data, source_name=f"cifar-10-python.{kind}")
    assert loaded.dataset.fingerprint() == from_folder.fingerprint()
    assert loaded.dataset.source == f"cifar-10-python.{kind}"
    assert cifar.load_cifar10_archive(data, "c.tar").class_names == CIFAR10_CLASSES
    assert load_user_data(folder.parent).dataset.fingerprint() == from_folder.fingerprint()  # the folder, too


def test_archive_messages_name_the_upload_and_member(cifar_dir, monkeypatch):
    folder, batches = cifar_dir
    _dump(folder / "data_batch_4", {**batches["data_batch_4"], b"labels": [0, 1, 2, 10**40]})
    with pytest.raises(DataError, match=r"^my-cifar.tar.gz: data_batch_4: labels must lie in 0..9; found 0..1000"):
        cifar.load_cifar10_archive(_archive(folder, "tar.gz"), "my-cifar.tar.gz")
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match=r"my-cifar.zip: no test_batch; expected cifar-10-python.tar.gz"):
        cifar.load_cifar10_archive(_archive(folder, "zip"), "my-cifar.zip")
    monkeypatch.setattr(cifar, "CIFAR_ARCHIVE_MAX_UNPACKED", 10_000)
    with pytest.raises(DataError, match=r"members that unpack to more than 10,000 bytes"):
        cifar.load_cifar10_archive(_archive(folder, "tar.gz"), "big.tar.gz")


def test_a_label_beyond_int64_is_a_data_error_not_an_overflow(cifar_dir):
    folder, batches = cifar_dir
    _dump(folder / "test_batch", {**batches["test_batch"], b"labels": [10**400] * PER_TEST})
    with pytest.raises(DataError, match=r"test_batch: labels must lie in 0..9; found 100000000000…\.\.100000000000…"):
        load_cifar10_folder(folder)


# ---- the CIFAR ResNet-18 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("feature_dim", [64, 512])
def test_resnet18_maps_cifar_images_to_feature_dim(feature_dim):
    encoder = build_encoder(3, EncoderConfig(arch="resnet18", feature_dim=feature_dim)).eval()
    with torch.no_grad():
        out = encoder(torch.rand(2, 3, 32, 32))
    assert isinstance(encoder, CifarResNet18)
    assert out.shape == (2, feature_dim) and encoder.out_dim == feature_dim


def test_resnet18_is_the_cifar_form_of_he_et_al():
    encoder = build_encoder(3, EncoderConfig(arch="resnet18", feature_dim=512))
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    stem = convs[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in encoder.modules())
    assert [b.conv2.out_channels for b in encoder.blocks] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [b.conv1.stride[0] for b in encoder.blocks] == [1, 1, 2, 1, 2, 1, 2, 1]
    # the parameter count of the authors' nets/resnet.py ResNet18 (no classifier): 11,168,832
    assert sum(p.numel() for p in encoder.parameters()) == 11_168_832
    with torch.no_grad():  # 32x32 in, 4x4 before the pooling
        assert encoder.blocks(encoder.stem(torch.rand(1, 3, 32, 32))).shape == (1, 512, 4, 4)


@pytest.mark.parametrize("kind", ["parametric", "spm"])
def test_a_resnet18_model_trains_on_cpu(kind):
    rng = np.random.default_rng(0)
    x = rng.random((32, 3, 32, 32), dtype=np.float32)
    y = np.arange(32) % 4  # 8 images a class: an SPM batch of 16 leaves support for every class
    ds = Dataset("tiny-colour", x, y, x[:4], y[:4], ("a", "b", "c", "d"))
    spec = get_model_kind(kind)
    encoder = EncoderConfig(arch="resnet18", feature_dim=32)
    config = ParametricConfig(encoder=encoder) if kind == "parametric" else SPMConfig(encoder=encoder, support_size=8)
    torch.manual_seed(0)
    net = spec.build(ds, config)
    before = [p.detach().clone() for p in net.parameters()]
    log = spec.fit(net, ds, ds.train_ids, config, TrainConfig(epochs=1, batch_size=16, device="cpu"),
                   device=torch.device("cpu"))
    assert log["steps"] == 2 and np.isfinite(log["final_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


# ---- the paper's recipe and the per-dataset configs ---------------------------------------------------------

def test_the_cifar10_recipe_is_the_spm_authors():
    tc = bundle.recipe("cifar10", "spm")
    assert tc == bundle.RECIPES["cifar10"] == bundle.recipe("cifar10", "parametric")
    assert (tc.optimizer, tc.lr, tc.momentum, tc.weight_decay, tc.epochs, tc.batch_size) == \
           ("sgd", 0.1, 0.9, 5e-4, 100, 256)
    assert tc.warmup_epochs == 0 and tc.amp


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 196, 391])
def test_the_cifar10_schedule_divides_the_lr_by_ten_after_epochs_36_and_91(steps_per_epoch):
    tc = bundle.RECIPES["cifar10"]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=tc.lr)
    schedule = make_schedule(opt, tc, steps_per_epoch * tc.epochs)
    per_epoch = []
    for _ in range(tc.epochs):
        lrs = set()
        for _ in range(steps_per_epoch):
            lrs.add(round(opt.param_groups[0]["lr"], 12))
            opt.step()
            schedule.step()
        per_epoch.append(lrs)
    assert per_epoch[:36] == [{0.1}] * 36
    assert per_epoch[36:91] == [{0.01}] * 55
    assert per_epoch[91:] == [{0.001}] * 9


def test_cifar10_models_default_to_the_papers_resnet18_and_support_size():
    resnet = EncoderConfig(arch="resnet18", feature_dim=512)
    spm = bundle.default_config("spm", "cifar10")
    assert spm == replace(SPMConfig(), encoder=resnet, support_size=1024)
    assert bundle.default_config("parametric", "cifar10") == ParametricConfig(encoder=resnet)
    for kind in ("spm", "parametric", "vit"):  # every other dataset keeps each kind's plain defaults
        assert bundle.default_config(kind, "fashion-mnist") == get_model_kind(kind).config_cls()
    assert SPMConfig().support_size == 128 and EncoderConfig().arch == "small-cnn"


def test_a_cifar10_model_is_looked_up_under_its_resnet18_config(cifar_dir, monkeypatch):
    ds = load_cifar10_folder(cifar_dir[0])
    tc = bundle.recipe("cifar10", "spm")
    key = bundle.model_key("spm", bundle.default_config("spm", "cifar10"), tc, ds, None)
    assert bundle.model_key("spm", SPMConfig(), tc, ds, None) != key
    asked = []
    monkeypatch.setattr(bundle.store, "find_model", lambda k: asked.append(k))
    assert not bundle.is_available("spm", ds)
    assert asked == [key]


def test_amp_at_its_default_leaves_stored_keys_unchanged(digits):
    from core.configs import config_hash, config_to_dict

    tc = bundle.recipe("digits")
    old = {k: v for k, v in config_to_dict(replace(tc, device="any")).items()
           if k not in ("optimizer", "warmup_epochs", "amp")}
    expected = f"spm-{config_hash('spm', SPMConfig(), old, digits.fingerprint(), None)}"
    assert bundle.model_key("spm", SPMConfig(), tc, digits, None) == expected
    assert bundle.model_key("spm", SPMConfig(), replace(tc, amp=False), digits, None) != expected


# ---- mixed precision: CUDA only ------------------------------------------------------------------------------

def test_mixed_precision_is_bf16_autocast_on_ampere_or_newer_cuda_only(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    capability = [(9, 0)]  # an H100 / H200
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[0])
    assert not isinstance(mixed_precision(cpu, TrainConfig()), torch.autocast)
    assert not isinstance(mixed_precision(cuda, TrainConfig(amp=False)), torch.autocast)
    with warnings.catch_warnings():  # building a CUDA autocast without CUDA only warns (it is never entered)
        warnings.simplefilter("ignore")
        ctx = mixed_precision(cuda, TrainConfig())
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    capability[0] = (7, 5)  # a T4 only emulates bfloat16: float32 there
    assert not isinstance(mixed_precision(cuda, TrainConfig()), torch.autocast)


def test_the_running_loss_reads_every_step_in_order():
    """Losses are read back every 10 steps, not every step; the running average must still see each one."""
    from core.models.training import train_loop

    net = torch.nn.Linear(1, 1)
    values = iter(range(1, 100))
    reports = []
    log = train_loop(net, np.arange(25), TrainConfig(epochs=1, batch_size=2, device="cpu"),
                     lambda batch, rng: net.weight.sum() * 0 + next(values), lambda f, m: reports.append(m))
    running = []
    for v in range(1, 13):  # 13 batches; the last (one id) is skipped
        running.append(float(v) if v == 1 else 0.95 * running[-1] + 0.05 * v)
    assert log["steps"] == 12 and log["final_loss"] == running[-1]  # steps 11 and 12 read at the end
    assert reports == [f"training: epoch 1/1, loss {running[9]:.3f}"]  # after step 10 (the last batch is skipped)


def test_cpu_training_ignores_amp(digits):
    """Bit-for-bit: the amp flag must not reach a CPU step."""
    spec = get_model_kind("parametric")
    weights = []
    for amp in (True, False):
        torch.manual_seed(0)
        net = spec.build(digits, ParametricConfig())
        tc = TrainConfig(epochs=1, batch_size=64, seed=3, device="cpu", amp=amp)
        spec.fit(net, digits, digits.train_ids[:256], ParametricConfig(), tc, device=torch.device("cpu"))
        weights.append([p.detach().clone() for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
