"""This browser session's state: one typed object, kept in ``st.session_state`` under one key.

Every page reads and writes its application state here (widgets keep their own ``key=`` values). The object
lives in this session only, so nothing one browser does changes what another sees; what sessions share
(the backend, datasets, original models) is cached read-only in ``pages.common``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import streamlit as st

from core.data import Dataset
from core.session import ForgetSession

KEY = "unlearning_explorer"


@dataclass
class EmbeddingsState:
    selection: list[str] = field(default_factory=list)  # sample keys picked on the map
    figure_signature: str = ""  # the map drawn last: a redrawn chart reports an empty selection
    event_keys: list[str] = field(default_factory=list)  # the chart's selection as last reported
    notice: str | None = None  # said once, after the next rerun (e.g. what "Forget the selection" did)


@dataclass
class RetrievalState:
    touched: dict | None = None  # how many test images the current deletion touched (retrieval.touched_summary)


@dataclass
class SessionState:
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # owner of this session's background jobs
    dataset_name: str | None = None  # the sidebar's choice; it re-seeds the picker on every run
    dataset: Dataset | None = None  # the dataset the pages use this run (None: it could not load)
    sidebar_drawn: bool = False  # app.py has run in this session, so ``dataset`` is the sidebar's
    return_to: str | None = None  # a page opened by its URL before app.py ran, opened again after it
    link_read: bool = False  # the URL's query parameters (?dataset=&classes=) were applied once
    link_classes: tuple[str, ...] = ()  # ?classes= entries, resolved once the dataset is loaded
    link_warnings: list[str] = field(default_factory=list)  # what the link got wrong: shown until dismissed
    uploads: dict[str, Dataset] = field(default_factory=dict)  # datasets uploaded in this session, by name
    checkpoints: dict[str, object] = field(default_factory=dict)  # "fingerprint:kind" -> this session's own model
    deletions: dict[str, ForgetSession] = field(default_factory=dict)  # dataset fingerprint -> request history
    method_runs: dict[str, list[str]] = field(default_factory=dict)  # request key -> this session's run job keys
    cancelled: set[str] = field(default_factory=set)  # oracle job keys cancelled here: not started again unasked
    purged_copies: dict[str, bytes] = field(default_factory=dict)  # "request key:model" -> purged copy (zip)
    embeddings: EmbeddingsState = field(default_factory=EmbeddingsState)
    retrieval: RetrievalState = field(default_factory=RetrievalState)

    def deletions_for(self, dataset: Dataset) -> ForgetSession:
        """This session's requests for ``dataset`` (each dataset keeps its own history)."""
        fingerprint = dataset.fingerprint()
        if fingerprint not in self.deletions:
            self.deletions[fingerprint] = ForgetSession(fingerprint)
        return self.deletions[fingerprint]


def session_state() -> SessionState:
    """This browser session's state, made on its first run."""
    return st.session_state.setdefault(KEY, SessionState())
