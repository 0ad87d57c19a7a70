"""What the pages share: cached data and the compute backend, the sidebar, session state, config forms, images.

Widget-drawing functions end in ``_ui``; everything that computes lives in core/.
"""

from __future__ import annotations

import dataclasses
import os
import typing
import uuid

import numpy as np
import streamlit as st
from PIL import Image

from core import bundle, store, workflow
from core.backend import Backend, Job, limit_threads
from core.configs import field_help
from core.data import DataError, Dataset, list_datasets, load_dataset
from core.models import get_model_kind, list_model_kinds
from core.session import ForgetSession

DEFAULT_DATASET = os.environ.get("UE_DATASET", "fashion-mnist")


@st.cache_resource
def backend() -> Backend:
    """One Ray backend per server process, started on the first long job (pages draw while it starts).
    This process keeps few BLAS/torch threads so interactive work does not fight the Ray workers."""
    limit_threads()
    return Backend()


def session_id() -> str:
    """This browser session's id: the sidebar lists only the jobs it asked for."""
    return st.session_state.setdefault("session_id", uuid.uuid4().hex)


@st.cache_resource(max_entries=4)
def cached_dataset(name: str) -> Dataset:
    return load_dataset(name)


def sidebar_ui() -> Dataset | None:
    """Dataset and device pickers; returns the dataset (None with a message when it cannot load)."""
    registered = list_datasets()
    uploads: dict[str, Dataset] = st.session_state.get("user_datasets", {})  # this session's own data only
    names = list(registered) + list(uploads)
    default = DEFAULT_DATASET if DEFAULT_DATASET in names else names[0]
    # The choice lives in a plain key and re-seeds the widget on every run: Streamlit may drop a widget's
    # state when the page changes (or when a link is clicked before the first run finished).
    if "pending_dataset" in st.session_state:
        st.session_state.dataset_choice = st.session_state.pop("pending_dataset")
    if st.session_state.get("dataset_choice") not in names:
        st.session_state.dataset_choice = default
    st.session_state.dataset_name = st.session_state.dataset_choice
    st.sidebar.selectbox("Dataset", names, key="dataset_name",
                         on_change=lambda: st.session_state.update(dataset_choice=st.session_state.dataset_name),
                         help="Fashion-MNIST is the default; digits and mnist-5k are small and train in seconds.")
    chosen = st.session_state.dataset_choice
    if chosen in uploads:
        st.sidebar.caption("your upload (this browser session only)")
        dataset = uploads[chosen]
    else:
        st.sidebar.caption(registered[chosen])
        try:
            dataset = cached_dataset(chosen)
        except DataError as err:
            st.sidebar.error(str(err))
            return None
    st.sidebar.caption(f"{dataset.num_train:,} training / {len(dataset.y_test):,} test images, "
                       f"{dataset.num_classes} classes, {dataset.image_shape[1]}x{dataset.image_shape[2]}")
    fs = forget_session(dataset)
    if fs.current is not None:
        st.sidebar.info(f"Forgetting: **{fs.current.description}** ({len(fs.current):,} samples)")
    jobs_sidebar_ui()
    return dataset


def forget_session(dataset: Dataset) -> ForgetSession:
    """This browser session's deletions for ``dataset`` (kept per dataset)."""
    sessions = st.session_state.setdefault("forget_sessions", {})
    if dataset.fingerprint() not in sessions:
        sessions[dataset.fingerprint()] = ForgetSession(dataset.fingerprint())
    return sessions[dataset.fingerprint()]


# ---- models and oracles as background jobs ------------------------------------------------------
def model_job(kind: str, dataset: Dataset, start: bool = True, asked: bool = False) -> Job | None:
    """The job that trains (on Ray) or loads (here) the original ``kind`` model (started when ``start``)."""
    return workflow.model_job(backend(), kind, dataset, owner=session_id(), start=start or asked)


