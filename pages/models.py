"""Models: train or load the original models of the chosen dataset, and see how good they are."""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core import bundle, workflow
from core.data import DataError, load_npz
from core.models import get_model_kind, list_model_kinds
from pages.common import (
    class_label,
    job_status_ui,
    model_job,
    page_dataset,
    poll_while_active,
    recipe_note,
    warm_job,
)


def own_data_ui() -> None:
    """Upload a .npz for this browser session; it becomes the sidebar's dataset."""
    with st.expander("Use your own data"):
        st.markdown("Upload a `.npz` with arrays `x` and `y` (or `x_train`, `y_train`, `x_test`, `y_test`); "
                    "images as (N, H, W), (N, H, W, C) or (N, C, H, W). It stays in this browser session.")
        upload = st.file_uploader("Dataset file", type=["npz"])
        name = st.text_input("Name", value="my-data")
        if upload is not None and st.button("Use this dataset"):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "data.npz"
                path.write_bytes(upload.getvalue())
                try:
                    own = load_npz(path, name=f"upload:{name}")
                except DataError as err:
                    st.error(f"This file cannot be used: {err}")
                else:
                    st.session_state.setdefault("user_datasets", {})[own.name] = own
                    st.session_state["pending_dataset"] = own.name
                    st.success(f"Loaded {own.num_train:,} training images in {own.num_classes} classes "
                               f"({np.bincount(own.y_train).min()} in the smallest class).")
                    st.rerun()


st.header("Models")
dataset = page_dataset(__file__, required=False)
if dataset is None:
    st.warning("No dataset is loaded: pick another one in the sidebar or upload your own below.")
    own_data_ui()
    st.stop()

st.markdown(
    "Every model is trained once on the full training set and stored; the next start loads it. "
    "**By-design** models (SPM, MUNKEY) forget by editing a memory of training samples; the **parametric** "
    "network is what post-hoc methods (DAMP, fine-tuning, ...) edit.")

small = dataset.num_train <= 5000
jobs = []
FIRST = ("parametric", "spm")  # queued first: the models every page uses
for kind in sorted(list_model_kinds(), key=lambda k: (k not in FIRST, FIRST.index(k) if k in FIRST else 0)):
    spec = get_model_kind(kind)
    with st.container(border=True):
        st.subheader(f"{kind} {'· by design' if spec.by_design else ''}")
        st.caption(f"{spec.description} · recipe on *{dataset.name}*: {recipe_note(dataset, kind)}")
        stored = bundle.is_available(kind, dataset)
        job = model_job(kind, dataset, start=False)
        if job is None and (stored or (small and kind in FIRST)):  # loading is instant; tiny sets train in seconds
            job = model_job(kind, dataset)
        if job is None or job.state in ("failed", "cancelled"):
            label = "Load" if stored else "Train"
            if st.button(f"{label} {kind}", key=f"train-{kind}", type="primary"):
                model_job(kind, dataset, asked=True)
                st.rerun()
        jobs.append(job)
        if job_status_ui(job):
            trained = job.result
            if spec.by_design:
                warm_job(kind, dataset, trained)
            meta = trained.meta
            cols = st.columns(3)
            cols[0].metric("Test accuracy", f"{meta.get('test_acc', float('nan')):.2f}%",
                           help="% of held-out test images classified correctly.")
            train_s = workflow.train_seconds(trained)
            cols[1].metric("Training time", f"{train_s:.0f} s" if train_s else "n/a",
                           help="Wall-clock time of the training run that produced these weights.")
            cols[2].metric("Training images", f"{meta.get('num_train_ids', dataset.num_train):,}")
            st.caption(f"Stored as `{trained.key}` (a content hash of kind, configs and data) · "
                       f"data `{meta.get('dataset_fingerprint', '')}`")
            probs = trained.classifier.split_proba(dataset, "test")
            pred = probs.argmax(1)
            per_class = [(pred[dataset.y_test == c] == c).mean() * 100 for c in range(dataset.num_classes)]
            st.bar_chart(pd.DataFrame({"class": [class_label(dataset, c) for c in range(dataset.num_classes)],
                                       "test accuracy %": per_class}), x="class", y="test accuracy %", height=220)
poll_while_active(jobs)

own_data_ui()
