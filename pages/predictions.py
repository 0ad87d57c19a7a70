"""Predictions: what changed after forgetting, against the oracle retrained without the forgotten samples."""

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import workflow
from core.configs import config_to_dict
from core.eval import audit, probes
from core.eval import metrics as M
from core.models import get_model_kind
from pages.common import (
    by_design_kinds,
    class_label,
    forget_session,
    image_grid_ui,
    job_status_ui,
    oracle_job,
    page_dataset,
    poll_while_active,
    ready_model,
    scored_runs,
    session_runs,
)

st.header("Predictions")
dataset = page_dataset(__file__)
session = forget_session(dataset)
request = session.current
if request is None:
    st.info("Nothing is forgotten yet: choose what to forget on the Forget page.")
    st.stop()
st.markdown(f"Forgetting **{request.description}** ({len(request):,} training samples).")

with st.expander("What the numbers mean"):
    for name, text in M.EXPLANATIONS.items():
        st.markdown(f"- **{name}**: {text}")

ready = [k for k in by_design_kinds() if ready_model(k, dataset) is not None]
runs = session_runs(request)
done_runs = scored_runs(dataset, request)
choices = ready + [r.method for r in done_runs]
if not choices:
    st.info("No model is trained for this dataset yet: train one on the Models page or the Forget page.")
    st.stop()
shown = st.radio("Model", choices, horizontal=True, key="pred-model",
                 help="By-design models forget by deletion; the others are post-hoc runs from the Forget page.")

jobs = []
if shown in ready:
    trained = ready_model(shown, dataset)
    before = trained.classifier
    applied = session.apply_by_design(trained.key, before)
    after, seconds, kind = applied.model, applied.seconds, shown
else:
    record = next(r for r in done_runs if r.method == shown)
    before = ready_model(record.kind, dataset).classifier
    after, seconds, kind = record.model, record.seconds, record.kind

oracle_a, oracle_b = oracle_job(kind, dataset, request), oracle_job(kind, dataset, request, 1)
jobs += [oracle_a, oracle_b]
job_status_ui(oracle_a, "oracle")
job_status_ui(oracle_b, "second oracle (noise floor)")

with st.spinner(f"Predicting every training and test image with {shown} before and after the deletion and with "
                "the oracle (once per model; MUNKEY retrieves and runs K passes per image: up to a minute)"):
    p_before, p_after = before.split_proba(dataset, "test"), after.split_proba(dataset, "test")
    m_before, m_after = M.split_metrics(before, dataset, request), M.split_metrics(after, dataset, request)
    oracle_model = oracle_a.result.classifier if oracle_a.finished_ok else None
    p_oracle = oracle_model.split_proba(dataset, "test") if oracle_model is not None else None
    comparison = None
    if oracle_model is not None:
        second = oracle_b.result.classifier if oracle_b.finished_ok else None
        comparison = workflow.compare(after, oracle_model, dataset, request, second, seconds,
                                      workflow.train_seconds(oracle_a.result))
        m_before.update(M.gap_metrics(m_before, p_before, comparison.oracle_metrics, p_oracle))

st.subheader("Against the oracle")
if oracle_model is None:
    st.caption("The oracle is still training: the model's own numbers are shown now, the gaps appear when it is done.")

rows = []
for name in ("TA", "RA", "FA", "retained_TA", "forgotten_TA", "MIA", "PG", "KL", "AvgGap"):
    if name not in m_after and (comparison is None or name not in comparison.metrics):
        continue
    row = {"metric": name, "before": m_before.get(name),
           "after": (comparison.metrics if comparison else m_after).get(name)}
    if comparison is not None:
        row["oracle"] = comparison.oracle_metrics.get(name)
        row["noise floor (oracle vs oracle)"] = (comparison.noise_floor or {}).get(name)
    row["meaning"] = M.EXPLANATIONS[name]
    rows.append(row)
reference_jobs = {}
for ref in get_model_kind(kind).reference_oracles:  # e.g. MUNKEY's second oracle, the plain ViT retrained on D_r
    wanted = st.checkbox(f"Also compare with the {ref} oracle", key=f"pred-ref-{ref}",
                         help=f"The paper's other oracle for {kind}: a {ref} of the same size retrained without the "
                              "forgotten samples (trains in the background the first time).")
    job = oracle_job(ref, dataset, request, start=wanted)
    if wanted and job is not None:
        jobs.append(job)
        if job_status_ui(job, f"{ref} oracle"):
            reference_jobs[ref] = job
