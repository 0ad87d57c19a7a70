"""The validation layer's entry points that need the registries: uploaded checkpoints and URL query parameters.

Files are validated where they are read (``core.data.user_files``, ``core.data.cifar``, ``core.data.requests``);
everything raises :class:`core.errors.InputError` or a subclass, with a message for the user.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.data.dataset import Dataset
from core.errors import InputError, shown
from core.store import StoreError

MAX_CHECKPOINT_BYTES = 1 * 2**30  # one uploaded safetensors checkpoint (a CIFAR ResNet-18 is about 45 MB)
MAX_SAFETENSORS_HEADER = 16 * 2**20  # the JSON header of a safetensors file (its tensor index)
MAX_QUERY_VALUE_CHARS = 200  # one URL query value
MAX_QUERY_CLASSES = 1000  # class entries in ?classes=
QUERY_KEYS = ("dataset", "model", "method", "classes")
_QUERY_SOURCE = "the page address"


# ----------------------------------------------------------------------------------------------------------
# checkpoints


def _sniff_checkpoint(data: bytes) -> str | None:
    """What a file that is not safetensors looks like, or None when its header reads as safetensors."""
    if data.startswith(b"PK\x03\x04"):
        return "a PyTorch checkpoint (torch.save: a zip of pickles)"
    if data[:1] == b"\x80":
        return "a Python pickle (.pt/.pth/.pkl)"
    if data.startswith(b"\x89HDF"):
        return "an HDF5 (Keras) file"
    if len(data) < 8:
        return f"{len(data)} bytes, too short for a safetensors header"
    (length,) = struct.unpack("<Q", data[:8])
    if length > MAX_SAFETENSORS_HEADER or data[8:9] != b"{":
        return "not a safetensors file (its first 8 bytes are not the length of a JSON header)"
    if length > len(data) - 8:
        return f"a truncated safetensors file ({len(data):,} bytes, shorter than its {length:,}-byte header)"
    try:
        header = json.loads(data[8:8 + length])
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "not a safetensors file (its header is not JSON)"
    return None if isinstance(header, dict) else "not a safetensors file (its header is not a JSON object)"


def read_checkpoint(source: bytes | str | Path, where: str, expected: str = "a safetensors checkpoint") -> bytes:
    """A checkpoint's bytes (a file's, read only once its size is within ``MAX_CHECKPOINT_BYTES``), or a
    :class:`StoreError` naming ``where``: a file that cannot be read, or one too large."""
    if isinstance(source, str | Path):
        try:
            size = Path(source).stat().st_size
            if size > MAX_CHECKPOINT_BYTES:
                raise StoreError(source=where, found=f"{size:,} bytes", expected=f"at most {MAX_CHECKPOINT_BYTES:,}")
            data = Path(source).read_bytes()
        except OSError as err:
            raise StoreError(source=where, found=f"cannot be read ({err.strerror or err})", expected=expected) from err
    else:
        data = bytes(source)
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise StoreError(source=where, found=f"{len(data):,} bytes", expected=f"at most {MAX_CHECKPOINT_BYTES:,}",
                         fix="upload the weights of a smaller model")
    return data


def load_checkpoint(source: bytes | str | Path, kind: str, dataset: Dataset, source_name: str | None = None,
                    config=None) -> dict:
    """The tensors of an uploaded safetensors checkpoint for a registered model ``kind`` on ``dataset``, checked
    strictly against the network that kind builds (names, shapes, float vs integer, finite values); otherwise a
    :class:`StoreError` naming ``source_name``. Nothing is unpickled: a PyTorch ``.pt`` file is refused.

    ``bundle.from_weights(kind, dataset, tensors, config)`` then makes a classifier of the checked tensors."""
    from safetensors.torch import load as load_bytes

    from core import bundle
    from core.models import get_model_kind, list_model_kinds

    where = source_name or (Path(source).name if isinstance(source, str | Path) else "the uploaded checkpoint")
    expected = f"a safetensors checkpoint of a {kind} model for {dataset.name}"
    if kind not in list_model_kinds():
        raise StoreError(source=where, found=f"model kind {shown(kind)}",
                         expected=f"one of the registered kinds: {', '.join(list_model_kinds())}")
    data = read_checkpoint(source, where, expected)
    problem = _sniff_checkpoint(data)
    fix = ("save the weights with safetensors.torch.save_file(model.state_dict(), 'model.safetensors'); "
           "pickled checkpoints are never loaded here")
    if problem is not None:
        raise StoreError(source=where, found=problem, expected=expected, fix=fix)
    try:
        state = load_bytes(data)
    except Exception as err:  # the safetensors parser raises its own error types for a damaged file
        raise StoreError(source=where, found=f"a damaged safetensors file ({str(err)[:200]})", expected=expected,
                         fix=fix) from err
    spec = get_model_kind(kind)
    config = config or bundle.default_config(kind, dataset.name)
    net = bundle._build(spec, dataset, config, 0)  # under a forked RNG: the caller's random state is untouched
    from core.store import check_state

    check_state(net.state_dict(), state, f"{where} (weights for the {kind} model on {dataset.name})")
    return state


UPLOAD_KEY_MARK = "-upload-"  # in the key of every user's checkpoint: "<kind>-upload-<sha256 prefix>"


def uploaded_key(key: str) -> bool:
    """Whether a model key is that of a user's checkpoint (``checkpoint_model``), not a model this server trained."""
    return UPLOAD_KEY_MARK in key


