"""The Predictions page's verdict and the evidence under it (issue 14): the oracles it rests on, the verdict in one
sentence, its criteria and rule, the oracle spread, KLoM and the per-sample membership table. Relearn time and
the weights' residue are in ``evidence_weights``."""

from __future__ import annotations

import streamlit as st

from core import bundle, charts, report, workflow
from core import recorded as R
from core.backend import Job
from core.data import Dataset, ForgetRequest
from core.views import evidence as EV
from core.views.evidence import EvidenceView
from core.views.predictions import PredictionView, ShownModel
from pages.evidence_weights import relearn_ui, residue_ui, trained_oracles_ui
from pages.widgets import job_status_ui, number_table_ui

SPREAD_HELP = ("Each metric's distance to the oracles' mean beside how far the oracles lie from one another "
               "(mean ± sd over oracle pairs): a retrained model is judged against what retraining itself varies.")


def oracles_ui(jobs: list[Job | None]) -> None:
    """How many of the K oracles have finished and on which seeds; the progress of the others."""
    done = workflow.finished(jobs)
    seeds = ", ".join(str(workflow.train_seed(o)) for o in done) or "none yet"
    recorded = sum(R.is_recorded(o) for o in done)
    st.caption(f"Oracles: {len(done)} of {len(jobs)} finished (seeds {seeds}). Each is the original's recipe "
               "retrained without the forgotten samples on its own seed, never the original's; every number below "
               "uses the finished ones and is redone as each further one finishes ($UE_ORACLES sets how many)."
               + (f" {'All' if recorded == len(done) else recorded} of them are recorded: their predictions were "
                  "saved when they were trained for the shipped model (`python -m core record-oracles`), which is "
                  "all a comparison reads." if recorded else ""))
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
        number_table_ui(ev.criteria, "ev-criteria")
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
        number_table_ui(ev.spread, "ev-spread")


def klom_ui(ev: EvidenceView) -> None:
    if not ev.klom:
        return
    st.subheader("KLoM per split")
    st.caption("KL divergence of each sample's margin distribution, the method's against the oracles' (Georgiev "
               "et al. 2025): 0 is oracle-like. KLoM-Gauss is its form for few oracles.")
    number_table_ui(ev.klom, "ev-klom")


def membership_ui(ev: EvidenceView, request: ForgetRequest, name: str) -> None:
    """Attack summaries (offline LiRA with TPR at fixed FPR; loss threshold and SVC), and the ranked table."""
    st.subheader("Membership of the forgotten samples")
    population = ev.population
    if ev.comparison.attacks_error:
        st.warning(f"No population attacks for this request: {ev.comparison.attacks_error}")
    if population:
        st.caption("Population attacks: the loss threshold (AUROC; 50 looks unseen) and the SVC MIA-efficacy of "
                   "l1-sparse / SalUn (% of D_f called non-member; closer to the oracles' is better, not higher).")
        number_table_ui(population, "ev-population")
    if not ev.attacks:
        return
    st.caption("Offline LiRA with the oracles as the 'out' distribution: D_f against held-out test samples of the "
               "same classes. An oracle left out and scored against the others shows what no memory looks like.")
    number_table_ui(ev.attacks, "ev-attacks")
    st.caption("Per forgotten sample, most member-like first: z > 2 still looks trained-on, z < −2 is pushed past "
               "the oracles.")
    number_table_ui(ev.membership[:200], "ev-members")
    st.download_button(f"Download the per-sample table (CSV, {len(ev.membership):,} rows)",
                       report.membership_csv(ev.membership), f"membership-{request.key()}-{name}.csv", "text/csv",
                       key="ev-members-csv")


def evidence_ui(ev: EvidenceView | None, shown: ShownModel, oracles: list[bundle.TrainedModel], dataset: Dataset,
                request: ForgetRequest) -> list[Job | None]:
    """Every panel of the evidence under the verdict; returns the jobs to poll (oracles training for the panels
    that read weights)."""
    if ev is not None:
        criteria_ui(ev)
        spread_ui(ev)
        klom_ui(ev)
        membership_ui(ev, request, shown.name)
    trained, jobs = trained_oracles_ui(shown.kind, oracles, dataset, request)
    relearn_ui(shown, trained, dataset, request)
    residue_ui(shown, trained, dataset, request)
    return jobs