for ref, job in reference_jobs.items():
    model_ref = job.result.classifier
    p_ref = model_ref.split_proba(dataset, "test")
    m_ref = M.split_metrics(model_ref, dataset, request)
    gaps = M.gap_metrics(m_after, p_after, m_ref, p_ref)
    for row in rows:
        meaning = row.pop("meaning")
        row[f"{ref} oracle"] = gaps[row["metric"]] if row["metric"] in gaps else m_ref.get(row["metric"])
        row["meaning"] = meaning
    st.caption(f"Against the {ref} oracle: AvgGap {gaps['AvgGap']:.2f}, PG {gaps['PG']:.2f} "
               f"(the {ref} oracle column holds its own TA/RA/FA/MIA; its PG/KL/AvgGap rows are the unlearned "
               f"model's gaps to it).")
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="%.2f") for c in table.columns
                            if c not in ("metric", "meaning")})
cols = st.columns(3)
cols[0].metric("Unlearning time", f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.1f} s",
               help=M.EXPLANATIONS["seconds"])
if comparison is not None and "speedup" in comparison.metrics:
    cols[1].metric("Speed-up over retraining", f"{comparison.metrics['speedup']:,.0f}x", help=M.EXPLANATIONS["speedup"])
if comparison is not None and comparison.noise_floor is None:
    cols[2].caption("Noise floor: waiting for the second oracle.")
st.download_button("Export this table (CSV)", table.to_csv(index=False), f"metrics-{request.key()}-{shown}.csv",
                   "text/csv")

st.subheader("Per-class test accuracy")
per_class = pd.DataFrame({"class": [class_label(dataset, c) for c in range(dataset.num_classes)],
                          "original": m_before["per_class"], "unlearned": m_after["per_class"]})
if p_oracle is not None:
    per_class["oracle"] = M.per_class_accuracy(p_oracle, dataset.y_test, dataset.num_classes)
fig = go.Figure([go.Bar(name=c, x=per_class["class"], y=per_class[c]) for c in per_class.columns[1:]])
fig.update_layout(barmode="group", height=320, margin=dict(t=10, b=10), yaxis_title="accuracy %")
st.plotly_chart(fig, width="stretch")

st.subheader("Predicted class before → after")
matrix = workflow.transition_matrix(p_before, p_after, dataset.num_classes)
names = [class_label(dataset, c) for c in range(dataset.num_classes)]
heat = go.Figure(go.Heatmap(z=np.log1p(matrix), x=names, y=names, text=matrix, texttemplate="%{text}",
                            colorscale="Blues", showscale=False,
                            hovertemplate="before %{y}<br>after %{x}<br>%{text} test images<extra></extra>"))
heat.update_layout(height=420, margin=dict(t=10, b=10), xaxis_title="after", yaxis_title="before",
                   yaxis_autorange="reversed")
st.plotly_chart(heat, width="stretch")

st.subheader("Test images whose prediction changed")
changed = workflow.changed_predictions(p_before, p_after, p_oracle, dataset.y_test)
st.caption(f"{len(changed):,} of {len(dataset.y_test):,} test images changed their predicted class "
           "(largest confidence shifts first).")
limit = st.slider("Images to show", 8, 96, 24, 8, key="pred-limit")


def caption(row: dict) -> str:
    text = (f"true {dataset.class_names[row['label']]} | before {dataset.class_names[row['before']]} "
            f"{row['before_conf']:.2f} | after {dataset.class_names[row['after']]} {row['after_conf']:.2f}")
    if "oracle" in row:
        text += f" | oracle {dataset.class_names[row['oracle']]} {row['oracle_conf']:.2f}"
    return text


image_grid_ui([dataset.x_test[r["test_id"]] for r in changed[:limit]], [caption(r) for r in changed[:limit]])
st.download_button("Export changed predictions (JSON)", json.dumps(changed), f"changed-{request.key()}.json",
                   "application/json")

if done_runs or ready:
    st.subheader("All runs of this request")
    rows = []
    for record in done_runs:
        if record.comparison is None:
            continue  # its oracle is still training
        base = ready_model(record.kind, dataset).classifier
        base_metrics = M.split_metrics(base, dataset, request)
        rows.append({"run": record.method, "kind": record.kind, "seconds": record.seconds,
                     "selectivity": probes.selectivity(base_metrics, record.comparison.metrics),
                     **{k: record.comparison.metrics.get(k) for k in ("TA", "RA", "FA", "MIA", "PG", "AvgGap",
                                                                     "speedup")}})
    if comparison is not None and shown in ready:
        rows.append({"run": f"{shown} deletion", "kind": shown, "seconds": seconds,
                     "selectivity": probes.selectivity(m_before, comparison.metrics),
                     **{k: comparison.metrics.get(k) for k in ("TA", "RA", "FA", "MIA", "PG", "AvgGap", "speedup")}})
    if rows:
        runs_table = pd.DataFrame(rows)
        st.dataframe(runs_table, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.2f") for c in runs_table.columns
                                    if c not in ("run", "kind")})
        st.caption(f"selectivity: {M.EXPLANATIONS['selectivity']}")
        st.download_button("Export all runs (CSV)", runs_table.to_csv(index=False), f"runs-{request.key()}.csv",
                           "text/csv")

