"""Models and runs on disk: safetensors weights, JSON metadata, content hashes, atomic writes.

Layout under ``home()`` (``$UE_HOME`` or ``~/.cache/unlearning-explorer``)::

    models/<key>/weights.safetensors, meta.json, train_features-<weights sha256[:16]>.safetensors (cache)
    cache/<name>.safetensors (arrays that are a pure function of their name)
    runs/<key>/run.json, arrays.npz

``assets/models`` in the repository is a read-only second place to find models (the shipped bundle).
Loading reads weights only (safetensors; never pickle), and a corrupt or foreign file gives StoreError.
Cached arrays are safetensors too: numpy's .npy header is parsed with ``ast``, and CPython 3.11's AST builder
is not safe in two threads at once (a model loading in the background while a page compiled failed with a
SystemError); safetensors parses its JSON header in Rust.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file as save_array_file
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from core.configs import ConfigError, config_from_dict, config_to_dict
from core.errors import InputError

ASSETS_MODELS = Path(__file__).resolve().parent.parent / "assets" / "models"


class StoreError(InputError, RuntimeError):
    """A stored model or run, or a checkpoint, is missing, corrupt, or does not fit; the message says which."""


def home() -> Path:
    root = Path(os.environ.get("UE_HOME", Path.home() / ".cache" / "unlearning-explorer"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def versions() -> dict:
    """The software, and the processor and float kernels, that computed a result: the same recipe and seed train
    bit-identical weights only on the same processor and kernels, so an auditor retraining elsewhere may differ."""
    return dict(_versions())


@lru_cache(maxsize=1)
def _versions() -> dict:
    import numpy

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "cpu": _cpu_model(), "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
            **({"cuda_device": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {})}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    return model or platform.processor() or platform.machine()


def _atomic_dir(final: Path):
    """A temporary folder beside ``final`` that is renamed into place when the writer finishes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))


def _commit_dir(tmp: Path, final: Path) -> None:
    if final.exists():  # another writer finished first: same key means same content
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, final)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- models -------------------------------------------------------------------------------------
@dataclass
class StoredModel:
    key: str
    path: Path
    meta: dict


def model_dirs(key: str) -> list[Path]:
    """Where a model may be: the store, then the shipped bundle (skipped with UE_NO_ASSETS=1, so that a
    benchmark that times training really trains)."""
    if os.environ.get("UE_NO_ASSETS") == "1":
        return [home() / "models" / key]
    return [home() / "models" / key, ASSETS_MODELS / key]


def shown_location(path: Path) -> str:
    """Where a stored model is, as a page may show it to anyone: the project-relative path of a shipped model, the
    store's name and key for one trained here (never the server's absolute paths)."""
    if path.is_relative_to(ASSETS_MODELS):
        return str(path.relative_to(ASSETS_MODELS.parent.parent))
    return f"the model store ({path.name[:12]})"


def find_model(key: str) -> StoredModel | None:
    """The stored model ``key`` (None: not stored); a folder with only one of its two files is a StoreError."""
    for path in model_dirs(key):
        has_meta, has_weights = (path / "meta.json").is_file(), (path / "weights.safetensors").is_file()
        if has_meta and has_weights:
            return StoredModel(key, path, read_meta(path))
        if has_meta or has_weights:
            missing = "weights.safetensors" if has_meta else "meta.json"
            raise StoreError(f"model folder {path} lacks {missing}")
    return None


def _altered(file: Path, actual: str, recorded: str) -> StoreError:
    return StoreError(f"weights at {file} have SHA-256 {actual[:16]}…, not the {recorded[:16]}… recorded when they "
                      "were saved (truncated or altered)")


def verify_weights(stored: StoredModel) -> None:
    """Check the weights file against the SHA-256 its metadata recorded when it was saved (a truncated or
    altered file fails here even where it still parses)."""
    recorded = stored.meta.get("weights_sha256")
    if recorded is None:
        return
    file = stored.path / "weights.safetensors"
    try:
        actual = file_sha256(file)
    except OSError as err:
        raise StoreError(f"weights at {file} cannot be read ({err.strerror or err})") from err
    if actual != recorded:
        raise _altered(file, actual, recorded)


def verified_weights(stored: StoredModel) -> bytes:
    """The stored weights file's bytes, checked against the SHA-256 its metadata recorded when it was saved: what
    a user downloads is exactly what was judged."""
    file = stored.path / "weights.safetensors"
    try:
        data = file.read_bytes()
    except OSError as err:
        raise StoreError(f"weights at {file} cannot be read ({err.strerror or err})") from err
    recorded = stored.meta.get("weights_sha256")
    if recorded is not None and (actual := hashlib.sha256(data).hexdigest()) != recorded:
        raise _altered(file, actual, recorded)
    return data


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StoreError(f"model metadata at {path} is unreadable: {err}") from err
    if not isinstance(meta, dict) or "kind" not in meta or "config" not in meta:
        raise StoreError(f"model metadata at {path} lacks 'kind' or 'config'")
    return meta


