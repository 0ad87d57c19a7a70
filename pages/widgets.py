"""Drawing helpers the pages share: job progress, train buttons, config forms, image grids."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core import bundle, recorded
from core.backend import SESSION_TRAININGS_ENV, Job
from core.configs import field_help
from core.data import Dataset
from core.views import duration, recipe_note
from pages import common

# ---- background jobs -----------------------------------------------------------------------------------
PROGRESS_REFRESH_S = 2.0  # how often the sidebar's running jobs and a page's job poll redraw (each a small rerun)
SLOWEST_REFRESH_S = 15.0  # ...at most this far apart while every job going has minutes left


def refresh_seconds(jobs: list[Job]) -> float:
    """How often to look at ``jobs`` going: a quarter of the time left to the soonest expected end, from
    PROGRESS_REFRESH_S to SLOWEST_REFRESH_S; the shortest while one's end is unknown, it runs in this process or it is
    being cancelled. A room of pages looking every 2 s at oracles due in 15 min costs the server and each browser a
    rerun each time."""
    ends = [0.0 if j.local or j.cancelling or j.eta is None else j.eta for j in jobs if j.active]
    return min(SLOWEST_REFRESH_S, max(PROGRESS_REFRESH_S, min(ends, default=0.0) / 4))


DRAWN_GOING = "jobs-drawn-going"  # session state: key -> state ("queued", "running") of each job drawn still going


def drawn_going(jobs: list[Job]) -> None:
    """Note ``jobs`` as drawn still going, in the state they are drawn in: should one end before the page's
    ``poll_while_active`` (a model that loads in a tenth of a second), or one drawn queued start on a worker, that
    redraws the page rather than leave it as it was drawn (and the sidebar, which lists jobs only once redrawn)."""
    st.session_state.setdefault(DRAWN_GOING, {}).update({j.key: j.state for j in jobs})


def drawn_stale(jobs: list[Job | None]) -> set[str]:
    """Keys of ``jobs`` drawn still going that have ended since, or that were drawn queued for a worker and have
    started since: a page drawn as a Forget click left it would otherwise say "queued" until a job ends."""
    drawn = st.session_state.get(DRAWN_GOING, {})
    return {j.key for j in jobs if j is not None and j.key in drawn
            and (not j.active or (drawn[j.key] == "queued" and j.state == "running" and not j.local))}


def job_status_ui(job: Job | None, label: str = "", retry: bool = False) -> bool:
    """Progress bar, error or cancel button for a job; True when it has finished successfully. The bar shows the
    job as the page was drawn; the sidebar's copy moves by itself, and the page reruns when the job ends
    (``poll_while_active``). With ``retry``, a job that failed or that this session cancelled gets a button that
    starts it again (for a job the page asks for at each redraw: neither is started again unasked)."""
    if job is None:
        return False
    if job.finished_ok:
        return True
    if job.note:
        st.caption(job.note)
    if here := common.cancelled_here(job):
        st.caption(f"{label or job.title}: " + ("cancelled here; it goes on for another session that asked for it "
                                                 "too." if here == "kept" else "stopping."))
    elif job.active:
        drawn_going([job])
        cols = st.columns([5, 1])
        cols[0].progress(job.progress, text=f"{label or job.title}: {job_state_text(job)}")
        if cols[1].button("Cancel", key=f"cancel-{job.key}",
                          help="Stop it (if another session asked for it too, it goes on for that one)."):
            common.cancel_jobs([job])
            st.rerun()
    elif job.state == "failed":
        st.error(f"{label or job.title} failed: {job.error}")
    elif job.state == "cancelled":
        st.warning(f"{label or job.title} was cancelled.")
    if retry and (job.state in ("failed", "cancelled") or common.cancelled_here(job) == "kept") and \
            st.button("Try again", key=f"retry-{job.key}"):
        common.retry_jobs([job])
        st.rerun()
    return False


def job_state_text(job: Job) -> str:
    """What a job is doing and how long it should take: its message, then the estimate once it starts (and what
    that was judged from) while queued, else the time left when known."""
    if job.state == "queued" and job.expected_s:
        return (f"{job.message} (about {duration(job.expected_s)} once started, judging by "
                f"{job.expected_from or 'an estimate'})")
    return f"{job.message} (about {duration(job.eta)} left)" if job.eta is not None else job.message


def oracle_jobs_ui(kind: str, jobs: list[Job | None], key: str) -> None:
    """The K oracles of one model in a line or two: those ready (seed, recorded or trained), one bar and one Cancel
    for those still going (each one's state and estimate in its text), and any that failed or were cancelled. One bar
    and one button for all K, not a row each: with a classroom on one machine, every element drawn is browser work
    per click."""
    jobs = [j for j in jobs if j is not None]
    ready = [(i, j) for i, j in enumerate(jobs, 1) if j.finished_ok]
    if ready:
        st.caption(f"{kind} oracles ready, {len(ready)} of {len(jobs)}: " + "; ".join(
            f"#{i} seed {bundle.train_seed(j.result)}, "
            + ("its predictions recorded for the shipped model" if recorded.is_recorded(j.result) else "trained")
            + f" ({bundle.train_seconds(j.result) or 0:.0f} s of training)" for i, j in ready) + ".")
    here = {j.key: common.cancelled_here(j) for j in jobs}  # "kept" / "stopping" for those cancelled here
    going = [(i, j) for i, j in enumerate(jobs, 1) if j.active and not here[j.key]]
    if kept := [f"#{i}" for i, j in enumerate(jobs, 1) if here[j.key] == "kept"]:
        st.caption(f"{kind} oracle{'s' if len(kept) > 1 else ''} {', '.join(kept)}: cancelled here; "
                   f"{'they go' if len(kept) > 1 else 'it goes'} on for another session that asked for "
                   f"{'them' if len(kept) > 1 else 'it'} too.")
    if stopping := [f"#{i}" for i, j in enumerate(jobs, 1) if here[j.key] == "stopping"]:
        st.caption(f"{kind} oracle{'s' if len(stopping) > 1 else ''} {', '.join(stopping)}: stopping.")
    if going:
        drawn_going([job for _, job in going])
        states: dict[str, list[str]] = {}  # oracles in the same state (queued, same estimate) named once
        for i, job in going:
            states.setdefault(job_state_text(job), []).append(f"#{i}")
        cols = st.columns([5, 1])
        cols[0].progress(sum(j.progress for _, j in going) / len(going),
                         text=f"{kind} oracles still going, {len(going)} of {len(jobs)}: "
                              + "; ".join(f"{', '.join(ids)} {text}" for text, ids in states.items()))
        if cols[1].button("Cancel", key=f"cancel-oracles-{key}",
                          help="Stop the oracles still going (one that another session asked for too goes on for it)."):
            common.cancel_jobs([job for _, job in going])
            st.rerun()
    stopped = [(i, j) for i, j in enumerate(jobs, 1) if j.state == "cancelled"]
    for i, job in enumerate(jobs, 1):
        if job.state == "failed":  # with its cause; not started again until the button below
            job_status_ui(job, f"{kind} oracle {i} of {len(jobs)}")
        elif job.note:
            st.caption(f"{kind} oracle {i}: {job.note}")
    if stopped:
        st.warning(f"{kind} oracle{'s' if len(stopped) > 1 else ''} {', '.join(f'#{i}' for i, _ in stopped)} "
                   f"{'were' if len(stopped) > 1 else 'was'} cancelled.")
    if (again := [j for j in jobs if j.state in ("failed", "cancelled") or here[j.key] == "kept"]) and \
            st.button(f"Train the {kind} oracles again", key=f"restart-oracles-{key}"):
        common.retry_jobs(again)
        st.rerun()


def waiting_to_train_text(what: str, then: str = "They start as yours finish") -> str:
    """Why ``what`` has not started: this session has its share of the server's training going."""
    return (f"{what}: this browser session has {len(common.session_trainings())} trainings going, and its share of "
            f"this server is {common.training_cap()} at once (${SESSION_TRAININGS_ENV}). {then}; Undo or Reset on "
            "the Forget page stops the work of requests you have left.")


def trainings_waiting_ui(jobs: list[Job | None], what: str = "oracle") -> list[Job]:
    """When some of ``jobs`` (asked for; None: not started) wait for this session's share (``common.may_train``),
    say so; returns this session's trainings, to poll, so that the page reruns and starts them as one ends."""
    waiting = sum(j is None for j in jobs)
    if not waiting or common.may_train():
        return []
    st.caption(waiting_to_train_text(f"{waiting} {what}{'s' if waiting > 1 else ''} waiting"))
    return common.session_trainings()


def training_refused_ui() -> bool:
    """For a button that asks for a training: True, with the reason, while this session has its share going."""
    if common.may_train():
        return False
    st.warning(waiting_to_train_text("Not started", "Ask again once some of yours finish"))
    return True


def poll_while_active(jobs: list[Job | None]) -> None:
    """Re-run the page as soon as any of ``jobs`` that is going now ends, so that what depends on it (e.g. the
    comparison with each finished oracle) is redrawn; checked every ``refresh_seconds``, and the page reruns to
    check more often once one may end sooner. One drawn as going that has ended since, or drawn queued that has
    started on a worker since (``drawn_stale``): at once."""
    if stale := drawn_stale(jobs):
        for key in stale:
            st.session_state[DRAWN_GOING].pop(key, None)
        st.rerun()
    active = [j for j in jobs if j is not None and j.active]
    if active:
        seconds = refresh_seconds(active)

        @st.fragment(run_every=seconds)
        def _poll():
            if any(not j.active for j in active) or drawn_stale(active) or refresh_seconds(active) <= seconds / 2:
                st.rerun()
        _poll()


def keep_value(key: str, default, options=None) -> None:
    """Call before drawing the widget ``key`` (with no value of its own): it gets the value it had when last drawn
    in this session, else ``default``. Streamlit drops a widget's state on a run that does not draw it (another
    page, another tab of a page). With ``options`` (a multiselect's), picks no longer among them are dropped.
    The widget's state is written only when it changes: a write re-sends the value to the browser."""
    kept = f"{key}-kept"
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(kept, default)
    if options is not None and any(v not in options for v in st.session_state[key]):
        st.session_state[key] = [v for v in st.session_state[key] if v in options]
    st.session_state[kept] = st.session_state[key]


def keep_choice(key: str, options: list) -> None:
    """``keep_value`` for a radio or selectbox whose options change with the session (its runs, its request): a
    kept choice no longer offered gives way to the first option."""
    for name in (key, f"{key}-kept"):
        if name in st.session_state and st.session_state[name] not in options:
            del st.session_state[name]
    keep_value(key, options[0])


def chosen_tab_ui(labels: list[str], key: str) -> tuple[str, typing.Any]:
    """Tabs of which only the chosen one is drawn (Streamlit's lazy tabs: choosing another reruns the page);
    returns its label and its container. A page's costly panels are then computed, sent and rendered only when
    asked for. The choice is kept for this session, so that coming back to the page shows the same tab."""
    keep_value(key, labels[0])
    tabs = st.tabs(labels, key=key, on_change="rerun")
    return next(((label, tab) for label, tab in zip(labels, tabs) if tab.open), (labels[0], tabs[0]))


def untrained_model_ui(kind: str, dataset: Dataset, key: str) -> Job | None:
    """For a model that is neither finished nor stored: its training progress (returned, to poll) or, when
    none runs, a failure message if any and a button that trains it."""
    job = common.model_job(kind, dataset, start=False)
    job_status_ui(job, f"{kind} model")
    if job is not None and job.active:
        return job
    error = common.load_error(kind, dataset)
    if error:
        st.error(f"The stored {kind} model could not be loaded: {error}")
    st.caption(f"{kind} is not trained for this dataset yet ({recipe_note(dataset, kind)}).")
    if st.button(f"Train {kind}", key=key):
        common.model_job(kind, dataset, asked=True)
        st.rerun()
    return None


# ---- config forms ------------------------------------------------------------------------------
def config_form_ui(cls: type, key: str):
    """Widgets for each field of a config dataclass, with the field's reason as help; returns the config. A value
    the user set stays set when the form is drawn again (after another page, or its method chosen again)."""
    helps = field_help(cls)
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        hint, default = hints[f.name], getattr(cls(), f.name)
        wkey, helptext = f"{key}-{f.name}", helps.get(f.name)
        if dataclasses.is_dataclass(hint) or hint not in (bool, int, float, str):
            continue  # nested configs (e.g. the encoder) and other types keep their defaults in forms
        keep_value(wkey, hint(default))  # the widgets below take their value from here, not from an argument
        if hint is bool:
            values[f.name] = st.checkbox(f.name, key=wkey, help=helptext)
        elif hint is int:
            values[f.name] = int(st.number_input(f.name, step=1, key=wkey, help=helptext))
        elif hint is float:
            values[f.name] = float(st.number_input(f.name, format="%g", key=wkey, help=helptext))
        else:
            values[f.name] = st.text_input(f.name, key=wkey, help=helptext)
    return dataclasses.replace(cls(), **values)


# ---- images ------------------------------------------------------------------------------------
def number_table_ui(rows: list[dict], key: str) -> None:
    """``rows`` as a table with floats shown to 3 significant digits (a column that mixes numbers and text, such as
    a "mean ± sd" last row, is shown as text: Arrow cannot hold both)."""
    frame = pd.DataFrame(rows)
    for c in frame.columns:
        if frame[c].dtype == object and frame[c].map(lambda v: isinstance(v, str)).any():
            frame[c] = frame[c].map(lambda v: f"{v:.3g}" if isinstance(v, float) else v)
    st.dataframe(frame, hide_index=True, width="stretch", key=key,
                 column_config={c: st.column_config.NumberColumn(format="%.3g") for c in frame.columns
                                if pd.api.types.is_float_dtype(frame[c])})


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
