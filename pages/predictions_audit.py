"""The Predictions page's record of one request: every run side by side, the audit report to file, what a
post-hoc method did, and how decodable the forgotten classes stay layer by layer."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core import charts, purge, store, workflow
from core import report as report_files
from core.configs import config_to_dict
from core.data import Dataset, ForgetRequest
from core.errors import InputError
from core.eval import audit, probes
from core.eval import metrics as M
from core.views import evidence as EV
from core.views.predictions import PredictionView, ShownModel, exposure_captions, run_row, runs_table
from pages.common import add_run, oracle_jobs, ready_model
from pages.state import session_state
from pages.widgets import image_grid_ui


def runs_ui(view: PredictionView, shown: ShownModel, done_runs: list, dataset: Dataset, request: ForgetRequest) -> None:
    """Every scored run of ``request`` and, once its oracle is trained, the shown by-design deletion."""
    st.subheader("All runs of this request")
    originals = {k: t.classifier for k in {r.kind for r in done_runs} if (t := ready_model(k, dataset)) is not None}
    rows = runs_table(done_runs, originals, dataset, request)
    if view.comparison is not None and shown.run is None:
        rows.append(run_row(f"{shown.name} deletion", shown.kind, view.seconds, view.before, view.comparison))
    if not rows:
        return
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.2f") for c in table.columns
                                if c not in ("run", "kind", "verdict", "oracles")})
    st.caption(f"selectivity: {M.EXPLANATIONS['selectivity']}")
    st.download_button("Export all runs (CSV)", table.to_csv(index=False), f"runs-{request.key()}.csv", "text/csv")


SHOW_NEXT = "pred-model-next"  # the Model picker's choice at the next run (set below the picker)


def supplied_ui(dataset: Dataset, request: ForgetRequest) -> None:
    """Weights unlearned elsewhere for ``request``, judged here as a run (an auditor's check of a deletion done
    with another tool): checked strictly, scored against the oracles, then shown with its audit report."""
    with st.expander("Judge weights unlearned elsewhere", key="pred-supplied"):
        st.markdown(f"A **safetensors** file of the parametric network after another tool forgot "
                    f"*{request.description}*: it is judged against this request's oracles as the runs above are, "
                    "becomes a model of the picker at the top, and its audit report names the file and the SHA-256 "
                    "of its bytes. Names and shapes must match; nothing in it is unpickled. It stays in this "
                    "browser session (not in the Runs page's table).")
        upload = st.file_uploader("Unlearned weights", type=["safetensors"], key="pred-supplied-file")
        if upload is None or not st.button("Judge these weights", key="pred-supplied-go"):
            return
        original = ready_model("parametric", dataset)
        if original is None:
            st.error("The parametric model is not trained for this dataset yet: train it on the Models page.")
            return
        with st.spinner(f"Checking {upload.name} and predicting every training and test image with it"):
            try:
                run = workflow.supplied_run(original, dataset, request, upload.getvalue(), upload.name)
            except InputError as err:
                st.error(f"These weights were not judged: {err}")
                return
        add_run(run)
        st.session_state[SHOW_NEXT] = run.label
        st.rerun()


def audit_ui(view: PredictionView, shown: ShownModel, dataset: Dataset, request: ForgetRequest) -> None:
    """The audit report of the shown model: memory check, membership exposure, and its downloads."""
    st.subheader("Audit report")
    st.caption("One file to keep with the deletion request: the verdict with its rule and evidence, the ids' hash, "
               "the original's and the unlearned weights' hashes (a post-hoc run's weights can be downloaded below to "
               "re-check), method and config, the oracles and their seeds, what the memory still holds (by-design "
               "models, read from the model), every metric against the oracle spread, and the per-sample membership "
               "table.")
    config = config_to_dict(shown.run.config) if shown.run is not None else {}
    if shown.run is not None and shown.run.method == workflow.SUPPLIED:
        st.info(f"Judged here: the weights of **{config['file']}** (SHA-256 `{config['sha256']}`), supplied in this "
                "session. Their unlearning was done elsewhere, so its time is not measured.")
    stored = workflow.store_unlearned(shown.run) if shown.run is not None else None
    report = EV.audit_view(dataset, request, shown.before, shown.after, shown.original.meta, shown.method, config,
                           view.seconds, view.comparison, stored)
    if "memory" in report:
        memory = report["memory"]
        (st.success if memory["forgotten_in_memory"] == 0 else st.error)(
            f"Memory check: {memory['forgotten_in_memory']:,} of the {memory['forgotten_ids']:,} forgotten samples "
            f"are still in {shown.name}'s memory ({memory['memory_entries']:,} entries).")
        purged_copy_ui(shown, request, memory["artifacts"])
    exposure = report["exposure"]
    st.markdown(f"Mean membership exposure of the forgotten samples **{exposure['mean']:.1f}** (the MIA AUROC)"
                + (f"; the oracles' **{exposure['oracle_mean']:.1f}**" if "oracle_mean" in exposure else "")
                + f". {audit.EXPOSURE_EXPLANATION}")
    most = exposure["most_exposed"][:8]
    image_grid_ui([dataset.x_train[r["id"]] for r in most], exposure_captions(most, dataset.class_names))
    stem = f"audit-{request.key()}-{shown.name}" if shown.run is None or shown.run.method != workflow.SUPPLIED else \
        f"audit-{request.key()}-supplied-{shown.run.weights_sha256[:12]}"  # not the user's file name: any text
    row = st.container(horizontal=True)  # the buttons side by side, each as wide as its label
    names = dataset.class_names  # each file is made when its button is clicked
    row.download_button("Download the audit report (HTML, opens offline)",
                        lambda: report_files.report_html(report, names), f"{stem}.html", "text/html",
                        key="pred-audit-html", type="primary",
                        help="One self-contained page: the report and its figures, no external script. Relearn "
                             "time and the weights' residue are included once measured in the Evidence tab.")
    row.download_button("JSON", lambda: json.dumps(report, indent=1), f"{stem}.json", "application/json",
                        key="pred-audit-json")
    row.download_button("Markdown", lambda: audit.report_markdown(report, names), f"{stem}.md", "text/markdown",
                        key="pred-audit-md")
    if stored is not None:
        weights_ui(row, stored, stem)


def weights_ui(row, stored: store.StoredModel, stem: str) -> None:
    """The unlearned weights the report judged, a download beside the report's (``row``), to re-check: their hash
    is the report's."""
    try:
        data = store.verified_weights(stored)
    except store.StoreError as err:
        st.error(f"The unlearned weights cannot be offered: {err}")
        return
    sha = stored.meta.get("weights_sha256", "")[:16]
    row.download_button("Unlearned weights (safetensors)", data, f"{stem}.safetensors", "application/octet-stream",
                        key="pred-audit-weights",
                        help=f"Exactly the weights judged here (SHA-256 {sha}…, as in the report). They load with "
                             "safetensors, or on the Models page as uploaded weights.")