def save_model(key: str, net: nn.Module, meta: dict) -> StoredModel:
    """Write a network's weights and metadata under ``models/<key>`` atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return save_model_bytes(key, save_bytes(state), meta)


def save_model_bytes(key: str, weights: bytes, meta: dict, arrays: dict[str, np.ndarray] | None = None) -> StoredModel:
    """Write safetensors bytes, metadata and cached arrays under ``models/<key>`` atomically: a killed job
    leaves nothing half-written, and weights that do not parse are refused before anything lands."""
    try:
        load_bytes(weights)
    except Exception as err:
        raise StoreError(f"refusing to store model {key}: its weights are not valid safetensors ({err})") from err
    final = home() / "models" / key
    tmp = _atomic_dir(final)
    (tmp / "weights.safetensors").write_bytes(weights)
    digest = hashlib.sha256(weights).hexdigest()
    for name, array in (arrays or {}).items():
        write_arrays(tmp / f"{name}-{digest[:16]}.safetensors", {"array": array})
    meta = {**meta, "key": key, "versions": versions(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "weights_sha256": digest}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    _commit_dir(tmp, final)
    return StoredModel(key, final, read_meta(final))


def load_weights(net: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``net``; any missing, extra or misshapen tensor is a StoreError."""
    file = path / "weights.safetensors" if path.is_dir() else path
    try:
        state = load_file(str(file))
    except Exception as err:  # safetensors raises several types for corrupt headers
        raise StoreError(f"weights at {file} are not a readable safetensors file: {err}") from err
    load_state(net, state, f"weights at {file}")


def load_state(net: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a state dict strictly: any missing, extra, misshapen or non-finite tensor is a StoreError naming
    ``where`` the weights came from."""
    check_state(net.state_dict(), state, where)
    net.load_state_dict(state, strict=True)


def check_state(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse a state dict that does not fit ``expected`` exactly: names, shapes, float vs integer tensors, and
    finite values. ``where`` names the weights in the message."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise StoreError(f"{where} do not fit this model: missing {missing[:4]}"
                         f"{f' and {len(missing) - 4} more' if len(missing) > 4 else ''}, unexpected {extra[:4]}"
                         f"{f' and {len(extra) - 4} more' if len(extra) > 4 else ''}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise StoreError(f"{where}: {name} has shape {tuple(tensor.shape)}, "
                             f"the model expects {tuple(expected[name].shape)}")
        if tensor.is_floating_point() != expected[name].is_floating_point():
            raise StoreError(f"{where}: {name} is {tensor.dtype}, the model expects {expected[name].dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise StoreError(f"{where}: {name} contains NaN or infinite values")

def config_of(meta: dict, cls: type):
    try:
        return config_from_dict(cls, meta["config"])
    except ConfigError as err:
        raise StoreError(f"stored config does not fit {cls.__name__}: {err}") from err


def _array_path(stored: StoredModel, name: str) -> Path:
    """Where ``name`` is cached for ``stored``: beside its weights, named by their SHA-256, so an array computed
    from other weights (a file replaced by hand, a damaged copy restored) is never read for these."""
    digest = (stored.meta or {}).get("weights_sha256", "")[:16] or "unhashed"
    return home() / "models" / stored.key / f"{name}-{digest}.safetensors"


def write_arrays(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """``arrays`` (and string ``metadata``) as one safetensors file at ``path``, atomically (a temporary file
    renamed into place): the store's caches of computed arrays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".safetensors")
    os.close(fd)
    try:
        save_array_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]] | None:
    """The arrays and metadata of a file ``write_arrays`` wrote; None when absent or unreadable (a damaged file is
    dropped: it is a cache, recomputed by the caller)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception:  # the safetensors parser raises its own error types for a damaged file
        path.unlink(missing_ok=True)
        return None


def cached_array(stored: StoredModel, name: str) -> np.ndarray | None:
    read = read_arrays(_array_path(stored, name))
    return None if read is None else read[0].get("array")


def cache_array(stored: StoredModel, name: str, array: np.ndarray) -> None:
    write_arrays(_array_path(stored, name), {"array": array})


def load_computed(name: str) -> dict[str, np.ndarray] | None:
    """Arrays saved by ``save_computed`` under ``cache/<name>.safetensors``; None when absent or unreadable (then
    the file is dropped and the caller recomputes). Never unpickles."""
    read = read_arrays(home() / "cache" / f"{name}.safetensors")
    return None if read is None else read[0]


def save_computed(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Keep arrays that are a pure function of their name (a content hash) for the next process; atomic."""
    write_arrays(home() / "cache" / f"{name}.safetensors", arrays)


# ---- runs ---------------------------------------------------------------------------------------
def save_run(key: str, record: dict, arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Store an unlearning run: its record (config, request, metrics, timings, versions) and arrays."""
    final = home() / "runs" / key
    if final.exists():
        shutil.rmtree(final)
    tmp = _atomic_dir(final)
    record = {**record, "key": key, "versions": versions(), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (tmp / "run.json").write_text(json.dumps(record, indent=1, default=json_default))
    if arrays:
        np.savez_compressed(tmp / "arrays.npz", **arrays)
    _commit_dir(tmp, final)
    return final
def json_default(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "__dataclass_fields__"):
        return config_to_dict(value)
    raise TypeError(f"cannot store {type(value).__name__} in a run record")