def warm_job(kind: str, dataset: Dataset, trained: bundle.TrainedModel) -> Job:
    """Predictions of a loaded model on the whole test and training sets, computed once in this process's
    background lane (they fill the shared model's caches), so that the first Predictions page after a deletion
    does not wait for them (MUNKEY: about a minute of retrieval and K passes per image on Fashion-MNIST)."""
    def work(progress, cancel):
        for fraction, split in ((0.0, "test"), (0.3, "train")):
            cancel.check()
            progress(fraction, f"predictions on the {split} set")
            trained.classifier.split_proba(dataset, split)
        progress(1.0, "ready")

    return backend().run_local(f"warm:{trained.key}:{dataset.fingerprint()}",
                               f"{kind}: predictions on {dataset.name}", work, owner=session_id())


def oracle_job(kind: str, dataset: Dataset, request, seed_offset: int = 0, start: bool = True) -> Job | None:
    return workflow.model_job(backend(), kind, dataset, request, seed_offset, owner=session_id(), start=start)


def method_job(method: str, original: bundle.TrainedModel, dataset: Dataset, request, config) -> Job:
    """A post-hoc method run on Ray; its result is an unscored MethodRun (see :func:`scored_runs`)."""
    key = workflow.run_key(method, original.key, request, config)
    task = workflow.method_remote(method, original, dataset, request, config)
    job = backend().submit(key, f"{method} on {request.description}", task, owner=session_id())
    runs = st.session_state.setdefault("method_runs", {}).setdefault(request.key(), [])
    if key not in runs:
        runs.append(key)
    return job


def session_runs(request) -> list[Job]:
    """This session's method-run jobs for ``request``."""
    return [j for j in (backend().get(k) for k in st.session_state.get("method_runs", {}).get(request.key(), []))
            if j is not None]


def scored_runs(dataset: Dataset, request) -> list:
    """This session's finished method runs for ``request``, each scored against the oracle (and stored in the
    runs table) as soon as its oracle is ready; a run whose oracle still trains comes back unscored."""
    out = []
    for job in session_runs(request):
        if not job.finished_ok:
            continue
        run = job.result
        if run.comparison is None:
            oracle = oracle_job(run.kind, dataset, request)
            if oracle.finished_ok:
                second = oracle_job(run.kind, dataset, request, workflow.NOISE_FLOOR_SEED_OFFSET, start=False)
                workflow.score(run, oracle.result, dataset, second.result if second and second.finished_ok else None)
                workflow.record(run, dataset)
        out.append(run)
    return out


def ready_model(kind: str, dataset: Dataset):
    """The original model when its job has finished or it is stored (loaded here: seconds, no queue behind
    training jobs), else None. Any page can be the first one opened, so none depends on the Models page."""
    job = model_job(kind, dataset, start=False)
    if job is not None and job.finished_ok:
        return job.result
    if bundle.is_available(kind, dataset):
        try:
            with st.spinner(f"Loading the stored {kind} model"):
                return workflow.original(kind, dataset, allow_train=False)
        except store.StoreError as err:
            st.error(f"The stored {kind} model could not be loaded: {err}")
    return None


def untrained_model_ui(kind: str, dataset: Dataset, key: str) -> Job | None:
    """For a model that is neither finished nor stored: its training progress (returned, to poll) or, when
    none runs, a failure message if any and a button that trains it."""
    job = model_job(kind, dataset, start=False)
    job_status_ui(job, f"{kind} model")
    if job is not None and job.active:
        return job
    st.caption(f"{kind} is not trained for this dataset yet ({recipe_note(dataset, kind)}).")
    if st.button(f"Train {kind}", key=key):
        model_job(kind, dataset, asked=True)
        st.rerun()
    return None


def by_design_kinds() -> list[str]:
    return [k for k in list_model_kinds() if get_model_kind(k).by_design]


