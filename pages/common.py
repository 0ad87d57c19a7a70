"""What the pages share between sessions, and this session's background jobs.

Shared, read-only and cached once per server with ``st.cache_resource``: the compute backend, datasets,
original models and their neighbour indexes. A session's own state is ``pages.state``; drawing helpers are
``pages.widgets``; everything that computes lives in core/.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import streamlit as st

from core import bundle, store, workflow
from core.backend import DEFAULT_SESSION_TRAININGS, LAZY_ENV, Backend, Job, limit_threads, session_training_cap
from core.data import Dataset, load_dataset
from core.errors import InputError
from core.eval import neighbours as NB
from core.models import get_model_kind, list_model_kinds
from core.session import ForgetSession
from core.validate import uploaded_key
from pages.state import session_state

DEFAULT_DATASET = os.environ.get("UE_DATASET", "fashion-mnist")


@st.cache_resource(show_spinner="Starting the compute backend")
def backend() -> Backend:
    """One Ray backend per server process. Ray starts in the background at the first visitor (pages draw
    meanwhile), so that the first long job does not wait for it and a room's first clicks do not race its
    start; with ``UE_RAY_LAZY=1`` it starts on the first long job. This process keeps few BLAS/torch threads
    so interactive work does not fight the Ray workers."""
    limit_threads()
    engine = Backend()
    if os.environ.get(LAZY_ENV) != "1":
        engine.start()
    return engine


@st.cache_resource(max_entries=4, show_spinner="Loading the dataset (once per server)")
def cached_dataset(name: str) -> Dataset:
    return load_dataset(name)


@st.cache_resource(max_entries=16, show_spinner="Loading a stored model")
def stored_original(kind: str, key: str, _dataset: Dataset) -> bundle.TrainedModel:
    """The stored original ``kind`` model (``key``: its store key), loaded once per server."""
    return workflow.original(kind, _dataset, allow_train=False)


@st.cache_resource(max_entries=8, show_spinner="Indexing the training features for the neighbour search")
def original_index(model_key: str, _model, _dataset: Dataset) -> NB.NeighbourIndex:
    """FAISS index of an original model's training features (read-only, shared by sessions)."""
    return NB.NeighbourIndex(NB.training_features(_model, _dataset), NB.held_mask(_model, _dataset))


def by_design_kinds() -> list[str]:
    return [k for k in list_model_kinds() if get_model_kind(k).by_design and not get_model_kind(k).generative]


def forget_session(dataset: Dataset) -> ForgetSession:
    """This browser session's deletions for ``dataset``."""
    return session_state().deletions_for(dataset)


# ---- models and oracles as background jobs ------------------------------------------------------
def model_job(kind: str, dataset: Dataset, start: bool = True, asked: bool = False) -> Job | None:
    """The job that trains (on Ray) or loads (here) the original ``kind`` model (started when ``start``; when the
    user ``asked``, also started again after a failure)."""
    if asked:
        retry_jobs([workflow.model_job(backend(), kind, dataset, start=False)])
    return workflow.model_job(backend(), kind, dataset, owner=session_state().id, start=start or asked)


def ready_model(kind: str, dataset: Dataset) -> bundle.TrainedModel | None:
    """This session's uploaded checkpoint, else the original when its job has finished or it is stored (loaded
    here, no queue behind training), else None (a stored model that cannot be read: ``load_error`` says why)."""
    if (own := session_state().checkpoints.get(f"{dataset.fingerprint()}:{kind}")) is not None:
        return own
    job = model_job(kind, dataset, start=False)
    if job is not None and job.finished_ok:
        return job.result
    if bundle.is_available(kind, dataset):
        try:
            return stored_original(kind, bundle.resolve(kind, dataset)[2], dataset)
        except store.StoreError:
            return None
    return None


def load_error(kind: str, dataset: Dataset) -> str | None:
    """Why the stored ``kind`` model cannot be loaded; None when it loads or none is stored."""
    if not bundle.is_available(kind, dataset):
        return None
    try:
        stored_original(kind, bundle.resolve(kind, dataset)[2], dataset)
    except store.StoreError as err:
        return str(err)
    return None


