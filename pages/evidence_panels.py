"""The Predictions page's verdict and the evidence under it (issue 14): the oracles it rests on, the verdict in one
sentence, its criteria and rule, the oracle spread, KLoM, the per-sample membership table, and relearn time."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import bundle, charts, workflow
from core.backend import Job
from core.data import Dataset, ForgetRequest
from core.views import evidence as EV
from core.views.evidence import EvidenceView
from core.views.predictions import PredictionView, ShownModel
from pages.widgets import job_status_ui

SPREAD_HELP = ("Each metric's distance to the oracles' mean beside how far the oracles lie from one another "
               "(mean ± sd over oracle pairs): a retrained model is judged against what retraining itself varies.")


def _table(rows: list[dict], key: str) -> None:
    frame = pd.DataFrame(rows)
    st.dataframe(frame, hide_index=True, width="stretch", key=key,
                 column_config={c: st.column_config.NumberColumn(format="%.3g") for c in frame.columns
                                if pd.api.types.is_float_dtype(frame[c])})


def oracles_ui(jobs: list[Job | None]) -> None:
    """How many of the K oracles have finished and on which seeds; the progress of the others."""
    done = workflow.finished(jobs)
    seeds = ", ".join(str(workflow.train_seed(o)) for o in done) or "none yet"
    st.caption(f"Oracles: {len(done)} of {len(jobs)} finished (seeds {seeds}). Each is the original's recipe "
               "retrained without the forgotten samples on its own seed, never the original's; every number below "
               "uses the finished ones and is redone as each further one finishes ($UE_ORACLES sets how many).")
    for i, job in enumerate(jobs, 1):
        if job is not None and not job.finished_ok:
            job_status_ui(job, f"oracle {i} of {len(jobs)}")


def verdict_ui(view: PredictionView) -> EvidenceView | None:
    """The verdict in one sentence (None: no oracle has finished, so there is no verdict)."""
    if view.comparison is None:
        st.info("No verdict yet: no oracle has finished. A verdict needs 2 oracles (a spread), its per-sample "
                "evidence 3.")
        return None
    ev = EV.evidence_view(view.comparison)
    getattr(st, ev.tone)(f"**Verdict: {ev.verdict}.** {ev.sentence}")
    return ev


def criteria_ui(ev: EvidenceView) -> None:
    """What the verdict rests on: each measure against its oracle band, the rule, and which scenario applies."""
    st.subheader(f"What the verdict rests on ({ev.k} oracle{'s' if ev.k != 1 else ''})")
    st.markdown(f"**Which rule applies.** {ev.scenario_rule}")
    if ev.criteria:
        _table(ev.criteria, "ev-criteria")
        st.plotly_chart(charts.criteria_bands(ev.bands), width="stretch", key="ev-bands")
    with st.expander("The verdict rule"):
        st.markdown(ev.rule)
    for note in ev.notes:
        st.caption(note)


def spread_ui(ev: EvidenceView) -> None:
    st.subheader("Gaps against the oracle spread")
    st.caption(SPREAD_HELP + " Percentile: where the method's mean distance to the oracles lies among the "
               "oracle-to-oracle distances (about 50 for a model like an oracle).")
    if ev.spread:
        _table(ev.spread, "ev-spread")


def klom_ui(ev: EvidenceView) -> None:
    if not ev.klom:
        return
    st.subheader("KLoM per split")
    st.caption("KL divergence of each sample's margin distribution, the method's against the oracles' (Georgiev "
               "et al. 2025): 0 is oracle-like. KLoM-Gauss is its form for few oracles.")
    _table(ev.klom, "ev-klom")


def membership_ui(ev: EvidenceView, request: ForgetRequest, name: str) -> None:
    """Attack summaries (offline LiRA with TPR at fixed FPR; loss threshold and SVC), and the ranked table."""
    st.subheader("Membership of the forgotten samples")
    if ev.population:
        st.caption("Population attacks: the loss threshold (AUROC; 50 looks unseen) and the SVC MIA-efficacy of "
                   "l1-sparse / SalUn (% of D_f called non-member; closer to the oracles' is better, not higher).")
        _table(ev.population, "ev-population")
    if not ev.attacks:
        return
    st.caption("Offline LiRA with the oracles as the 'out' distribution: D_f against held-out test samples of the "
               "same classes. An oracle left out and scored against the others shows what no memory looks like.")
    _table(ev.attacks, "ev-attacks")
    st.caption("Per forgotten sample, most member-like first: z > 2 still looks trained-on, z < −2 is pushed past "
               "the oracles.")
    _table(ev.membership[:200], "ev-members")
    st.download_button(f"Download the per-sample table (CSV, {len(ev.membership):,} rows)",
                       EV.membership_csv(ev.membership), f"membership-{request.key()}-{name}.csv", "text/csv",
                       key="ev-members-csv")


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
    _table(rv.rows, "ev-relearn")
    st.plotly_chart(charts.relearn_curves(rv.curves, rv.target, rv.metric), width="stretch", key="ev-relearn-fig")


def evidence_ui(ev: EvidenceView | None, shown: ShownModel, oracles: list[bundle.TrainedModel], dataset: Dataset,
                request: ForgetRequest) -> None:
    """Every panel of the evidence under the verdict."""
    if ev is not None:
        criteria_ui(ev)
        spread_ui(ev)
        klom_ui(ev)
        membership_ui(ev, request, shown.name)
    relearn_ui(shown, oracles, dataset, request)
