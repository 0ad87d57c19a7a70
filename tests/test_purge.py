"""What a forgotten SPM or MUNKEY still carries, and the purged copy that carries none of it: the saved files are
scanned for every forgotten id and row, and the copy predicts as the forgotten model does."""

import json

import numpy as np
import pytest
import torch

from core import bundle
from core.data import request_classes, request_random
from core.models.munkey import MunkeyConfig
from core.purge import load_purged, remaining, write_purged
from core.store import StoreError
from tests.test_munkey import TINY


@pytest.fixture(scope="module")
def munkey(digits):
    return bundle.train_or_load("munkey", digits, MunkeyConfig(), TINY).classifier


def _rows(report: list[dict]) -> dict[str, int]:
    return {r["artifact"].split(" (")[0]: r["forgotten_rows"] for r in report}


def _forgotten_rows(model, ids) -> list[bytes]:
    """The byte strings a file would hold if it kept any row of the forgotten ids: vectors and token rows."""
    ids = np.asarray(ids)
    rows = [r.astype(np.float32).tobytes() for r in model._shared.train_features[ids]]
    state = model._shared.net.state_dict()
    if "memory.weight" in state:
        rows += [r.numpy().tobytes() for r in state["memory.weight"][torch.as_tensor(ids)]]
    return rows


@pytest.mark.parametrize("kind", ["spm", "munkey"])
def test_a_purged_copy_holds_no_forgotten_id_or_row_and_predicts_as_the_forgotten_model(kind, request, digits,
                                                                                        tmp_path):
    original = request.getfixturevalue("spm_model" if kind == "spm" else "munkey")
    forget_request = request_random(digits, 0.1, 3)
    ids = np.asarray(forget_request.ids)
    forgotten = original.forget(ids)
    before = _rows(remaining(forgotten, ids))
    assert before["memory entries"] == 0  # the deletion itself was honoured...
    assert before["training vectors"] == len(ids)  # ...but the shared vectors still hold every forgotten row
    if kind == "munkey":
        assert before["network table memory.weight"] == len(ids) and before["this model's exemplar tokens"] == 0

    folder = write_purged(forgotten, ids, tmp_path / "purged", original_key="orig")
    blob = b"".join(p.read_bytes() for p in folder.iterdir())
    assert not [r for r in _forgotten_rows(original, ids) if r in blob]  # no forgotten row, byte for byte
    from safetensors.numpy import load_file

    memory = load_file(str(folder / "memory.safetensors"))
    assert not np.isin(ids, memory["held_ids"]).any() and len(memory["held_ids"]) == digits.num_train - len(ids)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["forgotten"] == len(ids) and str(int(ids[0])) not in json.dumps(manifest["per_id_tables"])

    loaded = load_purged(folder, digits)
    np.testing.assert_allclose(loaded.split_proba(digits, "test"), forgotten.split_proba(digits, "test"), atol=1e-6)
    np.testing.assert_allclose(loaded.predict_proba(digits.x_train[ids]), forgotten.predict_proba(digits.x_train[ids]),
                               atol=1e-6)
    after = _rows(remaining(loaded, ids))
    assert after["memory entries"] == 0 and after["training vectors"] == 0
    assert loaded.memory_check(ids)["forgotten_in_memory"] == 0


def test_a_purged_copy_is_refused_before_the_deletion_and_when_damaged(spm_model, digits, tmp_path):
    ids = np.asarray(request_classes(digits, [1]).ids)
    with pytest.raises(ValueError, match="still holds forgotten ids"):
        write_purged(spm_model, ids, tmp_path / "early")
    folder = write_purged(spm_model.forget(ids), ids, tmp_path / "purged")
    data = bytearray((folder / "memory.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "memory.safetensors").write_bytes(bytes(data))
    with pytest.raises(StoreError, match="does not match the checksum") as err:
        load_purged(folder, digits)
    assert str(folder) in str(err.value)


def test_cli_audit_lists_what_remains_and_writes_the_purged_copy(tmp_path, spm_model):
    from tests.test_cli import cli

    code, out = cli("audit", "--dataset", "digits", "--model", "spm", "--random", "0.1", "--seed", "3",
                    "--method", "spm-delete", "--oracles", "2", "--purged-copy", "--out", str(tmp_path))
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "purged").iterdir()) == [
        "manifest.json", "memory.safetensors", "weights.safetensors"]
    report = json.loads((tmp_path / "audit.json").read_text())
    artifacts = {a["artifact"].split(" (")[0]: a["forgotten_rows"] for a in report["memory"]["artifacts"]}
    assert artifacts["memory entries"] == 0 and artifacts["training vectors"] > 0
    assert "| memory entries | 0 | held ids only |" in (tmp_path / "audit.md").read_text()