def checkpoint_model(data: bytes, kind: str, dataset: Dataset, source_name: str):
    """A user's checked checkpoint as a ready model (``bundle.TrainedModel``) keyed by the file's SHA-256, with the
    metadata the pages show (test accuracy, the file's name and hash). It is never written to the store: it
    lives in the uploading browser session only."""
    import hashlib

    from core import bundle
    from core.configs import config_to_dict

    state = load_checkpoint(data, kind, dataset, source_name)
    sha = hashlib.sha256(data).hexdigest()
    classifier = bundle.from_weights(kind, dataset, state, where=source_name)
    test_acc = float((classifier.split_proba(dataset, "test").argmax(1) == dataset.y_test).mean() * 100)
    meta = {"kind": kind, "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(), "excluded": None,
            "config": config_to_dict(bundle.default_config(kind, dataset.name)), "weights_sha256": sha,
            "test_acc": test_acc, "num_train_ids": dataset.num_train, "uploaded_as": source_name}
    return bundle.TrainedModel(f"{kind}{UPLOAD_KEY_MARK}{sha[:16]}", classifier, meta)


# ----------------------------------------------------------------------------------------------------------
# URL query parameters


@dataclass(frozen=True)
class Query:
    """Checked query parameters (None: not given). ``classes`` holds class indices when the dataset's class names
    were given to ``parse_query``; else ``class_tokens`` holds the checked entries (indices or names)."""

    dataset: str | None = None
    model: str | None = None
    method: str | None = None
    classes: tuple[int, ...] | None = None
    class_tokens: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()  # keys this layer does not know (left to whoever set them)


def _value(params: Mapping, key: str) -> str | None:
    raw = params.get(key)
    if isinstance(raw, list | tuple):  # a repeated key: the last one wins, as in st.query_params
        raw = raw[-1] if raw else None
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InputError(source=_QUERY_SOURCE, where=f"?{key}=", found=f"a {type(raw).__name__}", expected="text")
    if len(raw) > MAX_QUERY_VALUE_CHARS:
        raise InputError(source=_QUERY_SOURCE, where=f"?{key}=", found=f"{len(raw):,} characters",
                         expected=f"at most {MAX_QUERY_VALUE_CHARS}", fix="shorten the link")
    return raw.strip() or None


def _one_of(key: str, value: str | None, known: Sequence[str], what: str) -> str | None:
    if value is None or value in known:
        return value
    raise InputError(source=_QUERY_SOURCE, where=f"?{key}=", found=f"unknown {what} {shown(value)}",
                     expected=f"one of {', '.join(known)}", fix=f"pick the {what} from the list, or drop ?{key}=")


def parse_query(params: Mapping[str, str | Sequence[str]], class_names: Sequence[str] | None = None,
                datasets: Sequence[str] = ()) -> Query:
    """Check URL query parameters (``st.query_params.to_dict()``) against the registries.

    ``dataset`` must be a registered dataset (or one of ``datasets``, e.g. this session's uploads), ``model`` a
    registered model kind, ``method`` a registered unlearning method (one that applies to ``model`` when both are
    given), ``classes`` comma-separated class indices or names (resolved when ``class_names`` is given; duplicates
    dropped). Unknown keys are ignored and listed in ``Query.ignored``. Anything else raises :class:`InputError`.
    """
    from core.data.dataset import list_datasets
    from core.models import list_model_kinds
    from core.unlearn import list_methods

    if not isinstance(params, Mapping):
        raise InputError(source=_QUERY_SOURCE, found=f"a {type(params).__name__}", expected="key=value parameters")
    dataset = _one_of("dataset", _value(params, "dataset"), [*list_datasets(), *datasets], "dataset")
    model = _one_of("model", _value(params, "model"), list_model_kinds(), "model kind")
    method = _one_of("method", _value(params, "method"), list_methods(), "method")
    if model is not None and method is not None and method not in list_methods(model):
        raise InputError(source=_QUERY_SOURCE, where="?method=", found=f"{method} does not apply to {model} models",
                         expected=f"one of {', '.join(list_methods(model))}", fix="pick a method for this model")
    tokens, classes = _query_classes(_value(params, "classes"), class_names)
    ignored = tuple(sorted(str(k)[:40] for k in params if k not in QUERY_KEYS))
    return Query(dataset, model, method, classes, tokens, ignored)


def _query_classes(text: str | None,
                   class_names: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    if text is None:
        return (), None
    tokens = tuple(t.strip() for t in text.split(",") if t.strip())
    if len(tokens) > MAX_QUERY_CLASSES:
        raise InputError(source=_QUERY_SOURCE, where="?classes=", found=f"{len(tokens):,} entries",
                         expected=f"at most {MAX_QUERY_CLASSES}")
    if class_names is None:
        return tokens, None
    lower = {n.lower(): i for i, n in reversed(list(enumerate(class_names)))}
    indices = set()
    for token in tokens:
        if token in class_names:
            indices.add(list(class_names).index(token))
        elif token.lower() in lower:
            indices.add(lower[token.lower()])
        elif token.isdigit() and token.isascii() and len(token) <= 6 and int(token) < len(class_names):
            indices.add(int(token))
        else:
            raise InputError(source=_QUERY_SOURCE, where="?classes=", found=f"unknown class {shown(token)}",
                             expected=f"class indices 0..{len(class_names) - 1} or names "
                                      f"({', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''})",
                             fix="separate classes with commas, e.g. ?classes=0,3")
    return tokens, tuple(sorted(indices))
