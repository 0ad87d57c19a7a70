"""The sidebar every page shares (dataset picker, what is forgotten, background work) and the way a page
gets the sidebar's dataset."""

from __future__ import annotations

import os

import streamlit as st

from core.backend import session_training_cap
from core.data import DataError, Dataset, list_datasets
from core.errors import InputError
from core.validate import parse_query
from core.views import duration
from pages import common
from pages.state import session_state
from pages.widgets import refresh_seconds

PICKER = "sidebar-dataset"
FORGET_KIND, FORGET_CLASSES = "forget-kind", "forget-classes"  # the Forget page's widgets a link pre-fills


def link_ui() -> None:
    """Apply a shared link once per session: ``?dataset=`` picks the dataset and ``?classes=`` pre-fills the
    Forget page's class picker (indices or names). A bad parameter is named and ignored."""
    state = session_state()
    if state.link_read:
        return
    state.link_read = True
    try:
        query = parse_query(st.query_params.to_dict(), datasets=list(state.uploads))
    except InputError as err:
        state.link_warnings.append(f"The link's parameters were ignored: {err}")
        return
    if query.dataset:
        state.dataset_name = query.dataset
    state.link_classes = query.class_tokens


def link_classes_ui(dataset: Dataset) -> None:
    """Resolve the link's ``?classes=`` against the loaded dataset and hand them to the Forget page's picker."""
    state = session_state()
    if not state.link_classes:
        return
    tokens, state.link_classes = state.link_classes, ()
    try:
        classes = parse_query({"classes": ",".join(tokens)}, class_names=dataset.class_names).classes or ()
    except InputError as err:
        state.link_warnings.append(f"The link's classes were ignored: {err}")
        return
    st.session_state[FORGET_KIND], st.session_state[FORGET_CLASSES] = "classes", list(classes)


def link_warnings_ui() -> None:
    """What was wrong with the link this session was opened by, drawn on every full run until dismissed or another
    dataset is picked: the page's first runs (a model loading, a redirect) would otherwise wipe it unread."""
    state = session_state()
    for text in state.link_warnings:
        st.sidebar.warning(text)
    if state.link_warnings:
        st.sidebar.button("Dismiss", key="link-warnings-dismiss", on_click=state.link_warnings.clear)


def dataset_picker_ui() -> str:
    """The dataset picker; returns the chosen name. The choice lives in the session state and re-seeds the
    widget on every run: Streamlit may drop a widget's state when the page changes (or when a link is
    clicked before the first run finished)."""
    state = session_state()
    names = list(list_datasets()) + list(state.uploads)
    if state.dataset_name not in names:
        state.dataset_name = common.DEFAULT_DATASET if common.DEFAULT_DATASET in names else names[0]
    st.session_state[PICKER] = state.dataset_name

    def chosen():
        state.dataset_name = st.session_state[PICKER]
        state.link_warnings.clear()  # the user has chosen for the link
        st.query_params["dataset"] = state.dataset_name  # the address bar is a link to this choice

    st.sidebar.selectbox("Dataset", names, key=PICKER, on_change=chosen,
                         help="Fashion-MNIST is the default; digits and mnist-5k are small and train in seconds.")
    return state.dataset_name


def sidebar_ui() -> Dataset | None:
    """Dataset picker; returns the dataset (None, with a message, when it cannot load). What this session
    forgets (``forgetting_sidebar_ui``) and its background work (``jobs_sidebar_ui``) are drawn after the page,
    which may change them."""
    state = session_state()
    link_ui()
    name = dataset_picker_ui()
    if name in state.uploads:
        st.sidebar.caption("your upload (this browser session only)")
        dataset = state.uploads[name]
    else:
        st.sidebar.caption(list_datasets()[name])
        try:
            dataset = common.cached_dataset(name)
        except DataError as err:
            st.sidebar.error(str(err))
            link_warnings_ui()
            return None
    st.sidebar.caption(f"{dataset.num_train:,} training / {len(dataset.y_test):,} test images, "
                       f"{dataset.num_classes} classes, {dataset.image_shape[1]}x{dataset.image_shape[2]}")
    link_classes_ui(dataset)
    link_warnings_ui()
    return dataset


def forgetting_sidebar_ui() -> None:
    """What this session forgets now; drawn after the page, which may just have changed it (app.py leaves it off the
    Forget page, whose own heading names the request)."""
    state = session_state()
    if state.dataset is not None and (current := state.deletions_for(state.dataset).current) is not None:
        st.sidebar.info(f"Forgetting: **{current.description}** ({len(current):,} samples)")


def jobs_sidebar_ui(list_loads: bool = True) -> None:
    """This session's own background work: progress, elapsed time and an estimate of what is left. Loads and
    warm-ups in this process alone are listed as they are now, not redrawn (``list_loads`` False: not listed)."""
    engine, owner = common.backend(), session_state().id
    if engine.status == "failed":
        st.sidebar.error(f"Compute backend: {engine.error}")
    try:
        session_training_cap()
    except InputError as err:
        st.sidebar.error(f"{err} Each session may now have {common.training_cap()} trainings going.")
    active = [j for j in engine.jobs(owner=owner) if j.active]
    if not active or (not list_loads and all(j.local for j in active)):
        return
    with st.sidebar:
        if all(j.local for j in active):
            # loads and warm-ups in this process end within seconds, while the user is still picking: listed once,
            # since a redraw timer then raced the user's first clicks (a class picked then was sometimes lost)
            st.markdown("**Background work**")
            st.caption(" · ".join(j.title for j in active))
        else:
            background_work_ui(engine, owner)


def background_work_ui(engine, owner: str) -> None:
    """The running jobs of ``owner`` with progress, elapsed time and what is left, redrawn on their own every
    ``refresh_seconds`` (the page reruns to redraw more often once one may end sooner; empty once none runs)."""
    seconds = refresh_seconds([j for j in engine.jobs(owner=owner) if j.active])

    @st.fragment(run_every=seconds)
    def redrawn() -> None:
        active = [j for j in engine.jobs(owner=owner) if j.active]
        if not active:
            return
        if refresh_seconds(active) <= seconds / 2:
            st.rerun()
        st.markdown("**Background work**")
        if engine.status == "starting":
            st.caption("Starting Ray (a few seconds, once per server)")
        for job in active:
            timing = f" · {duration(job.elapsed)}" if job.started else \
                " · waiting for this server's previous load" if job.local else " · waiting for a worker"
            if job.eta is not None:
                timing += f", ~{duration(job.eta)} left"
            st.progress(job.progress, text=f"{job.title}: {job.message}{timing}")

    redrawn()


def page_dataset(page_file: str, required: bool = True) -> Dataset | None:
    """The sidebar's dataset. A page opened by its own URL runs without app.py (Streamlit serves files in
    pages/ directly): send it through app.py, which builds the sidebar and comes back to this page.
    With ``required``, a page that has no dataset says so and stops."""
    state = session_state()
    if not state.sidebar_drawn:
        state.return_to = os.path.relpath(page_file, os.path.dirname(os.path.dirname(page_file)))
        st.switch_page("app.py", query_params=st.query_params.to_dict())  # a shared link's ?dataset=&classes=
    if state.dataset is None and required:
        st.warning("No dataset is loaded: pick another one in the sidebar, or upload your own on the Models page.")
        st.stop()
    return state.dataset
