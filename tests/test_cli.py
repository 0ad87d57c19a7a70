"""The command line end to end on digits, as a user would run it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> tuple[int, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_train_forget_evaluate(digits, spm_model):
    code, datasets = cli("datasets")
    assert code == 0 and "digits" in datasets and "fashion-mnist" in datasets
    code, out = cli("train", "--dataset", "digits", "--model", "spm")
    assert code == 0 and out["test_acc"] > 80
    code, out, stderr = cli_err("forget", "--dataset", "digits", "--model", "spm", "--classes", "0",
                                "--method", "spm-delete")
    assert code == 0, out
    # a person at the terminal reads the verdict on stderr; stdout stays one JSON line for scripts
    assert out["sentence"] in stderr and f"FA 0.00 (oracles {out['oracle_metrics']['FA']:.2f})" in stderr
    assert f"stored as run {out['run_key']}" in stderr
    # stderr is not a terminal here: progress comes as plain lines (no bar redrawn with carriage returns)
    assert "\r" not in stderr and re.search(r"^spm +\d+% ", stderr, re.MULTILINE), stderr
    assert any(line.startswith("spm-delete on class 0") for line in stderr.splitlines()), stderr  # its own line
    assert out["metrics"]["FA"] == 0.0 and out["metrics"]["forgotten_TA"] == 0.0
    assert out["touched"]["parameters"] == 0 and out["metrics"]["speedup"] > 1
    assert {"TA", "RA", "MIA", "PG", "KL", "AvgGap"} <= set(out["metrics"])


def test_cli_rejects_bad_requests_clearly(tmp_path):
    code, out = cli("forget", "--dataset", "digits", "--classes", "99", "--no-oracle")
    assert code == 2 and "class" in out["error"]
    ids = tmp_path / "ids.txt"
    ids.write_text("1, 2, banana")
    code, out = cli("forget", "--dataset", "digits", "--ids-file", str(ids), "--no-oracle")
    assert code == 2 and "banana" in out["error"]
    code, out = cli("forget", "--dataset", "digits", "--classes", "0", "--method", "nope", "--no-oracle")
    assert code == 2 and "unknown" in out["error"]


def cli_err(*args: str) -> tuple[int, dict, str]:
    """Exit status, the last stdout line as JSON, and stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_hostile_inputs_exit_2_with_the_message_and_no_traceback(tmp_path):
    """A 400-digit id, a decompression bomb in an image folder, a link out of the folder, a missing file: each
    is one line naming the user's file, status 2, never a traceback, and nothing starts (no Ray, no training)."""
    import numpy as np
    from PIL import Image

    ids = tmp_path / "ids.txt"
    ids.write_text("5\n" + "9" * 400 + "\n")
    code, out, err = cli_err("forget", "--dataset", "digits", "--ids-file", str(ids), "--no-oracle")
    assert code == 2 and "Traceback" not in err
    assert out["error"].startswith(f"{ids}, line 2: '999999999999…' is a 400-digit number")

    folder = tmp_path / "pets"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((9, 9), 40 * i, np.uint8), "L").save(folder / name / f"{i}.png")
    Image.new("L", (20_000, 20_000)).save(folder / "dog" / "bomb.png")  # 400 megapixels in a few hundred KB
    code, out, err = cli_err("train", "--dataset", "pets", "--data", str(folder), "--model", "parametric")
    assert code == 2 and "Traceback" not in err and "DecompressionBomb" not in out["error"]
    assert out["error"].startswith(f"{folder}/dog/bomb.png: a decompression bomb (its header claims an image of 400 "
                                   "megapixels); expected at most 16.8 megapixels per image")

    (folder / "dog" / "bomb.png").unlink()
    (tmp_path / "elsewhere.png").write_bytes((folder / "cat" / "0.png").read_bytes())
    (folder / "cat" / "link.png").symlink_to(tmp_path / "elsewhere.png")
    code, out, err = cli_err("train", "--dataset", "pets", "--data", str(folder), "--model", "parametric")
    assert code == 2 and "Traceback" not in err
    outside = tmp_path / "elsewhere.png"
    assert out["error"].startswith(f"{folder}, cat/link.png: a link to {outside}, outside the folder")

    code, out, err = cli_err("train", "--dataset", "pets", "--data", str(tmp_path / "nope.npz"))
    assert code == 2 and out["error"].startswith(f"{tmp_path / 'nope.npz'}: no such file or folder")