st.subheader("Audit report")
st.caption("One file to keep with the deletion request: the ids' hash, model and method with their hashes and "
           "configs, what the memory still holds (by-design models, read from the model), the metrics against the "
           "oracle and the noise floor, and each forgotten sample's membership exposure.")
if shown in ready:
    method_name, method_config, model_meta = f"{shown}-delete", {}, trained.meta
else:
    method_name, method_config = shown, config_to_dict(record.config)
    model_meta = ready_model(kind, dataset).meta
report = audit.audit_report(dataset, request, before, after, model_meta, method_name, method_config, seconds,
                            oracle_model, oracle_a.result.meta if oracle_model is not None else None,
                            comparison.noise_floor if comparison is not None else None)
if "memory" in report:
    memory = report["memory"]
    (st.success if memory["forgotten_in_memory"] == 0 else st.error)(
        f"Memory check: {memory['forgotten_in_memory']:,} of the {memory['forgotten_ids']:,} forgotten samples are "
        f"still in {shown}'s memory ({memory['memory_entries']:,} entries).")
exposure = report["exposure"]
st.markdown(f"Mean membership exposure of the forgotten samples **{exposure['mean']:.1f}** (the MIA AUROC)"
            + (f"; the oracle's **{exposure['oracle_mean']:.1f}**" if "oracle_mean" in exposure else "")
            + f". {audit.EXPOSURE_EXPLANATION}")
most = exposure["most_exposed"][:8]
image_grid_ui([dataset.x_train[r["id"]] for r in most],
              [f"#{r['id']} {dataset.class_names[r['label']]} | exposure {r['exposure']:.0f}"
               + (f" | oracle {r['oracle_exposure']:.0f}" if "oracle_exposure" in r else "") for r in most])
cols = st.columns(2)
cols[0].download_button("Download the audit report (Markdown)", audit.report_markdown(report, dataset.class_names),
                        f"audit-{request.key()}-{shown}.md", "text/markdown", key="pred-audit-md")
cols[1].download_button("Download the audit report (JSON)", json.dumps(report, indent=1),
                        f"audit-{request.key()}-{shown}.json", "application/json", key="pred-audit-json")

if shown not in ready:
    if request.classes:
        shift = probes.head_bias_shift(before, after, request.classes)
        st.metric("Head-bias shift of the forgotten classes (relative to the others)",
                  f"{shift['relative_shift']:+.4f}",
                  help="Negative: the method suppresses the class at the output bias rather than in the features.")
    layers = record.log.get("layers")
    if layers:
        st.subheader(f"{shown}: what it did per layer")
        st.dataframe(pd.DataFrame(layers), hide_index=True, width="stretch")

if request.classes and (done_runs or oracle_model is not None):
    st.subheader("Layer-wise decodability of the forgotten classes")
    st.caption(M.EXPLANATIONS["decodability"])
    cache = st.session_state.setdefault("probe_curves", {})
    candidates = {"original": ready_model("parametric", dataset)}
    parametric_oracle = oracle_job("parametric", dataset, request, start=False)
    if parametric_oracle is not None and parametric_oracle.finished_ok:
        candidates["oracle"] = parametric_oracle.result
    curves_key = (request.key(), tuple(r.key for r in done_runs), "oracle" in candidates)
    if curves_key not in cache and st.button("Compute the probe curves", key="pred-probes",
                                             help="One logistic probe per layer and model: a few seconds each."):
        models = {name: t.classifier for name, t in candidates.items() if t is not None}
        models.update({r.method: r.model for r in done_runs if r.kind == "parametric"})
        with st.spinner("Probing every layer of every model"):
            cache[curves_key] = {name: probes.layer_decodability(m, dataset, request) for name, m in models.items()}
    if curves_key in cache:
        fig = go.Figure()
        for name, curve in cache[curves_key].items():
            fig.add_trace(go.Scatter(x=[r["layer"] for r in curve], y=[r["probe_acc"] for r in curve], name=name,
                                     mode="lines+markers",
                                     line=dict(width=4 if name == "oracle" else 2,
                                               dash="dash" if name == "oracle" else "solid")))
        fig.update_layout(height=340, margin=dict(t=10, b=10), yaxis_title="probe accuracy %", xaxis_title="layer")
        st.plotly_chart(fig, width="stretch")
        if "oracle" not in cache[curves_key]:
            st.caption("The parametric oracle is not trained yet: run a post-hoc method to train it, then recompute.")
poll_while_active(jobs + runs)
