"""One user's deletions: a history with undo, and the by-design models as that user has edited them.

The original models are shared read-only by every browser session; a session only holds requests and
the new (memory-edited) model objects derived from them, so nothing it does reaches another session. Sessions
that forget the same set share one edited model (``shared_deletion``): the same model, computed once.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field

from core.data.dataset import Dataset
from core.data.requests import ForgetRequest, ForgetRequestError, request_classes, request_ids
from core.models.base import Classifier


def merge_requests(dataset: Dataset, first: ForgetRequest, second: ForgetRequest) -> ForgetRequest:
    """The union of two requests; class requests stay class requests."""
    if first.classes and second.classes:
        return request_classes(dataset, sorted(set(first.classes) | set(second.classes)))
    if first.classes or second.classes:
        raise ForgetRequestError("a class request and a sample request cannot be added together: "
                                 "forget the classes, or the samples, as one new request")
    overlap = set(first.ids) & set(second.ids)
    if overlap == set(second.ids):
        raise ForgetRequestError("every sample of this request is forgotten already")
    merged = request_ids(dataset, sorted(set(first.ids) | set(second.ids)))
    return _described(merged, f"{first.description} + {second.description}")


def _described(request: ForgetRequest, description: str) -> ForgetRequest:
    from dataclasses import replace

    return replace(request, description=description)


@dataclass
class AppliedDeletion:
    """A by-design model after the session's current request, and how long the deletion took."""

    model: Classifier
    seconds: float


@dataclass
class ForgetSession:
    """The stack of requests a user has applied; the current request is the top of the stack."""

    dataset_fingerprint: str
    history: list[ForgetRequest] = field(default_factory=list)
    applied: dict[str, AppliedDeletion] = field(default_factory=dict)  # model key -> edited model

    @property
    def current(self) -> ForgetRequest | None:
        return self.history[-1] if self.history else None

    def push(self, dataset: Dataset, request: ForgetRequest, add_to_current: bool = False) -> ForgetRequest:
        """Make ``request`` (or its union with the current one) the current request."""
        if request.dataset_fingerprint != self.dataset_fingerprint:
            raise ForgetRequestError("this request was made for another dataset")
        if add_to_current and self.current is not None:
            request = merge_requests(dataset, self.current, request)
        self.history.append(request)
        self.applied.clear()
        return request

    def undo(self) -> ForgetRequest | None:
        """Drop the last request; returns the one now current (None: nothing is forgotten)."""
        if self.history:
            self.history.pop()
        self.applied.clear()
        return self.current

    def reset(self) -> None:
        self.history.clear()
        self.applied.clear()

    def apply_by_design(self, model_key: str, original: Classifier) -> AppliedDeletion | None:
        """The by-design model with the current request deleted from its memory (cached per session)."""
        request = self.current
        if request is None:
            return None
        if model_key not in self.applied:
            start = time.perf_counter()
            edited = original.forget(list(request.ids))  # type: ignore[attr-defined]
            seconds = time.perf_counter() - start
            self.applied[model_key] = AppliedDeletion(shared_deletion(original, request, edited), seconds)
        return self.applied[model_key]


_SHARED_LOCK = threading.Lock()


def shared_deletion(original: Classifier, request: ForgetRequest, edited: Classifier) -> Classifier:
    """The model edited from ``original`` for ``request`` that sessions share: the first one made while any session
    still holds it, else ``edited``. Sessions forgetting the same set (a class the teacher names) then share one
    edited model and every prediction, metric and comparison memoised on it, computed once rather than once per
    student. Each session still makes and times its own deletion; a memory edit is a function of the original and
    the ids alone, so the two are the same model. Held weakly, on the original object (a reloaded or retrained
    original starts afresh): a model no session holds any more is freed as before."""
    try:
        with _SHARED_LOCK:
            shared = original.__dict__.setdefault("_shared_deletions", weakref.WeakValueDictionary())
            return shared.setdefault(request.key(), edited)
    except (AttributeError, TypeError):  # a model without __dict__ or weak references: not shared
        return edited
