"""Embeddings: aligned before / after / oracle maps, lasso to images, neighbours, and why a prediction changed."""

import hashlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.data import ForgetRequestError, request_ids
from core.eval import embeddings as E
from core.eval import neighbours as NB
from core.selection import class_counts, parse_key, selected_keys, selection_rows, thumbnails_html, to_csv, train_ids
from pages.common import (
    backend,
    by_design_kinds,
    forget_session,
    job_status_ui,
    model_job,
    oracle_job,
    page_dataset,
    poll_while_active,
    ready_model,
    session_id,
    session_runs,
    untrained_model_ui,
)

GRID_LIMIT = 60  # thumbnails shown for a selection; the CSV always has every selected sample
NEIGHBOURS = 8


@st.cache_resource(max_entries=8)
def original_index(model_key: str, _model, _dataset) -> NB.NeighbourIndex:
    """FAISS index of a shared original model's training features (read-only, shared by sessions)."""
    return NB.NeighbourIndex(NB.training_features(_model, _dataset), NB.held_mask(_model, _dataset))


def session_memo(name: str, key, build):
    """A small per-session cache (the unlearned model lives in this session only); keeps the last two."""
    memo = st.session_state.setdefault(f"emb_memo_{name}", {})
    if key not in memo:
        if len(memo) >= 2:
            memo.pop(next(iter(memo)))
        memo[key] = build()
    return memo[key]


st.header("Embeddings")
dataset = page_dataset(__file__)
session = forget_session(dataset)
request = session.current
names = dataset.class_names

# ---- which models -----------------------------------------------------------------------------------------
kinds = sorted(by_design_kinds(), key=lambda k: (k != "spm", k))  # SPM first: the paper's model
done_runs = [j.result for j in session_runs(request) if j.finished_ok] if request is not None else []
choices = kinds + [r.method for r in done_runs]
top = st.columns([2, 2, 2, 1.3, 1.2])
shown = top[0].selectbox("Model", choices, key="emb-model",
                         help="By-design models forget by deletion; the others are post-hoc runs from the Forget page.")
jobs = []
if shown in kinds:
    kind = shown
    trained = ready_model(kind, dataset)
    if trained is None:
        if model_job(kind, dataset, start=False) is None and dataset.num_train <= 5000:
            model_job(kind, dataset)  # tiny sets train in seconds: start it here
        poll_while_active([untrained_model_ui(kind, dataset, f"emb-train-{kind}")])
        st.stop()
    original = trained.classifier
    unlearned_key = f"{trained.key}-forget-{request.key()}" if request is not None else None
    unlearned = session.apply_by_design(trained.key, original).model if request is not None else None
else:
    record = next(r for r in done_runs if r.method == shown)
    kind = record.kind
    trained = ready_model(kind, dataset)
    original, unlearned, unlearned_key = trained.classifier, record.model, record.key

oracle = None
oracle_key = None
if request is not None:
    ojob = oracle_job(kind, dataset, request)
    jobs.append(ojob)
    if ojob.finished_ok:
        oracle, oracle_key = ojob.result.classifier, ojob.result.key
    else:
        job_status_ui(ojob, "oracle (the third panel appears when it is trained)")

method_label = top[1].radio("Layout", ["UMAP", "PCA"], horizontal=True, key="emb-layout",
                            help="UMAP keeps neighbourhoods; PCA is instant. PCA is shown while UMAP computes.")
colouring = top[2].selectbox("Colour by", E.COLOURINGS, key="emb-colour",
                             help="'prediction changed' compares each model with the original (the original panel "
                                  "shows the unlearned model's changes); 'shift size' is the distance a point moved "
                                  "from its original position, or, when the features did not move (deletion in "
                                  "SPM), the change in predicted probabilities.")
show = top[3].selectbox("Show", ["both", "test", "train"], key="emb-show",
                        format_func={"both": "test + training sample", "test": "test set",
                                     "train": "training sample"}.get)
follow = top[4].toggle("Follow selection", value=True, key="emb-follow",
                       help="Ring the selected samples in all three panels.")
with st.expander("Map settings"):
    train_sample = st.slider("Training samples on the map (the forget set is always added)", 0, 5000,
                             min(1000, dataset.num_train), 250, key="emb-train-sample")
    max_test = st.slider("Test images on the map", 100, len(dataset.y_test), min(10_000, len(dataset.y_test)),
                         key="emb-max-test")
    prototypes = st.checkbox("Show class prototypes (centroids of the training samples each model holds)",
                             value=kind == "spm", key="emb-protos")

# ---- embeddings and layout ----------------------------------------------------------------------------------
rows = E.map_rows(dataset, request, train_sample, max_test)
models = {"original": original, "unlearned": unlearned, "oracle": oracle}
try:
    emb = session_memo("emb", (id(original), id(unlearned), id(oracle), rows.digest()),
                       lambda: E.collect(models, dataset, rows))
