"""Forget requests: which training samples to unlearn, validated once against a dataset and hashed.

A request is built by one of ``request_classes``, ``request_random`` or ``request_ids``; each checks the
request against the dataset and raises :class:`ForgetRequestError` with a message a user can act on, so
nothing runs on a request that makes no sense.

Id lists are read by :mod:`core.data.id_lists`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from core.errors import InputError, shown

from .dataset import Dataset

KINDS = ("class", "random", "ids")
MAX_ID_DIGITS = 18  # fits int64 with room to spare; longer numbers are refused before int()
_INT = re.compile(r"[+-]?[0-9]+")
_SHOWN = 5  # how many offending ids or classes a message lists


class ForgetRequestError(InputError):
    """A forget request does not fit its dataset; the message says why."""


@dataclass(frozen=True)
class ForgetRequest:
    """Training ids to forget (rows of ``x_train``), plus the class list for class-level requests."""

    ids: tuple[int, ...]  # sorted unique training ids
    classes: tuple[int, ...]  # non-empty only for class-level requests
    kind: str  # "class" | "random" | "ids"
    description: str  # human readable, e.g. "class 0 (T-shirt/top)", "random 10% (seed 0)", "42 ids"
    dataset_fingerprint: str
    duplicates_dropped: int = field(default=0, compare=False)  # repeats removed from a listed-ids request

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ForgetRequestError(
                f"unknown request kind {self.kind!r}; expected one of {', '.join(KINDS)}"
            )

    def key(self) -> str:
        """Short content hash: the same samples of the same data give the same key (computed once: a page asks
        for it many times per redraw, and a class request hashes thousands of ids)."""
        if "_key" not in self.__dict__:
            payload = json.dumps([self.dataset_fingerprint, list(self.ids), list(self.classes), self.kind])
            object.__setattr__(self, "_key", hashlib.sha256(payload.encode()).hexdigest()[:16])
        return self.__dict__["_key"]

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
            ids, dropped = _checked_ids(dataset, d["ids"])
            if dropped:  # a stored request is written with unique ids: repeats mean it was edited
                raise ForgetRequestError(f"stored ids list {_fmt(_duplicates(d['ids']))} more than once")
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
    """Forget the given training ids (rows of ``x_train``). An id listed twice is harmless: it is kept once and
    the request's ``duplicates_dropped`` says how many repeats were dropped. Ids parsed by ``parse_ids_text``
    carry their file name and lines, and a message about them names both."""
    checked, dropped = _checked_ids(ds, ids)
    request = _build(ds, checked, (), "ids", f"{len(checked)} id" + ("" if len(checked) == 1 else "s"),
                     getattr(ids, "source", ""))
    return dataclasses.replace(request, duplicates_dropped=dropped) if dropped else request


# ----------------------------------------------------------------------------------------------------------
# helpers

def _fmt(values: Iterable[int], line_of=None) -> str:
    """A few values for a message: '3, 7, 9 and 12 more', each with its line when ``line_of`` knows it."""
    values = list(values)

    def one(v) -> str:
        line = line_of(v) if line_of is not None else None
        return _short(v) + (f" (line {line})" if line is not None else "")

    text = ", ".join(one(v) for v in values[:_SHOWN])
    return text + (f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else "")


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
        token = value.strip()
        if not _INT.fullmatch(token) or len(token.lstrip("+-")) > MAX_ID_DIGITS:
            raise ForgetRequestError(f"unknown class {shown(value)}; classes are {', '.join(ds.class_names)}")
        value = int(token)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ForgetRequestError(f"class must be an index or a name; got {shown(value)}")
    if not 0 <= value < ds.num_classes:
        raise ForgetRequestError(f"unknown class {_short(value)}; classes are 0..{ds.num_classes - 1}")
    return int(value)


def _checked_ids(ds: Dataset, ids: Iterable[int]) -> tuple[np.ndarray, int]:
    """Explicit ids as a sorted unique int64 array, and how many repeats were dropped; rejects non-integers,
    negatives and unknown ids, naming the file and line when ``ids`` is an :class:`IdList`."""
    source = getattr(ids, "source", "")
    line_of = getattr(ids, "line_of", lambda v: None)  # an IdList knows the line of each id
    values = _as_list(ids, "ids")
    if not values:
        raise ForgetRequestError(_at(source, "the request is empty: give at least one id"))
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | np.integer)]
    if bad:
        raise ForgetRequestError(_at(source, f"ids must be integers; got {', '.join(shown(v) for v in bad[:_SHOWN])}"))
    try:
        arr = np.asarray(values, dtype=np.int64)
        negative, unknown = np.unique(arr[arr < 0]).tolist(), np.unique(arr[arr >= ds.num_train]).tolist()
    except OverflowError:  # a number beyond int64: find the offenders with Python's integers
        arr = None
        negative = sorted({int(v) for v in values if v < 0})
        unknown = sorted({int(v) for v in values if v >= ds.num_train})
    if negative:
        raise ForgetRequestError(_at(source, f"ids must be non-negative; got {_fmt(negative, line_of)}"))
    if unknown:
        raise ForgetRequestError(_at(
            source, f"{len(unknown)} unknown id(s): {_fmt(unknown, line_of)} "
                    f"(training ids are 0..{ds.num_train - 1}); remove them or choose the dataset they belong to"))
    unique = np.unique(arr)
    return unique, len(arr) - len(unique)


def _at(source: str, message: str) -> str:
    return f"{source}: {message}" if source else message


def _short(value: int) -> str:
    """An id for a message: a number of more than 20 digits shows its first digits and its length."""
    text = str(value)
    return text if len(text) <= 20 else f"{text[:12]}… ({len(text.lstrip('-')):,} digits)"


def _build(
    ds: Dataset, ids: np.ndarray, classes: tuple[int, ...], kind: str, description: str, source: str = ""
) -> ForgetRequest:
    """Checks shared by all kinds, then the request."""
    if len(ids) == 0:
        raise ForgetRequestError(_at(source, "the request is empty"))
    if len(ids) >= ds.num_train:
        raise ForgetRequestError(_at(source, f"the request removes all {ds.num_train} training samples; keep some"))
    if kind != "class":
        counts = ds.class_counts()
        remaining = counts - np.bincount(ds.y_train[ids], minlength=ds.num_classes)
        emptied = [int(c) for c in np.flatnonzero((remaining == 0) & (counts > 0))]
        if emptied:
            names = ", ".join(f"{c} ({ds.class_names[c]})" for c in emptied[:_SHOWN])
            raise ForgetRequestError(_at(
                source, f"the request removes every training sample of class {names}; "
                        "forget whole classes with a class request instead"))
    return ForgetRequest(
        ids=tuple(int(i) for i in ids),
        classes=tuple(int(c) for c in classes),
        kind=kind,
        description=description,
        dataset_fingerprint=ds.fingerprint(),
    )
