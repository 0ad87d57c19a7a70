"""The Embeddings page's panels: the map's layout, what was selected on the map (forget it, download it) and
one sample up close (its nearest training samples and, for SPM, why its prediction changed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core import bundle, charts
from core.backend import Job
from core.data import Dataset, ForgetRequest, ForgetRequestError, request_ids
from core.eval import embeddings as E
from core.models.base import Classifier
from core.selection import thumbnails_html, to_csv
from core.session import ForgetSession
from core.views.maps import SampleView, sample_view, selection_view
from pages import common
from pages.state import session_state

GRID_LIMIT = 60  # thumbnails shown for a selection; the CSV always has every selected sample
NEIGHBOURS = 8


def umap_layout(emb: E.Embeddings, model_keys: dict[str, str], request_key: str | None) \
        -> tuple[E.Layout | None, Job | None]:
    """The aligned UMAP layout of ``emb`` from the layout cache, else the Ray job that makes it (and stores it
    in that cache when it arrives)."""
    key = E.layout_key("umap", {m: k for m, k in model_keys.items() if m in emb.features}, request_key, emb.rows)
    cached = E.load_layout(key, emb.rows.n)
    if cached is not None and set(cached.coords) == set(emb.models):
        return cached, None
    job = common.backend().submit(key, "UMAP layout", E.layout_remote(emb, model_keys, request_key),
                                  owner=session_state().id)
    return (job.result if job.finished_ok else None), job


def layout_ui(emb: E.Embeddings, keys: dict[str, str], request_key: str | None, method: str) -> tuple:
    """The layout to draw and how to name it, and the UMAP job to poll (PCA is shown while UMAP computes)."""
    pca = E.cached_layout(emb, "pca", keys, request_key)
    if method != "UMAP":
        return pca, "PCA layout", None
    umap, job = umap_layout(emb, keys, request_key)
    if umap is not None:
        return umap, "UMAP layout" if job is not None else "UMAP layout (cached with the run)", job
    if job.state == "failed":
        st.error(f"UMAP failed ({job.error}); showing PCA.")
    else:
        st.caption("Showing PCA while UMAP computes in the background (the first UMAP in a worker process compiles "
                   "its code: about a minute).")
    return pca, "PCA layout", job


def forget_selection_ui(train_ids: list[int], dataset: Dataset, session: ForgetSession) -> None:
    """Forget the selected training samples (alone, or added to what is forgotten already)."""
    state = session_state().embeddings
    add = st.checkbox("Add to what is already forgotten", value=False, key="emb-add", disabled=session.current is None)
    if st.button(f"Forget the selection ({len(train_ids):,} training samples)", type="primary", key="emb-forget",
                 disabled=not train_ids, help="Only training samples can be forgotten; test images are skipped."):
        try:
            new = session.push(dataset, request_ids(dataset, train_ids), add_to_current=add)
        except ForgetRequestError as err:
            st.error(f"Nothing was forgotten: {err}")
        else:
            state.notice = (f"Now forgetting **{new.description}** ({len(new):,} training samples). The maps below "
                            "update; see the **Forget** page for oracles and methods and **Predictions** for the "
                            "effect.")
            st.rerun()
    if state.notice:
        st.success(state.notice)
        state.notice = None


def selection_ui(emb: E.Embeddings, dataset: Dataset, session: ForgetSession) -> list[str]:
    """The selected samples: per-class counts, forget and download buttons, thumbnails; returns their keys."""
    state = session_state().embeddings
    view = selection_view(state.selection, emb, dataset, session.current, GRID_LIMIT)
    st.subheader(f"Selection: {len(view.keys):,} samples")
    if not view.keys:
        st.caption("Draw a lasso or a box on any panel (or click a point) to see the samples here.")
        return []
    left, right = st.columns([1, 3])
    with left:
        st.dataframe(pd.DataFrame(view.counts), hide_index=True, width="stretch")
        forget_selection_ui(view.train_ids, dataset, session)
        st.download_button("Download the selection (CSV)", to_csv(view.table), "selection.csv", "text/csv",
                           key="emb-csv")
        if st.button("Clear selection", key="emb-clear"):
            state.selection = []
            st.rerun()
    with right:
        st.caption(view.legend)
        st.html(thumbnails_html(view.images, view.captions, view.thumbnail_keys, size=64, grid="selection"))
    return view.keys


def spm_ui(view: SampleView, dataset: Dataset, bars) -> None:
    """Why an SPM prediction changed: prototype scores, and the kNN supporters that deletion removed."""
    names, why = dataset.class_names, view.why
    st.markdown(f"**SPM prototype scores** — predicted *{names[why['pred_before']]}* before deletion, "
                f"*{names[why['pred_after']]}* after. A class whose prototype lost samples moves its score; a "
                "forgotten class has no prototype (no score, probability 0).")
    left, right = st.columns([3, 2])
    left.dataframe(pd.DataFrame(view.scores), hide_index=True, width="stretch",
                   column_config={c: st.column_config.NumberColumn(format="%.3f")
                                  for c in ("score_before", "score_after", "prob_before", "prob_after")})
    right.plotly_chart(bars, width="stretch", key="emb-probs")
    st.markdown(f"**kNN mode: the training samples that supported it** — predicted "
                f"*{names[why['knn_pred_before']]}* before, *{names[why['knn_pred_after']]}* after; "
                f"{len(why['removed'])} supporter(s) were deleted (red border).")
    for col, part, title in zip(st.columns(2), ("knn_before", "knn_after"), ("before deletion", "after deletion")):
        support = why[part][:16]
        col.markdown(title)
        col.html(thumbnails_html([dataset.x_train[s["id"]] for s in support],
                                 [f"{names[s['label']]} w={s['weight']:.2f}" for s in support],
                                 [f"train:{s['id']}" for s in support], size=48,
                                 marked=[f"train:{i}" for i in why["removed"]], grid=part))


def sample_ui(keys: list[str], emb: E.Embeddings, dataset: Dataset, request: ForgetRequest | None,
              trained: bundle.TrainedModel, unlearned: Classifier | None) -> None:
    """One selected sample: its nearest held training samples per model, and its predicted probabilities."""
    st.subheader("One sample: neighbours and why its prediction changed")
    if not keys:
        st.caption("Click a point (or select some) to inspect it.")
        return
    focus = st.selectbox("Sample", keys, key="emb-focus", help="Click a single point on the map to pick it here.")
    original = trained.classifier
    view = sample_view(focus, emb, dataset, request, original, unlearned,
                       common.original_index(trained.key, original, dataset), NEIGHBOURS)
    names = dataset.class_names
    cols = st.columns([1, 4])
    image = view.image[0] if view.image.shape[0] == 1 else view.image.transpose(1, 2, 0)
    cols[0].image(np.clip(image, 0, 1), caption=f"{focus}: {names[view.label]}", width=96)
    with cols[1]:
        for panel, (name, found) in zip(st.columns(len(view.neighbours)), view.neighbours.items()):
            panel.markdown(f"**Nearest training samples, {name} model** (FAISS, L2 in its feature space)")
            panel.html(thumbnails_html([dataset.x_train[n.id] for n in found],
                                       [f"train:{n.id} {names[n.label]} d={n.distance:.2f}" for n in found],
                                       [f"train:{n.id}" for n in found], size=56, grid=f"neighbours-{name}"))
    bars = charts.probability_bars(view.probs, names)
    if view.why is not None:
        spm_ui(view, dataset, bars)
        return
    st.markdown("**Predicted probabilities** for this sample from each model.")
    st.plotly_chart(bars, width="stretch", key="emb-probs")
    if unlearned is not None:
        st.caption("Prototype scores and supporting training samples are shown for SPM models.")