def warm_job(kind: str, dataset: Dataset, trained: bundle.TrainedModel) -> Job:
    """Predictions of a loaded model on the whole test and training sets, computed once in this process's
    background lane (they fill the shared model's memo), so that the first Predictions page after a deletion
    does not wait for them (MUNKEY: about a minute of retrieval and K passes per image on Fashion-MNIST)."""
    def work(progress, cancel):
        for fraction, split in ((0.0, "test"), (0.3, "train")):
            cancel.check()
            progress(fraction, f"predictions on the {split} set")
            trained.classifier.split_proba(dataset, split)
        progress(1.0, "ready")

    return backend().run_local(f"warm:{trained.key}:{dataset.fingerprint()}",
                               f"{kind}: predictions on {dataset.name}", work, owner=session_state().id)


@st.cache_resource(max_entries=16, show_spinner="Reading the recorded oracles (once per server)")
def read_records(kind: str, fingerprint: str, _dataset: Dataset) -> int:
    """The recorded oracles of the dataset's one-class requests, read once per server when a page first needs
    them, so that a class's first Forget click (many at once in a classroom) does not read its files. Read here,
    not in the background lane: numpy parses each file's header with ``ast``, and CPython 3.11's AST builder is
    not safe to run in two threads at once (a page compiling its script meanwhile failed with a SystemError)."""
    return workflow.read_class_records(kind, _dataset)


def session_trainings() -> list[Job]:
    """This session's work still queued or running on Ray: oracles, method runs, layouts, models it asked for."""
    return backend().trainings(session_state().id)


def may_train() -> bool:
    """Whether this session may send more work to train: fewer than ``session_training_cap`` of its own going.
    Work it asks for beyond that starts at a later redraw, once some of its own has finished; an oracle or run
    another session started is shared whatever the count."""
    cap = training_cap()
    return not cap or len(session_trainings()) < cap


def training_cap() -> int:
    """``session_training_cap``; its default while ``$UE_SESSION_TRAININGS`` is not a number (the sidebar says so)."""
    try:
        return session_training_cap()
    except InputError:
        return DEFAULT_SESSION_TRAININGS


def oracle_job(kind: str, dataset: Dataset, request, seed_offset: int = 1, start: bool = True,
               asked: bool = False) -> Job | None:
    """One oracle of ``request`` (by default the first of the K, seed offset 1), e.g. a reference kind's; one this
    session cancelled, or one that failed, is started again only when the user ``asked``; none trains while
    this session has its share going (``may_train``)."""
    start = _may_start(lambda: [workflow.model_job(backend(), kind, dataset, request, seed_offset, start=False)],
                       start, asked)
    return workflow.model_job(backend(), kind, dataset, request, seed_offset, owner=session_state().id, start=start,
                              train=not start or may_train())


def oracle_jobs(kind: str, dataset: Dataset, request, start: bool = True, recorded: bool = True,
                asked: bool = False) -> list[Job | None]:
    """The K oracles of ``request`` on Ray (None: not started); a record stands in for an untrained one. Oracles
    this session cancelled, and any that failed, are shown as they are, not started again, until the user
    ``asked`` (or ``retry_jobs``); none trains while this session has its share going (``may_train``)."""
    start = _may_start(lambda: workflow.oracle_jobs(backend(), kind, dataset, request, start=False), start, asked)
    return workflow.oracle_jobs(backend(), kind, dataset, request, owner=session_state().id, start=start,
                                recorded=recorded, train=not start or may_train())


def _may_start(existing: Callable[[], list[Job | None]], start: bool, asked: bool) -> bool:
    """Whether to start the oracles ``existing()`` looks up: when the user ``asked``, yes (any that failed or that
    this session cancelled start again); else as ``start`` says, unless this session cancelled one of them. The
    lookup runs only when it can change the answer."""
    cancelled = session_state().cancelled
    if asked:
        retry_jobs(existing())
        return True
    if start and cancelled:
        return not any(j is not None and j.key in cancelled for j in existing())
    return start