except Exception as err:  # a model that cannot embed: say which, keep the rest of the app usable
    st.error(f"The {kind} models could not be embedded: {type(err).__name__}: {err}")
    st.stop()
model_keys = {"original": trained.key, "unlearned": unlearned_key, "oracle": oracle_key}
model_keys = {m: k for m, k in model_keys.items() if k is not None}
request_key = request.key() if request is not None else None
layout = E.cached_layout(emb, "pca", model_keys, request_key)
note = "PCA layout"
if method_label == "UMAP":
    umap_key = E.layout_key("umap", {m: k for m, k in model_keys.items() if m in emb.features}, request_key, rows)
    cached = E.load_layout(umap_key, rows.n)
    if cached is not None and set(cached.coords) == set(emb.models):
        layout, note = cached, "UMAP layout (cached with the run)"
    else:
        ujob = backend().submit(umap_key, "UMAP layout", E.layout_remote(emb, model_keys, request_key),
                                owner=session_id())
        jobs.append(ujob)
        if ujob.finished_ok:
            layout, note = ujob.result, "UMAP layout"
        elif ujob.state == "failed":
            st.error(f"UMAP failed ({ujob.error}); showing PCA.")
        else:
            st.caption("Showing PCA while UMAP computes in the background (the first UMAP in a worker process "
                       "compiles its code: about a minute).")

summary = E.summary(emb, layout)
facts = [f"{note}: {rows.n:,} samples ({len(rows.test_ids):,} test, {len(rows.train_ids):,} training, "
         f"{summary['forgotten_rows']:,} forgotten)"]
if "unlearned" in emb.features:
    facts.append(f"{summary['changed_unlearned']:,} predictions changed after unlearning")
    if emb.same_features.get("unlearned") == "original":
        facts.append("the unlearned encoder is the original's (deletion edits memory only), so its points do not "
                     "move: colour by prediction / prediction changed / shift size to see what does")
if "oracle" in emb.features:
    facts.append(f"{summary['changed_oracle']:,} differ from the oracle's retraining")
if request is None:
    facts.append("nothing is forgotten yet: select samples and press *Forget the selection*, or use the Forget page")
st.caption(" · ".join(facts))

# ---- the map and its selection ------------------------------------------------------------------------------
selection: list[str] = st.session_state.setdefault("emb_selection", [])
highlight = selection if follow else []
fig = E.map_figure(emb, layout, colouring, names, highlight, show, prototypes)
fig_sig = hashlib.sha256(fig.to_json().encode()).hexdigest()[:16]
event = st.plotly_chart(fig, key="emb-map", on_select="rerun", selection_mode=("box", "lasso", "points"),
                        width="stretch", config={"displaylogo": False})
keys = selected_keys(event)
previous_fig, previous_event = st.session_state.get("emb_fig_sig"), st.session_state.get("emb_event_sig", [])
st.session_state["emb_fig_sig"] = fig_sig
if fig_sig != previous_fig:
    # a redrawn chart starts with an empty selection: keep ours (ringed in the panels when following)
    st.session_state["emb_event_sig"] = keys
    if keys:
        st.session_state["emb_selection"] = selection = keys
elif keys != previous_event:
    st.session_state["emb_event_sig"] = keys
    st.session_state["emb_selection"] = selection = keys
    if follow:
        st.rerun()  # redraw with the selection ringed in every panel

st.subheader(f"Selection: {len(selection):,} samples")
if not selection:
    st.caption("Draw a lasso or a box on any panel (or click a point) to see the samples here.")
else:
    row_of = {k: i for i, k in enumerate(rows.keys)}
    selection = [k for k in selection if k in row_of]
    predictions = {m: {k: int(p) for k, p in zip(rows.keys, emb.predictions(m))} for m in emb.models}
    forgotten = request.mask(dataset.num_train) if request is not None else None
    table = selection_rows(selection, dataset.y_train, dataset.y_test, names, predictions, forgotten)
    counts = class_counts(selection, dataset.y_train, dataset.y_test, names)
    left, right = st.columns([1, 3])
    with left:
        st.dataframe(pd.DataFrame(counts), hide_index=True, width="stretch")
        ids = train_ids(selection)
        add = st.checkbox("Add to what is already forgotten", value=False, key="emb-add",
                          disabled=request is None)
        if st.button(f"Forget the selection ({len(ids):,} training samples)", type="primary", key="emb-forget",
                     disabled=not ids, help="Only training samples can be forgotten; test images are skipped."):
            try:
                new = session.push(dataset, request_ids(dataset, ids), add_to_current=add)
            except ForgetRequestError as err:
                st.error(f"Nothing was forgotten: {err}")
            else:
                st.session_state["emb_forgot_message"] = (
                    f"Now forgetting **{new.description}** ({len(new):,} training samples). The maps below "
                    "update; see the **Forget** page for oracles and methods and **Predictions** for the effect.")
                st.rerun()
        if "emb_forgot_message" in st.session_state:
            st.success(st.session_state.pop("emb_forgot_message"))
        st.download_button("Download the selection (CSV)", to_csv(table), "selection.csv", "text/csv",
                           key="emb-csv")
        if st.button("Clear selection", key="emb-clear"):
            st.session_state["emb_selection"] = []
            st.rerun()
    with right:
        shown_rows = table[:GRID_LIMIT]

        def caption(r: dict) -> str:
            preds = " → ".join(names[r[f"pred_{m}"]] for m in emb.models)
            flag = " ✗" if r["forgotten"] else ""
            return f"{r['key']}{flag} | {r['label_name']} | {preds}"

        images = [getattr(dataset, f"x_{r['split']}")[r["id"]] for r in shown_rows]
        more = f" · first {GRID_LIMIT} of {len(table):,}" if len(table) > GRID_LIMIT else ""
        st.caption("Caption: sample | true label | predicted by " + " → ".join(emb.models) + " (✗: forgotten)" + more)
        st.html(thumbnails_html(images, [caption(r) for r in shown_rows], [r["key"] for r in shown_rows], size=64,
                                grid="selection"))