def test_cli_refuses_supplied_weights_it_cannot_judge_before_anything_starts(tmp_path):
    """``--weights`` names a file of unlearned weights to judge: a damaged file, a by-design model (which forgets by
    its memory) and ``--method`` beside it are each refused with status 2 and a message, before Ray starts."""
    weights = tmp_path / "theirs.safetensors"
    weights.write_bytes(b"PK\x03\x04 a zip, as torch.save writes")
    code, out = cli("audit", "--dataset", "digits", "--model", "parametric", "--classes", "3", "--weights",
                    str(weights), "--out", str(tmp_path / "report"))
    assert code == 2 and str(weights) in out["error"] and "a PyTorch checkpoint" in out["error"]
    code, out = cli("forget", "--dataset", "digits", "--model", "spm", "--classes", "3", "--weights", str(weights))
    assert code == 2 and "spm forgets by deleting samples from its memory" in out["error"]
    code, out = cli("forget", "--dataset", "digits", "--model", "parametric", "--classes", "3", "--weights",
                    str(weights), "--method", "damp")
    assert code == 2 and "either --weights or --method" in out["error"]
    code, out = cli("forget", "--dataset", "digits", "--model", "parametric", "--classes", "3", "--weights",
                    str(tmp_path / "missing.safetensors"))
    assert code == 2 and "missing.safetensors" in out["error"] and "cannot be read" in out["error"]
    assert not (tmp_path / "report").exists()


def test_model_and_method_configs_from_name_value_pairs():
    import pytest

    from core.cli import config_with
    from core.configs import ConfigError
    from core.models.munkey import MunkeyConfig

    config = config_with(MunkeyConfig, ["retrieval_reg=self-drop", "vit.depth=2", "self_retrieval=true", "k=8"])
    assert (config.retrieval_reg, config.vit.depth, config.self_retrieval, config.k) == ("self-drop", 2, True, 8)
    assert config.vit.width == MunkeyConfig().vit.width  # untouched nested fields keep their defaults
    for bad, message in (("vit.nope=1", "unknown ViTConfig fields"), ("k=four", "expects int"),
                         ("keys.seed.x=1", "no nested config 'seed'"), ("k", "expected name=value"),
                         ("k=1e400", "k expects a finite number, got inf"),
                         ("vit.mlp_ratio=NaN", "mlp_ratio expects a finite number")):
        with pytest.raises(ConfigError, match=message):
            config_with(MunkeyConfig, [bad])


def test_cli_training_settings_out_of_range_are_refused_before_training():
    for flag, value, expected in (("--epochs", "0", "a whole number of epochs, 1 or more"),
                                  ("--train-seed", "-1", "a whole number from 0 to 2,000,000,000")):
        code, out = cli("train", "--dataset", "digits", "--model", "parametric", flag, value)
        assert code == 2 and out["error"] == f"{flag}: {value}; expected {expected}."


def test_cli_model_config_errors_stop_before_training():
    code, out = cli("train", "--dataset", "digits", "--model", "munkey", "--model-set", "retrieval_reg=self-drop",
                    "--model-set", "self_retrieval=false")
    assert code == 2 and "needs self_retrieval=True" in out["error"]
    code, out = cli("train", "--dataset", "digits", "--model", "spm", "--model-set", "support_size=many")
    assert code == 2 and "support_size" in out["error"]


def test_ctrl_c_cancels_the_training_task_and_stores_nothing(tmp_path):
    """The CLI trains on its own local Ray; Ctrl-C (SIGINT) cancels the task, exits 130, and the store stays empty."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT), "UE_HOME": str(tmp_path)}
    def as_from_a_terminal():  # Ctrl-C as a shell leaves it, whatever this test process inherited or set
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    proc = subprocess.Popen([sys.executable, "-m", "core", "train", "--dataset", "digits", "--model", "parametric",
                             "--epochs", "400"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=as_from_a_terminal)
    seen = b""
    deadline = time.time() + 180
    while b"epoch" not in seen and time.time() < deadline:  # the bar shows the task's own progress messages
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert b"epoch" in seen, seen[-500:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-800:]
    assert b"nothing partial was stored" in err
    assert not any(tmp_path.glob("models/*/weights.safetensors"))


def test_record_oracles_names_its_files_relative_to_the_working_folder(tmp_path, monkeypatch):
    from core.cli import _shown

    monkeypatch.chdir(tmp_path)
    assert _shown(tmp_path / "assets" / "oracles" / "k.npz") == os.path.join("assets", "oracles", "k.npz")
    assert _shown(Path("/elsewhere/k.npz")) == "/elsewhere/k.npz"  # outside it: as given


def test_cli_record_oracles_writes_records_the_app_reads(tmp_path, monkeypatch, digits, spm_model):
    from core import recorded

    code, out = cli("record-oracles", "--dataset", "digits", "--model", "spm", "--classes", "0", "--oracles", "2",
                    "--out", str(tmp_path))
    assert code == 0, out
    assert [f["seed"] for f in out["files"]] == [1, 2] and out["oracle_k"] == 2
    monkeypatch.setattr(recorded, "record_dirs", lambda: [tmp_path])
    for entry in out["files"]:
        twin = recorded.find(entry["oracle"], digits)
        assert twin is not None and recorded.is_recorded(twin) and twin.meta["train_config"]["seed"] == entry["seed"]
        assert twin.meta["excluded"]["classes"] == [0] and twin.meta["weights_sha256"]
    code, out = cli("record-oracles", "--dataset", "digits", "--classes", "0,eleven", "--out", str(tmp_path))
    assert code == 2 and "eleven" in out["error"]