def job_status_ui(job: Job | None, label: str = "") -> bool:
    """Progress bar, error or cancel button for a job; True when it has finished successfully."""
    if job is None:
        return False
    if job.finished_ok:
        return True
    if job.active:
        cols = st.columns([5, 1])
        cols[0].progress(job.progress, text=f"{label or job.title}: {job.message}")
        if cols[1].button("Cancel", key=f"cancel-{job.key}"):
            job.cancel()
            st.rerun()
    elif job.state == "failed":
        st.error(f"{label or job.title} failed: {job.error}")
    elif job.state == "cancelled":
        st.warning(f"{label or job.title} was cancelled.")
    return False


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def jobs_sidebar_ui() -> None:
    """This session's own background work: progress, elapsed time and an estimate of what is left."""
    engine = backend()
    mine = engine.jobs(owner=session_id())
    active = [j for j in mine if j.active]
    if engine.status == "failed":
        st.sidebar.error(f"Compute backend: {engine.error}")
    if not active:
        return
    st.sidebar.markdown("**Background work**")
    if engine.status == "starting":
        st.sidebar.caption("Starting Ray (a few seconds, once per server)")
    for job in active:
        timing = f" · {_duration(job.elapsed)}" if job.started else " · waiting for a worker"
        if job.eta is not None:
            timing += f", ~{_duration(job.eta)} left"
        st.sidebar.progress(job.progress, text=f"{job.title}: {job.message}{timing}")


def poll_while_active(jobs: list[Job | None], seconds: float = 1.0) -> None:
    """Re-run the page every ``seconds`` while any of ``jobs`` is still going."""
    if any(j is not None and j.active for j in jobs):
        @st.fragment(run_every=seconds)
        def _poll():
            if not any(j is not None and j.active for j in jobs):
                st.rerun()
        _poll()


# ---- config forms ------------------------------------------------------------------------------
def config_form_ui(cls: type, key: str):
    """Widgets for each field of a config dataclass, with the field's reason as help; returns the config."""
    helps = field_help(cls)
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        hint, default = hints[f.name], getattr(cls(), f.name)
        wkey, helptext = f"{key}-{f.name}", helps.get(f.name)
        if dataclasses.is_dataclass(hint):
            continue  # nested configs (e.g. the encoder) keep their defaults in forms
        if hint is bool:
            values[f.name] = st.checkbox(f.name, value=default, key=wkey, help=helptext)
        elif hint is int:
            values[f.name] = int(st.number_input(f.name, value=int(default), step=1, key=wkey, help=helptext))
        elif hint is float:
            values[f.name] = float(st.number_input(f.name, value=float(default), format="%g", key=wkey,
                                                   help=helptext))
        elif hint is str:
            values[f.name] = st.text_input(f.name, value=default, key=wkey, help=helptext)
    return dataclasses.replace(cls(), **values)


# ---- images ------------------------------------------------------------------------------------
def to_image(x: np.ndarray, scale: int = 3) -> Image.Image:
    """A CHW float image in [0, 1] as a PIL image, enlarged for display."""
    arr = (np.clip(x, 0, 1) * 255).astype(np.uint8)
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def image_grid_ui(images: list[np.ndarray], captions: list[str], columns: int = 8) -> None:
    if not images:
        return
    scale = max(1, 84 // images[0].shape[-1])
    for start in range(0, len(images), columns):
        cols = st.columns(columns)
        for col, img, cap in zip(cols, images[start:start + columns], captions[start:start + columns]):
            col.image(to_image(img, scale), caption=cap, width="stretch")


def class_label(dataset: Dataset, c: int) -> str:
    return f"{c}: {dataset.class_names[c]}"


def recipe_note(dataset: Dataset, kind: str) -> str:
    tc = bundle.recipe(dataset.name, kind)
    return f"{tc.optimizer}, {tc.epochs} epochs, batch {tc.batch_size}, lr {tc.lr:g}, seed {tc.seed}"


def page_dataset(page_file: str, required: bool = True) -> Dataset | None:
    """The sidebar's dataset. A page opened by its own URL runs without app.py (Streamlit serves files in
    pages/ directly): send it through app.py, which builds the sidebar and comes back to this page.
    With ``required``, a page that has no dataset says so and stops."""
    if "dataset" not in st.session_state:
        st.session_state["goto_page"] = os.path.relpath(page_file, os.path.dirname(os.path.dirname(page_file)))
        st.switch_page("app.py")
    dataset = st.session_state["dataset"]
    if dataset is None and required:
        st.warning("No dataset is loaded: pick another one in the sidebar, or upload your own on the Models page.")
        st.stop()
    return dataset