def purged_copy_ui(shown: ShownModel, request: ForgetRequest, artifacts: list[dict]) -> None:
    """What the forgotten model object still carries, and a copy that carries none of it, on demand."""
    copies, key = session_state().purged_copies, f"{request.key()}:{shown.name}"
    with st.expander("What else the model carries, and a purged copy", expanded=key in copies):
        st.dataframe(pd.DataFrame(artifacts), hide_index=True, width="stretch")
        if st.button("Prepare a purged copy", key="pred-purge", help="Weights and memory without any row or id of "
                     "the forgotten samples; loads with core.purge.load_purged and predicts as this model does."):
            copies.clear()  # one copy at a time: each is the size of the model
            copies[key] = purge.purged_zip(shown.after, request.ids, shown.original.key)
            st.rerun()  # drawn again with the section open and the download in it
        if key in copies:
            st.download_button("Download the purged copy (zip)", copies[key], f"purged-{key.replace(':', '-')}.zip",
                               "application/zip", key="pred-purge-zip")


def method_ui(shown: ShownModel, request: ForgetRequest) -> None:
    """What a post-hoc method run did: the head-bias shift of the forgotten classes, and its per-layer log."""
    if request.classes:
        shift = probes.head_bias_shift(shown.before, shown.after, request.classes)
        st.metric("Head-bias shift of the forgotten classes (relative to the others)",
                  f"{shift['relative_shift']:+.4f}",
                  help="Negative: the method suppresses the class at the output bias rather than in the features.")
    layers = shown.run.log.get("layers")
    if layers:
        st.subheader(f"{shown.name}: what it did per layer")
        st.dataframe(pd.DataFrame(layers), hide_index=True, width="stretch")


def probes_ui(dataset: Dataset, request: ForgetRequest, done_runs: list) -> None:
    """Layer-wise probe curves of the forgotten classes for the parametric original, each finished oracle (their
    spread is what retraining varies) and the runs."""
    st.subheader("Layer-wise decodability of the forgotten classes")
    st.caption(M.EXPLANATIONS["decodability"])
    original = ready_model("parametric", dataset)
    models = {"original": original.classifier} if original is not None else {}
    for i, oracle in enumerate(workflow.finished(oracle_jobs("parametric", dataset, request, start=False,
                                                             recorded=False)), 1):
        models[f"oracle {i} (seed {workflow.train_seed(oracle)})"] = oracle.classifier
    models.update({r.label: r.model for r in done_runs if r.kind == "parametric"})
    known = all(probes.decodability_known(m, dataset, request) for m in models.values())
    if not known and not st.button("Compute the probe curves", key="pred-probes",
                                   help="One logistic probe per layer and model: a few seconds each."):
        return
    with st.spinner("Probing every layer of every model"):
        curves = {name: probes.memoised_decodability(m, dataset, request) for name, m in models.items()}
    st.plotly_chart(charts.probe_curves(curves), width="stretch")
    if not any(name.startswith("oracle") for name in curves):
        st.caption("No parametric oracle is trained yet: run a post-hoc method to train them, then recompute.")
