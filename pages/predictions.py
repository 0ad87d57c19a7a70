"""Predictions: what changed after forgetting, against K oracles retrained without the forgotten samples, and
the verdict with its evidence."""

import json

import pandas as pd
import streamlit as st

from core import charts, workflow
from core.data import Dataset, ForgetRequest
from core.eval import metrics as M
from core.models import get_model_kind
from core.session import ForgetSession
from core.views import class_labels, markdown_table
from core.views.predictions import (
    PredictionView,
    ShownModel,
    changed_caption,
    metrics_table,
    prediction_view,
    reference_gaps,
)
from pages.common import (
    by_design_kinds,
    forget_session,
    oracle_job,
    oracle_jobs,
    ready_model,
    scored_runs,
    session_runs,
)
from pages.evidence_panels import evidence_ui, oracles_ui, verdict_ui
from pages.predictions_audit import SHOW_NEXT, audit_ui, method_ui, probes_ui, runs_ui, supplied_ui
from pages.sidebar import page_dataset
from pages.widgets import (
    chosen_tab_ui,
    image_grid_ui,
    job_status_ui,
    keep_choice,
    keep_value,
    poll_while_active,
    trainings_waiting_ui,
)

# Below the verdict, one panel at a time: only the chosen tab is computed, sent and drawn (the evidence's attacks
# and the charts and images of the others are most of the page's cost, on the server and in the browser).
TABS = {
    "Metrics": "the model's metrics before and after, against the oracles; the unlearning time and the speed-up",
    "Evidence": "what the verdict rests on: criteria, the oracle spread, KLoM, membership, relearn time, residue",
    "What changed": "per-class accuracy, class transitions and the test images whose prediction changed",
    "Runs and audit": "every run of this request side by side, the audit report, the method's settings, probes",
}


def shown_ui(dataset: Dataset, session: ForgetSession, done_runs: list) -> ShownModel | None:
    """The model picker; None (with a message) when no model is trained yet."""
    ready = {k: t for k in by_design_kinds() if (t := ready_model(k, dataset)) is not None}
    choices = list(ready) + [r.label for r in done_runs]
    if not choices:
        st.info("No model is trained for this dataset yet: train one on the Models page or the Forget page.")
        return None
    if st.session_state.get(SHOW_NEXT) in choices:  # a run just added below the picker (supplied weights)
        st.session_state["pred-model"] = st.session_state.pop(SHOW_NEXT)
    keep_choice("pred-model", choices)  # coming back to the page shows the model picked before
    name = st.radio("Model", choices, horizontal=True, key="pred-model",
                    help="By-design models forget by deletion; the others are post-hoc runs from the Forget page, "
                        "or weights unlearned elsewhere (the Runs and audit tab).")
    if name in ready:
        applied = session.apply_by_design(ready[name].key, ready[name].classifier)
        return ShownModel(name, name, ready[name].classifier, applied.model, applied.seconds, ready[name])
    run = next(r for r in done_runs if r.label == name)
    original = ready_model(run.kind, dataset)
    return ShownModel(name, run.kind, original.classifier, run.model, run.seconds, original, run)


def metrics_ui(view: PredictionView, shown: ShownModel, dataset: Dataset, request: ForgetRequest) -> list:
    """The metrics against the oracles (and any reference oracle asked for); returns the jobs to poll."""
    st.subheader("Against the oracles")
    if view.comparison is None:
        st.caption("The oracles are still training: the model's own numbers are shown now, the gaps appear when the "
                   "first is done.")
    else:
        st.caption(f"oracle: the mean of the {view.comparison.k} finished oracles; oracle sd: their spread (for PG "
                   "and KL, how far one oracle lies from another).")
    jobs, references = [], []
    for ref in get_model_kind(shown.kind).reference_oracles:  # e.g. MUNKEY's plain ViT retrained on D_r
        keep_value(f"pred-ref-{ref}", False)  # ticked stays ticked after a visit to another tab
        wanted = st.checkbox(f"Also compare with the {ref} oracle", key=f"pred-ref-{ref}",
                             help=f"The paper's other oracle for {shown.kind}: a {ref} of the same size retrained "
                                  "without the forgotten samples (trains in the background the first time).")
        job = oracle_job(ref, dataset, request, start=wanted)
        if wanted and job is None:
            jobs += trainings_waiting_ui([job], f"{ref} oracle")
        elif wanted:
            jobs.append(job)
            if job_status_ui(job, f"{ref} oracle", retry=True):
                references.append(reference_gaps(ref, view, job.result.classifier, dataset, request))
    for ref in references:
        st.caption(f"Against the {ref.name} oracle: AvgGap {ref.gaps['AvgGap']:.2f}, PG {ref.gaps['PG']:.2f} (the "
                   f"{ref.column} column holds its own TA/RA/FA/MIA; its PG/KL/AvgGap rows are the unlearned model's "
                   "gaps to it).")
    rows = metrics_table(view, references)
    st.markdown(markdown_table(rows))  # not st.dataframe: each browser would load ~1.6 MB of scripts to draw it
    cols, seconds, comparison = st.columns(2), view.seconds, view.comparison
    took = "not measured" if seconds is None else f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.1f} s"
    cols[0].metric("Unlearning time", took, help=M.EXPLANATIONS["seconds"] + (
        " Weights unlearned elsewhere come without it." if seconds is None else ""))
    if comparison is not None and "speedup" in comparison.metrics:
        cols[1].metric("Speed-up over retraining", f"{comparison.metrics['speedup']:,.0f}x",
                       help=M.EXPLANATIONS["speedup"])
    st.download_button("Export this table (CSV)", pd.DataFrame(rows).to_csv(index=False),
                       f"metrics-{request.key()}-{shown.name}.csv", "text/csv")
    return jobs


