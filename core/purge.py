"""What a forgotten by-design model still carries, and a purged copy that carries none of it (issue 14 §9).

``forget`` on SPM or MUNKEY returns a model whose *memory* holds no entry of D_f, but the object shares state
with the original: the training vectors of every id (SPM's encoder features, MUNKEY's keys), SPM's training
images for re-encoding, MUNKEY's trained tokens inside the network (``net.memory``) and its cache of ensemble
passes, and the prediction caches. ``remaining`` lists each of them with how many rows of D_f it holds.

``write_purged`` writes a copy that holds none: the network's weights with every per-training-id table (a
tensor whose first dimension is the training-set size) cut to the held rows, the held ids with their labels and
vectors, and a manifest that names the forgotten ids only by their SHA-256. ``load_purged`` rebuilds a model
from it and a dataset; vectors of absent ids stay zero, so the loaded model holds nothing of D_f either, and
its test predictions equal the forgotten model's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from core.configs import config_from_dict, config_to_dict
from core.data.dataset import Dataset
from core.eval.audit import ids_sha256
from core.models import get_model_kind
from core.models.base import MemoryClassifier, pick_device
from core.store import StoreError

FORMAT = "unlearning-explorer purged memory model, version 1"


def _train_rows_cached(cache: dict, n: int) -> bool:
    return any(isinstance(v, np.ndarray) and len(v) == n for v in cache.values())


def per_id_tables(state: dict, num_train: int) -> list[str]:
    """Names of the network tensors with one row per training id (their first dimension is the set's size)."""
    return sorted(k for k, t in state.items() if t.dim() and t.shape[0] == num_train)


def remaining(model: MemoryClassifier, ids) -> list[dict]:
    """Every artifact ``model`` carries, with ``forgotten_rows``: how many rows of the forgotten ``ids`` it holds
    (0: none), and whether ``write_purged`` leaves it out of the copy."""
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    shared, n = model._shared, len(model.active)
    held = np.isin(ids, model._held_ids()).sum()
    rows = [{"artifact": "memory entries", "forgotten_rows": int(held), "in_purged_copy": "held ids only"},
            {"artifact": "training vectors (one per training id, shared with the original)",
             "forgotten_rows": int((np.abs(shared.train_features[ids]).max(1) > 0).sum()),
             "in_purged_copy": "held ids only"}]
    if getattr(shared, "train_images", None) is not None:
        rows.append({"artifact": "training images kept for re-encoding", "forgotten_rows": int(len(ids)),
                     "in_purged_copy": "left out"})
    state = shared.net.state_dict()
    for name in per_id_tables(state, n):  # e.g. MUNKEY's trained exemplar tokens, inside the network
        table = state[name]
        live = int((table[torch.as_tensor(ids)].abs().amax(dim=tuple(range(1, table.dim()))) > 0).sum())
        rows.append({"artifact": f"network table {name} (one row per training id)", "forgotten_rows": live,
                     "in_purged_copy": "held rows only"})
    tokens = getattr(model, "tokens", None)
    if isinstance(tokens, torch.Tensor):
        live = int((tokens[torch.as_tensor(ids)].abs().amax(dim=1) > 0).sum())
        rows.append({"artifact": "this model's exemplar tokens", "forgotten_rows": live,
                     "in_purged_copy": "held rows only"})
    passes = getattr(shared, "passes", {})
    if passes:
        touched = sum(int(np.isin(entry[0], ids).sum()) for entry in passes.values())
        rows.append({"artifact": "cached ensemble passes (outputs computed with retrieved tokens)",
                     "forgotten_rows": touched, "in_purged_copy": "left out"})
    caches = [model.__dict__.get("_split_proba", {}), model.__dict__.get("_split_embed", {}),
              getattr(shared, "features", {}), getattr(shared, "image_only", {})]
    if any(_train_rows_cached(c, n) for c in caches):
        rows.append({"artifact": "prediction and feature caches of the training split", "forgotten_rows": len(ids),
                     "in_purged_copy": "left out"})
    return rows


def write_purged(model: MemoryClassifier, forgotten_ids, folder: str | Path, original_key: str = "") -> Path:
    """Write the copy of ``model`` that holds no row or id of ``forgotten_ids`` into ``folder``: ``weights``,
    ``memory`` (safetensors) and ``manifest.json``. Refused when the memory still holds a forgotten id."""
    forgotten = np.unique(np.asarray(forgotten_ids, dtype=np.int64))
    held = model.memory_ids()
    if np.isin(forgotten, held).any():
        raise ValueError("the memory still holds forgotten ids: forget them before writing a purged copy")
    shared, n = model._shared, len(model.active)
    state = {k: v.detach().cpu().contiguous() for k, v in shared.net.state_dict().items()}
    per_id = per_id_tables(state, n)
    tokens = getattr(model, "tokens", None)
    weights = {k: v.numpy() for k, v in state.items() if k not in per_id}
    memory = {"held_ids": held, "held_labels": np.asarray(shared.train_labels)[held],
              "held_vectors": np.ascontiguousarray(shared.train_features[held], dtype=np.float32)}
    for name in per_id:  # the model's own (edited) table where it has one, else the network's
        table = tokens.detach().cpu() if isinstance(tokens, torch.Tensor) and tokens.shape == state[name].shape \
            else state[name]
        memory[f"rows.{name}"] = np.ascontiguousarray(table[torch.as_tensor(held)].numpy())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "weights.safetensors"))
    save_file(memory, str(folder / "memory.safetensors"))
    manifest = {"format": FORMAT, "kind": model.kind, "config": config_to_dict(model.config),
                "num_train": n, "num_classes": model.num_classes, "original_key": original_key,
                "held": int(len(held)), "forgotten": int(len(forgotten)), "forgotten_ids_sha256": ids_sha256(forgotten),
                "per_id_tables": per_id, "left_out": [r["artifact"] for r in remaining(model, forgotten)
                                                      if r["in_purged_copy"] == "left out"],
                "sha256": {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                           for name in ("weights.safetensors", "memory.safetensors")}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return folder


def load_purged(folder: str | Path, dataset: Dataset, device: str = "cpu") -> MemoryClassifier:
    """A model from ``write_purged``'s folder, for ``dataset`` (the one it was trained on). Vectors of absent ids
    are zero and the memory holds only the held ids; checksums and shapes are checked first."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        for name, digest in manifest["sha256"].items():
            if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
                raise ValueError(f"{name} does not match the checksum in manifest.json")
        weights, memory = load_file(str(folder / "weights.safetensors")), load_file(str(folder / "memory.safetensors"))
    except (OSError, KeyError, ValueError) as err:
        raise StoreError(source=f"the purged copy in {folder}", found=str(err),
                         expected="manifest.json, weights.safetensors and memory.safetensors as write_purged wrote "
                                  "them", fix="write the purged copy again from the forgotten model") from err
    n = manifest["num_train"]
    if n != dataset.num_train:
        raise StoreError(source=f"the purged copy in {folder}", found=f"a model of {n} training ids",
                         expected=f"{dataset.name}'s {dataset.num_train}",
                         fix="load it with the dataset it was made on")
    spec = get_model_kind(manifest["kind"])
    config = config_from_dict(spec.config_cls, manifest["config"])
    net = spec.build(dataset, config)
    held = memory["held_ids"]
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    for name in manifest["per_id_tables"]:
        rows = torch.from_numpy(memory[f"rows.{name}"])
        table = torch.zeros((n, *rows.shape[1:]), dtype=rows.dtype)
        table[torch.as_tensor(held)] = rows
        state[name] = table
    net.load_state_dict(state, strict=True)
    net.eval()
    vectors = np.zeros((n, memory["held_vectors"].shape[1]), np.float32)
    vectors[held] = memory["held_vectors"]
    model = spec.wrap(net, dataset, held, config, pick_device(device), train_features=vectors)
    shared = model._shared
    shared.complete = False  # training-split features and keys are computed from the images again
    if hasattr(shared, "train_images"):
        shared.train_images = None
    if hasattr(shared, "memo"):  # its own name for the process-wide key caches, never the original's
        shared.memo = (f"purged-{manifest['sha256']['memory.safetensors'][:16]}", shared.memo[1])
    return model


def purged_zip(model: MemoryClassifier, forgotten_ids, original_key: str = "") -> bytes:
    """``write_purged``'s folder as the bytes of one zip file (for a download)."""
    import io
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory(prefix="ue-purged-") as tmp:
        folder = write_purged(model, forgotten_ids, Path(tmp) / "purged", original_key)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.iterdir()):
                zf.write(path, f"purged/{path.name}")
        return buffer.getvalue()
