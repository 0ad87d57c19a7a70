"""Embeddings: aligned before / after / oracle maps, lasso to images, neighbours, and why a prediction changed."""

import hashlib
from dataclasses import dataclass, field

import streamlit as st

from core import bundle, charts
from core import recorded as R
from core.backend import Job
from core.data import Dataset
from core.eval import embeddings as E
from core.models.base import Classifier
from core.selection import selected_keys
from core.session import ForgetSession
from core.views import duration
from core.views.maps import COLOURINGS, map_facts, map_view
from pages.common import (
    by_design_kinds,
    forget_session,
    model_job,
    oracle_job,
    oracle_jobs,
    ready_model,
    session_runs,
)
from pages.embeddings_panels import layout_ui, sample_ui, selection_ui
from pages.sidebar import page_dataset
from pages.state import session_state
from pages.widgets import job_status_ui, keep_choice, poll_while_active, training_refused_ui, untrained_model_ui

SHOW = {"both": "test + training sample", "test": "test set", "train": "training sample"}


@dataclass
class MapModels:
    """The models on the map and the keys that name them in the layout cache."""
    kind: str
    trained: bundle.TrainedModel  # the original
    unlearned: Classifier | None = None
    oracle: Classifier | None = None
    keys: dict[str, str] = field(default_factory=dict)  # "original" / "unlearned" / "oracle" -> model key
    jobs: list = field(default_factory=list)  # to poll

    @property
    def models(self) -> dict[str, Classifier | None]:
        return {"original": self.trained.classifier, "unlearned": self.unlearned, "oracle": self.oracle}


def models_ui(column, dataset: Dataset, session: ForgetSession) -> MapModels | None:
    """The model picker (a by-design model or a finished method run) and its oracle; None while the chosen
    model is not trained (its progress or a train button is shown)."""
    request = session.current
    kinds = sorted(by_design_kinds(), key=lambda k: (k != "spm", k))  # SPM first: the paper's model
    done_runs = [j.result for j in session_runs(request) if j.finished_ok] if request is not None else []
    choices = kinds + [r.label for r in done_runs]
    keep_choice("emb-model", choices)  # each picker shows what it showed before a visit to another page
    shown = column.selectbox("Model", choices, key="emb-model",
                             help="By-design models forget by deletion; the others are post-hoc runs (Forget page).")
    run = next((r for r in done_runs if r.label == shown), None)
    kind = run.kind if run is not None else shown
    trained = ready_model(kind, dataset)
    if trained is None:
        if model_job(kind, dataset, start=False) is None and dataset.num_train <= 5000:
            model_job(kind, dataset)  # tiny sets train in seconds: start it here
        poll_while_active([untrained_model_ui(kind, dataset, f"emb-train-{kind}")])
        return None
    maps = MapModels(kind, trained, keys={"original": trained.key})
    if run is not None:
        maps.unlearned, maps.keys["unlearned"] = run.model, run.key
    elif request is not None:
        maps.unlearned = session.apply_by_design(trained.key, trained.classifier).model
        maps.keys["unlearned"] = f"{trained.key}-forget-{request.key()}"
    if request is not None and (job := oracle_map_job(kind, dataset, request)) is not None:
        maps.jobs.append(job)
        if job.finished_ok:
            maps.oracle, maps.keys["oracle"] = job.result.classifier, job.result.key
        else:
            job_status_ui(job, "oracle (the third panel appears when it is trained)", retry=True)
    return maps


def oracle_map_job(kind: str, dataset: Dataset, request) -> Job | None:
    """The job of the oracle whose map is the third panel (the first of the K: its weights embed the samples).
    Where the comparison rests on recorded predictions (the shipped model's class requests), nothing trains it
    unasked (minutes of a worker, per visitor of a shared server): a button does; None until then."""
    job = oracle_job(kind, dataset, request, start=False)
    first = oracle_jobs(kind, dataset, request, start=False)[0]
    if job is not None or first is None or not first.finished_ok or not R.is_recorded(first.result):
        return oracle_job(kind, dataset, request)
    expected = bundle.expected_train_seconds(kind, dataset, excluded=request)
    st.caption("The oracle's map needs its weights; the comparison on the Predictions page reads recorded "
               "predictions, which have none.")
    if st.button(f"Train the oracle for the third map{f' (about {duration(expected)})' if expected else ''}",
                 key="emb-train-oracle", help="The original's recipe retrained without the forgotten samples "
                                              "(seed + 1), in the background; the other two maps need nothing.") \
            and not training_refused_ui():
        oracle_job(kind, dataset, request, asked=True)
        st.rerun()
    return None