def changes_ui(view: PredictionView, dataset: Dataset, request: ForgetRequest) -> None:
    """Per-class accuracy, the before → after class transitions, and the test images that changed."""
    labels = class_labels(dataset)
    st.subheader("Per-class test accuracy")
    st.plotly_chart(charts.grouped_bars(labels, view.per_class, "accuracy %"), width="stretch")
    st.subheader("Predicted class before → after")
    st.plotly_chart(charts.transition_heatmap(view.transitions, labels), width="stretch")
    st.subheader("Test images whose prediction changed")
    st.caption(f"{len(view.changed):,} of {len(dataset.y_test):,} test images changed their predicted class "
               "(largest confidence shifts first).")
    keep_value("pred-limit", 24)
    shown = view.changed[:st.slider("Images to show", 8, 96, step=8, key="pred-limit")]
    image_grid_ui([dataset.x_test[r["test_id"]] for r in shown], [changed_caption(r, dataset.class_names)
                                                                   for r in shown])
    st.download_button("Export changed predictions (JSON)", json.dumps(view.changed), f"changed-{request.key()}.json",
                       "application/json")


def main() -> None:
    st.header("Predictions")
    dataset = page_dataset(__file__)
    session = forget_session(dataset)
    request = session.current
    if request is None:
        st.info("Nothing is forgotten yet: choose what to forget on the Forget page.")
        return
    st.markdown(f"Forgetting **{request.description}** ({len(request):,} training samples).")
    with st.expander("What the numbers mean"):  # one element, not one per metric: less for each browser to draw
        st.markdown("\n".join(f"- **{name}**: {text}" for name, text in M.EXPLANATIONS.items()))
    jobs, done_runs = session_runs(request), scored_runs(dataset, request)
    shown = shown_ui(dataset, session, done_runs)
    if shown is None:
        return
    oracle_work = oracle_jobs(shown.kind, dataset, request)
    oracles_ui(oracle_work)
    jobs += trainings_waiting_ui(oracle_work)
    oracles = workflow.finished(oracle_work)
    try:
        with st.spinner(f"Predicting every training and test image with {shown.name} before and after the deletion "
                        "and with each oracle, then weighing the evidence (once per model and oracle; MUNKEY "
                        "retrieves and runs K passes per image: up to a minute)"):
            view = prediction_view(shown.before, shown.after, dataset, request, shown.seconds, shown.original, oracles)
    except ValueError as err:  # a request the evidence cannot judge (e.g. nothing left to train an attack on)
        st.error(f"No comparison for this request: {err}")
        return
    ev = verdict_ui(view)
    jobs += oracle_work
    tab, container = chosen_tab_ui(list(TABS), "pred-tab")
    with container:
        st.caption(f"{tab}: {TABS[tab]}.")
        if tab == "Metrics":
            jobs += metrics_ui(view, shown, dataset, request)
        elif tab == "Evidence":
            jobs += evidence_ui(ev, shown, oracles, dataset, request)
        elif tab == "What changed":
            changes_ui(view, dataset, request)
        else:
            runs_ui(view, shown, done_runs, dataset, request)
            supplied_ui(dataset, request)
            audit_ui(view, shown, dataset, request)
            if shown.run is not None:
                method_ui(shown, request)
            if request.classes and (done_runs or oracles):
                probes_ui(dataset, request, done_runs)
    poll_while_active(jobs)


main()
