"""Suppressed or deleted? The Predictions page's panels that read the weights: relearn time (parametric models) and
what the weights alone still reveal of the forgotten data, against the oracles (every model, by-design included)."""

from __future__ import annotations

import streamlit as st

from core import bundle, charts
from core import recorded as R
from core.backend import Job
from core.data import Dataset, ForgetRequest
from core.views import evidence as EV
from core.views.predictions import ShownModel
from pages.common import oracle_jobs
from pages.widgets import job_status_ui, number_table_ui, training_refused_ui


def trained_oracles_ui(kind: str, oracles: list[bundle.TrainedModel], dataset: Dataset,
                       request: ForgetRequest) -> tuple[list[bundle.TrainedModel], list[Job | None]]:
    """The oracles whose weights the panels below read, and the jobs that train them: where the comparison rests
    on recorded predictions (``core.recorded``), a button trains the real oracles, which then replace them."""
    if not any(R.is_recorded(o) for o in oracles):
        return oracles, []
    jobs = oracle_jobs(kind, dataset, request, start=False, recorded=False)
    st.subheader("Measures that read the oracles' weights")
    st.caption(f"The comparison above rests on the recorded predictions of {len(oracles)} oracles trained for the "
               "shipped model, so it shows at once. Relearn time and what the weights alone reveal fine-tune or "
               "embed with each oracle, so they need the oracles themselves; once trained here, they also replace "
               "the recorded predictions in the comparison.")
    if not any(j is not None and (j.active or j.finished_ok) for j in jobs) and st.button(
            f"Train the {len(oracles)} oracles", key="pred-train-oracles",
            help="Retrains the recipe without the forgotten samples on each oracle's seed, in the background.") \
            and not training_refused_ui():
        jobs = oracle_jobs(kind, dataset, request, recorded=False, asked=True)
    for i, job in enumerate(jobs, 1):
        if job is not None and not job.finished_ok:
            job_status_ui(job, f"oracle {i} of {len(jobs)}")
    return R.with_weights(oracles), jobs


def relearn_ui(shown: ShownModel, oracles: list[bundle.TrainedModel], dataset: Dataset,
               request: ForgetRequest) -> None:
    """Relearn time of the unlearned model and each oracle, on demand (it fine-tunes every model)."""
    if not EV.relearn_applies(shown.after) or not oracles:
        return
    st.subheader("Relearn time: suppressed or deleted?")
    st.caption("Fine-tuning steps on the forgotten samples until the forgotten knowledge returns, the unlearned "
               "model against each oracle (Chundawat et al. 2023): a model that only hides D_f relearns it faster.")
    if not EV.relearn_known(shown.after, oracles, dataset, request) and not st.button(
            "Measure relearn time", key="pred-relearn", help="Fine-tunes a copy of each model: up to a minute each."):
        return
    with st.spinner("Fine-tuning the unlearned model and each oracle on the forgotten samples"):
        rv = EV.relearn_view(shown.after, shown.original, oracles, dataset, request)
    ain = rv.ain
    st.markdown(f"Target: {rv.target_text}. Anamnesis Index (steps of the unlearned model / the oracles' mean): "
                + (f"**{ain['ain']:.2f}** (≈ 1 ideal, ≪ 1 residual knowledge)" if ain["ain"] is not None else
                   "not defined: the oracles relearn in under 3 steps, read the steps"))
    number_table_ui(rv.rows, "ev-relearn")
    st.plotly_chart(charts.relearn_curves(rv.curves, rv.target, rv.metric), width="stretch", key="ev-relearn-fig")


def residue_ui(shown: ShownModel, oracles: list[bundle.TrainedModel], dataset: Dataset,
               request: ForgetRequest) -> None:
    """kNN accuracy, feature membership and CKA on the weights alone, against the oracle band, on demand."""
    if len(oracles) < 2:
        return
    st.subheader("What the weights alone still reveal")
    st.caption("Features computed without any memory (SPM's encoder, MUNKEY's image-only pass, a network's "
               "penultimate layer): kNN accuracy of the forgotten samples (or classes) from labelled test images, "
               "a feature-space membership AUROC (sample requests) and 1 − linear CKA to the oracles, each against "
               "what the oracles, which never saw the forgotten data, show. A by-design deletion empties the memory; "
               "this says what its encoder, trained on that data, still holds.")
    if not EV.residue_known(shown.after, dataset, request) and not st.button(
            "Measure the weights' residue", key="pred-residue", help="Embeds the test set with each model."):
        return
    with st.spinner("Embedding with the unlearned model, the original and each oracle"):
        rv = EV.residue_view(shown.after, shown.original, oracles, dataset, request)
    getattr(st, rv.tone)(rv.sentence)
    number_table_ui(rv.measures, "ev-residue")
    st.plotly_chart(charts.cka_band(rv.cka), width="stretch", key="ev-cka-fig")