@dataclass
class MapChoices:
    layout: str  # "UMAP" or "PCA"
    colouring: str  # one of COLOURINGS
    show: str  # a key of SHOW
    follow: bool  # ring the selection in every panel
    train_sample: int  # training samples on the map besides the forget set
    max_test: int
    prototypes: bool


def controls_ui(columns, dataset: Dataset, kind: str) -> MapChoices:
    """How the map is drawn."""
    for key, options in (("emb-layout", ["UMAP", "PCA"]), ("emb-colour", COLOURINGS), ("emb-show", list(SHOW))):
        keep_choice(key, options)
    layout = columns[0].radio("Layout", ["UMAP", "PCA"], horizontal=True, key="emb-layout",
                              help="UMAP keeps neighbourhoods; PCA is instant. PCA is shown while UMAP computes.")
    colouring = columns[1].selectbox(
        "Colour by", COLOURINGS, key="emb-colour",
        help="'prediction changed' compares each model with the original (the original panel shows the unlearned "
             "model's changes); 'shift size' is the distance a point moved from its original position, or, when "
             "the features did not move (deletion in SPM), the change in predicted probabilities.")
    show = columns[2].selectbox("Show", list(SHOW), key="emb-show", format_func=SHOW.get)
    follow = columns[3].toggle("Follow selection", value=True, key="emb-follow",
                               help="Ring the selected samples in all three panels.")
    with st.expander("Map settings"):
        train_sample = st.slider("Training samples on the map (the forget set is always added)", 0, 5000,
                                 min(1000, dataset.num_train), 250, key="emb-train-sample")
        max_test = st.slider("Test images on the map", 100, len(dataset.y_test), min(10_000, len(dataset.y_test)),
                             key="emb-max-test")
        prototypes = st.checkbox("Show class prototypes (centroids of the training samples each model holds)",
                                 value=kind == "spm", key="emb-protos")
    return MapChoices(layout, colouring, show, follow, train_sample, max_test, prototypes)


def map_ui(emb: E.Embeddings, layout: E.Layout, choices: MapChoices, class_names) -> None:
    """The map; a lasso, box or click on it becomes the session's selection. A redrawn chart starts with an
    empty selection, so the session keeps its own (ringed in every panel when following)."""
    state = session_state().embeddings
    view = map_view(emb, layout, choices.colouring, class_names, state.selection if choices.follow else [],
                    choices.show, choices.prototypes)
    fig = charts.map_figure(view)
    signature = hashlib.sha256(fig.to_json().encode()).hexdigest()[:16]
    event = st.plotly_chart(fig, key="emb-map", on_select="rerun", selection_mode=("box", "lasso", "points"),
                            width="stretch", config={"displaylogo": False})
    keys = selected_keys(event)
    if signature != state.figure_signature:
        state.figure_signature, state.event_keys = signature, keys
        if keys:
            state.selection = keys
    elif keys != state.event_keys:
        state.event_keys = state.selection = keys
        if choices.follow:
            st.rerun()  # redraw with the selection ringed in every panel


def main() -> None:
    st.header("Embeddings")
    dataset = page_dataset(__file__)
    session = forget_session(dataset)
    request = session.current
    top = st.columns([1.8, 1.5, 1.8, 1.9, 1.7])  # each label whole at 1400 px
    maps = models_ui(top[0], dataset, session)
    if maps is None:
        return
    choices = controls_ui(top[1:], dataset, maps.kind)
    rows = E.map_rows(dataset, request, choices.train_sample, choices.max_test)
    try:
        with st.spinner("Features and predictions of each model on the whole dataset (once per model)"):
            emb = E.collect(maps.models, dataset, rows)
    except Exception as err:  # a model that cannot embed: say which, keep the rest of the app usable
        st.error(f"The {maps.kind} models could not be embedded: {type(err).__name__}: {err}")
        return
    layout, note, umap = layout_ui(emb, maps.keys, request.key() if request is not None else None, choices.layout)
    st.caption(" · ".join(map_facts(emb, layout, note, request is not None)))
    map_ui(emb, layout, choices, dataset.class_names)
    keys = selection_ui(emb, dataset, session)
    sample_ui(keys, emb, dataset, request, maps.trained, maps.unlearned)
    poll_while_active(maps.jobs + [umap])


main()