# ---- one sample: neighbours and why its prediction changed ------------------------------------------------------
st.subheader("One sample: neighbours and why its prediction changed")
if not selection:
    st.caption("Click a point (or select some) to inspect it.")
    poll_while_active(jobs)
    st.stop()
focus = st.selectbox("Sample", selection, key="emb-focus", help="Click a single point on the map to pick it here.")
split, sample_id = parse_key(focus)
x_focus = getattr(dataset, f"x_{split}")[sample_id]
label = int(getattr(dataset, f"y_{split}")[sample_id])
cols = st.columns([1, 4])
cols[0].image(np.clip(x_focus[0] if x_focus.shape[0] == 1 else x_focus.transpose(1, 2, 0), 0, 1),
              caption=f"{focus}: {names[label]}", width=96)
with cols[1]:
    panels = st.columns(2 if unlearned is not None else 1)
    for panel, (name, model) in zip(panels, (("original", original), ("unlearned", unlearned))):
        if model is None:
            continue
        if name == "original":
            index = original_index(trained.key, original, dataset)
        else:
            index = session_memo("index", id(model), lambda m=model: NB.NeighbourIndex(
                NB.training_features(m, dataset), NB.held_mask(m, dataset, request)))
        found = NB.neighbours_of(model, dataset, split, sample_id, NEIGHBOURS, index=index)
        with panel:
            st.markdown(f"**Nearest training samples, {name} model** (FAISS, L2 in its feature space)")
            st.html(thumbnails_html([dataset.x_train[n.id] for n in found],
                                    [f"train:{n.id} {names[n.label]} d={n.distance:.2f}" for n in found],
                                    [f"train:{n.id}" for n in found], size=56,
                                    grid=f"neighbours-{name}"))

probs = {m: emb.probs[m][{k: i for i, k in enumerate(rows.keys)}[focus]] for m in emb.models}
bars = go.Figure([go.Bar(name=m, x=list(names), y=p) for m, p in probs.items()])
bars.update_layout(barmode="group", height=240, margin=dict(t=10, b=10), yaxis_title="probability",
                   legend=dict(orientation="h"))
if NB.is_spm(original) and unlearned is not None and NB.is_spm(unlearned):
    feature = original.features_of(dataset, split)[sample_id]
    why = NB.explain_spm(original, unlearned, feature)
    st.markdown(f"**SPM prototype scores** — predicted *{names[why['pred_before']]}* before deletion, "
                f"*{names[why['pred_after']]}* after. A class whose prototype lost samples moves its score; a "
                "forgotten class has no prototype (no score, probability 0).")
    scores = pd.DataFrame(why["class_scores"])
    scores.insert(1, "name", [names[c] for c in scores["class"]])
    c1, c2 = st.columns([3, 2])
    c1.dataframe(scores, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("score_before", "score_after", "prob_before", "prob_after")})
    c2.plotly_chart(bars, width="stretch", key="emb-probs")
    st.markdown(f"**kNN mode: the training samples that supported it** — predicted "
                f"*{names[why['knn_pred_before']]}* before, *{names[why['knn_pred_after']]}* after; "
                f"{len(why['removed'])} supporter(s) were deleted (red border).")
    k1, k2 = st.columns(2)
    for col, part, title in ((k1, "knn_before", "before deletion"), (k2, "knn_after", "after deletion")):
        support = why[part][:16]
        col.markdown(title)
        col.html(thumbnails_html([dataset.x_train[s["id"]] for s in support],
                                 [f"{names[s['label']]} w={s['weight']:.2f}" for s in support],
                                 [f"train:{s['id']}" for s in support], size=48,
                                 marked=[f"train:{i}" for i in why["removed"]], grid=part))
else:
    st.markdown("**Predicted probabilities** for this sample from each model.")
    st.plotly_chart(bars, width="stretch", key="emb-probs")
    if unlearned is not None:
        st.caption("Prototype scores and supporting training samples are shown for SPM models.")
poll_while_active(jobs)