def cancel_jobs(jobs: list[Job]) -> None:
    """This session cancels ``jobs``: each stops unless another session asked for it too (``Backend.release``), and
    an oracle among them is not started again for this session until it asks (``retry_jobs``)."""
    state = session_state()
    for job in jobs:
        state.cancelled.add(job.key)
        backend().release(job, state.id)


def cancelled_here(job: Job) -> str:
    """For a job this session cancelled that has not ended: "kept" when it goes on because another session asked
    for it too, "stopping" while its cancellation takes effect (a Ray task stops within seconds); else ""."""
    if not job.active or job.key not in session_state().cancelled:
        return ""
    return "kept" if job.owners else "stopping"


def retry_jobs(jobs: list[Job | None]) -> None:
    """Let ``jobs`` that this session cancelled or that failed start again when next asked for (the next redraw)."""
    state = session_state()
    for job in (j for j in jobs if j is not None):
        state.cancelled.discard(job.key)
        if job.state == "failed":
            backend().discard(job)


def release_request_jobs(dataset: Dataset, request) -> None:
    """This session no longer needs ``request``'s oracles and method runs (it undid or reset it): each one still
    going that no other session asked for is cancelled."""
    me, engine = session_state().id, backend()
    jobs = [j for kind in list_model_kinds() for j in oracle_jobs(kind, dataset, request, start=False, recorded=False)]
    for job in [*jobs, *session_runs(request)]:
        if job is not None:
            engine.release(job, me)


def method_job(method: str, original: bundle.TrainedModel, dataset: Dataset, request, config) -> Job:
    """A post-hoc method run on Ray; its result is an unscored MethodRun (see :func:`scored_runs`)."""
    key = workflow.run_key(method, original.key, request, config)
    task = workflow.method_remote(method, original, dataset, request, config)
    state = session_state()
    job = backend().submit(key, f"{method} on {request.description}", task, owner=state.id)
    runs = state.method_runs.setdefault(request.key(), [])
    if key not in runs:
        runs.append(key)
    return job


def add_run(run: workflow.MethodRun) -> Job:
    """A run made here at once (weights unlearned elsewhere) among this session's runs of its request, as a
    finished job, so that the pages list, score and audit it as they do a method run's."""
    state = session_state()
    job = backend().add_done(run.key, f"{run.label} on {run.request.description}", run, owner=state.id)
    runs = state.method_runs.setdefault(run.request.key(), [])
    if run.key not in runs:
        runs.append(run.key)
    return job


def session_runs(request) -> list[Job]:
    """This session's method-run jobs for ``request``."""
    keys = session_state().method_runs.get(request.key(), [])
    return [j for j in (backend().get(k) for k in keys) if j is not None]


def own_inputs(run: workflow.MethodRun, dataset: Dataset) -> bool:
    """Whether ``run`` rests on what this session uploaded (the data, or weights in place of the shared original):
    such a run stays in this session, out of the server's runs table that every session's Runs page lists. So do
    weights unlearned elsewhere that this session supplied."""
    return (dataset.name in session_state().uploads or uploaded_key(run.original_key)
            or run.method == workflow.SUPPLIED)


def scored_runs(dataset: Dataset, request, start: bool = True) -> list[workflow.MethodRun]:
    """This session's finished method runs for ``request`` on the original in use, each scored against every
    oracle that has finished (and stored in the runs table, unless it rests on this session's own data or weights:
    ``own_inputs``), and scored again as each further oracle finishes; a run none of whose oracles has finished
    comes back unscored. With ``start`` False, no oracle is started (those of an undone request stay stopped)."""
    out = []
    for job in session_runs(request):
        if not job.finished_ok:
            continue
        run = job.result
        original = ready_model(run.kind, dataset)
        if original is not None and original.key != run.original_key:
            continue  # made on other weights than those in use now (uploaded ones, since dropped): not comparable
        if original is not None and workflow.rescore(run, original, workflow.finished(
                oracle_jobs(run.kind, dataset, request, start=start)), dataset) and not own_inputs(run, dataset):
            workflow.record(run, dataset)
        out.append(run)
    return out
