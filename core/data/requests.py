"""Forget requests: which training samples to unlearn, validated once against a dataset and hashed.

A request is built by one of ``request_classes``, ``request_random`` or ``request_ids``; each checks the
request against the dataset and raises :class:`ForgetRequestError` with a message a user can act on, so
nothing runs on a request that makes no sense.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .dataset import Dataset

KINDS = ("class", "random", "ids")
_SHOWN = 5  # how many offending ids or classes a message lists


class ForgetRequestError(ValueError):
    """A forget request does not fit its dataset; the message says why."""


@dataclass(frozen=True)
class ForgetRequest:
    """Training ids to forget (rows of ``x_train``), plus the class list for class-level requests."""

    ids: tuple[int, ...]  # sorted unique training ids
    classes: tuple[int, ...]  # non-empty only for class-level requests
    kind: str  # "class" | "random" | "ids"
    description: str  # human readable, e.g. "class 0 (T-shirt/top)", "random 10% (seed 0)", "42 ids"
    dataset_fingerprint: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ForgetRequestError(
                f"unknown request kind {self.kind!r}; expected one of {', '.join(KINDS)}"
            )

    def key(self) -> str:
        """Short content hash: the same samples of the same data give the same key."""
        payload = json.dumps([self.dataset_fingerprint, list(self.ids), list(self.classes), self.kind])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def mask(self, n: int) -> np.ndarray:
        """Boolean mask over a training set of ``n`` samples, True where a sample is forgotten."""
        if self.ids and self.ids[-1] >= n:
            raise ForgetRequestError(f"request names id {self.ids[-1]} but the training set has {n} samples")
        mask = np.zeros(n, dtype=bool)
        mask[list(self.ids)] = True
        return mask

    def __len__(self) -> int:
        return len(self.ids)

    def to_json(self) -> dict:
        """A JSON-ready dict; ``from_json`` reads it back."""
        return {
            "kind": self.kind,
            "ids": list(self.ids),
            "classes": list(self.classes),
            "description": self.description,
            "dataset_fingerprint": self.dataset_fingerprint,
            "key": self.key(),
        }

    @classmethod
    def from_json(cls, d: dict, dataset: Dataset) -> ForgetRequest:
        """Rebuild a stored request, validating it again against ``dataset``."""
        missing = [k for k in ("kind", "ids", "classes", "dataset_fingerprint") if k not in d]
        if missing:
            raise ForgetRequestError(f"stored request lacks {', '.join(missing)}")
        if d["dataset_fingerprint"] != dataset.fingerprint():
            raise ForgetRequestError(
                f"request was made for data {d['dataset_fingerprint']}, but {dataset.name!r} is "
                f"{dataset.fingerprint()}"
            )
        kind = d["kind"]
        if kind == "class":
            request = request_classes(dataset, d["classes"])
            if list(request.ids) != list(d["ids"]):
                raise ForgetRequestError("stored ids do not match the samples of the stored classes")
        elif kind in KINDS:
            if d["classes"]:
                raise ForgetRequestError(f"a {kind!r} request must not list classes")
            ids = _checked_ids(dataset, d["ids"])
            request = _build(dataset, ids, (), kind, d.get("description") or f"{len(ids)} ids")
        else:
            raise ForgetRequestError(f"unknown request kind {kind!r}; expected one of {', '.join(KINDS)}")
        if "key" in d and d["key"] != request.key():
            raise ForgetRequestError(f"stored key {d['key']} does not match the request's content")
        return request


def request_classes(ds: Dataset, classes: Iterable[int | str]) -> ForgetRequest:
    """Forget every training sample of the given classes (by index or by name)."""
    wanted = [_class_index(ds, c) for c in _as_list(classes, "classes")]
    if not wanted:
        raise ForgetRequestError("the request is empty: choose at least one class")
    duplicates = _duplicates(wanted)
    if duplicates:
        raise ForgetRequestError(f"class listed more than once: {_fmt(duplicates)}")
    counts = ds.class_counts()
    empty = [c for c in wanted if counts[c] == 0]
    if empty:
        raise ForgetRequestError(f"class {_fmt(empty)} has no training samples; nothing to forget")
    classes = tuple(sorted(wanted))
    if len(classes) == ds.num_classes:
        raise ForgetRequestError("the request forgets every class; keep at least one")
    ids = np.flatnonzero(np.isin(ds.y_train, classes))
    label = "class" if len(classes) == 1 else "classes"
    description = f"{label} " + ", ".join(f"{c} ({ds.class_names[c]})" for c in classes)
    return _build(ds, ids, classes, "class", description)


def request_random(ds: Dataset, fraction: float, seed: int) -> ForgetRequest:
    """Forget ``round(fraction * N)`` training samples drawn without replacement with ``seed``."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float | np.floating | np.integer):
        raise ForgetRequestError(f"fraction must be a number; got {fraction!r}")
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise ForgetRequestError(f"fraction must lie strictly between 0 and 1; got {fraction}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ForgetRequestError(f"seed must be a non-negative integer; got {seed!r}")
    count = round(fraction * ds.num_train)
    if count == 0:
        raise ForgetRequestError(
            f"the request is empty: {fraction:g} of {ds.num_train} training samples rounds to 0"
        )
    ids = np.random.default_rng(int(seed)).choice(ds.num_train, size=count, replace=False)
    return _build(ds, np.sort(ids), (), "random", f"random {fraction * 100:g}% (seed {seed})")


def request_ids(ds: Dataset, ids: Iterable[int]) -> ForgetRequest:
    """Forget the given training ids (rows of ``x_train``); duplicates are rejected, not merged."""
    checked = _checked_ids(ds, ids)
    return _build(ds, checked, (), "ids", f"{len(checked)} id" + ("" if len(checked) == 1 else "s"))


def parse_ids_text(text: str) -> list[int]:
    """Ids from pasted text or an uploaded file.

    Accepts integers separated by commas, semicolons, whitespace or newlines, or a CSV whose first line is
    a header: the ``id`` column is used if there is one, else the first column. Order and duplicates are
    kept (``request_ids`` reports duplicates). A non-integer raises with the token and its line.
    """
    lines = text.lstrip("\ufeff").splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return []
    header = [_unquote(f) for f in lines[first].split(",")]
    tokens = [_unquote(t) for t in _SEPARATORS.split(lines[first]) if _unquote(t)]
    is_header = bool(tokens) and not any(_INT.fullmatch(t) for t in tokens) and (
        len(header) > 1 or header[0].lower() in _ID_COLUMNS
    )
    ids: list[int] = []
    if is_header:
        lower = [h.lower() for h in header]
        column = next((lower.index(name) for name in _ID_COLUMNS if name in lower), 0)
        for number, line in enumerate(lines[first + 1:], start=first + 2):
            if not line.strip():
                continue
            fields = line.split(",")
            if column >= len(fields):
                raise ForgetRequestError(f"line {number}: no column {header[column]!r} in {line.strip()!r}")
            ids.append(_parse_int(_unquote(fields[column]), number))
        return ids
    for number, line in enumerate(lines, start=1):
        ids += [_parse_int(_unquote(tok), number) for tok in _SEPARATORS.split(line) if _unquote(tok)]
    return ids


# ----------------------------------------------------------------------------------------------------------
# helpers

_INT = re.compile(r"[+-]?\d+")
_SEPARATORS = re.compile(r"[,;\s]+")
_ID_COLUMNS = ("id", "ids", "sample_id", "index")


def _unquote(token: str) -> str:
    return token.strip().strip("\"'").strip()


def _parse_int(token: str, line: int) -> int:
    if not _INT.fullmatch(token):
        raise ForgetRequestError(f"line {line}: {token!r} is not an integer id")
    return int(token)


def _fmt(values: Iterable[int]) -> str:
    """A few values for a message: '3, 7, 9 and 12 more'."""
    values = list(values)
    shown = ", ".join(str(v) for v in values[:_SHOWN])
    return shown + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")


def _as_list(values: Iterable, what: str) -> list:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ForgetRequestError(f"{what} must be a list; got {values!r}")
    return list(values.tolist() if isinstance(values, np.ndarray) else values)


def _duplicates(values: list[int]) -> list[int]:
    unique, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    return unique[counts > 1].tolist()


def _class_index(ds: Dataset, value: int | str) -> int:
    if isinstance(value, str):
        if value in ds.class_names:
            return ds.class_names.index(value)
        if not _INT.fullmatch(value.strip()):
            raise ForgetRequestError(f"unknown class {value!r}; classes are {', '.join(ds.class_names)}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ForgetRequestError(f"class must be an index or a name; got {value!r}")
    if not 0 <= value < ds.num_classes:
        raise ForgetRequestError(f"unknown class {value}; classes are 0..{ds.num_classes - 1}")
    return int(value)


def _checked_ids(ds: Dataset, ids: Iterable[int]) -> np.ndarray:
    """Explicit ids as a sorted int64 array; rejects non-integers, negatives, unknown ids, duplicates."""
    values = _as_list(ids, "ids")
    if not values:
        raise ForgetRequestError("the request is empty: give at least one id")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | np.integer)]
    if bad:
        raise ForgetRequestError(f"ids must be integers; got {', '.join(repr(v) for v in bad[:_SHOWN])}")
    arr = np.asarray(values, dtype=np.int64)
    negative = arr[arr < 0]
    if len(negative):
        raise ForgetRequestError(f"ids must be non-negative; got {_fmt(np.unique(negative).tolist())}")
    unknown = arr[arr >= ds.num_train]
    if len(unknown):
        raise ForgetRequestError(
            f"{len(np.unique(unknown))} unknown id(s): {_fmt(np.unique(unknown).tolist())} "
            f"(training ids are 0..{ds.num_train - 1})"
        )
    duplicates = _duplicates(arr.tolist())
    if duplicates:
        raise ForgetRequestError(f"{len(duplicates)} id(s) listed more than once: {_fmt(duplicates)}")
    return np.sort(arr)


def _build(
    ds: Dataset, ids: np.ndarray, classes: tuple[int, ...], kind: str, description: str
) -> ForgetRequest:
    """Checks shared by all kinds, then the request."""
    if len(ids) == 0:
        raise ForgetRequestError("the request is empty")
    if len(ids) >= ds.num_train:
        raise ForgetRequestError(f"the request removes all {ds.num_train} training samples; keep some")
    if kind != "class":
        counts = ds.class_counts()
        remaining = counts - np.bincount(ds.y_train[ids], minlength=ds.num_classes)
        emptied = [int(c) for c in np.flatnonzero((remaining == 0) & (counts > 0))]
        if emptied:
            names = ", ".join(f"{c} ({ds.class_names[c]})" for c in emptied[:_SHOWN])
            raise ForgetRequestError(
                f"the request removes every training sample of class {names}; "
                "forget whole classes with a class request instead"
            )
    return ForgetRequest(
        ids=tuple(int(i) for i in ids),
        classes=tuple(int(c) for c in classes),
        kind=kind,
        description=description,
        dataset_fingerprint=ds.fingerprint(),
    )
