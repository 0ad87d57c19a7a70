"""The user's own data on the Models page: an image-folder zip, a .npz or CIFAR-10 batches, for this session."""

import numpy as np
import streamlit as st

from core.data import Dataset, load_user_data
from core.errors import InputError
from core.models import list_model_kinds
from core.validate import checkpoint_model
from pages.state import session_state

UPLOAD_TYPES = ["zip", "npz", "gz", "tar"]
HELP = ("A **zip of an image folder** (one sub-folder per class), a **.npz** with arrays `x` and `y` (or `x_train`, "
        "`y_train`, `x_test`, `y_test`; images as (N, H, W), (N, H, W, C) or (N, C, H, W)), or **CIFAR-10's python "
        "batches** (`cifar-10-python.tar.gz`). Nothing in it is ever unpickled or run. It stays in this browser "
        "session: no other session sees it.")


def own_data_ui() -> None:
    """Upload a dataset for this browser session; once loaded it becomes the sidebar's dataset."""
    with st.expander("Use your own data", key="own-data"):
        st.markdown(HELP)
        upload = st.file_uploader("Dataset file", type=UPLOAD_TYPES, key="own-data-file")
        name = st.text_input("Name", value="my-data", key="own-data-name")
        if upload is None or not st.button("Use this dataset", key="own-data-go"):
            return
        with st.spinner(f"Reading {upload.name}..."):
            try:
                loaded = load_user_data(upload.getvalue(), source_name=upload.name, name=f"upload:{name.strip()}")
            except InputError as err:
                st.error(f"Nothing was loaded: {err}")
                return
        own = loaded.dataset
        state = session_state()
        state.uploads[own.name] = own
        state.dataset_name = own.name
        for note in loaded.notes:
            st.warning(note)
        st.success(f"Loaded {own.num_train:,} training images in {own.num_classes} classes "
                   f"({int(np.bincount(own.y_train).min())} in the smallest class).")
        if not loaded.notes:
            st.rerun()


def checkpoint_ui(dataset: Dataset) -> None:
    """Upload weights (safetensors) for a registered architecture: checked strictly, then this session's
    pages use them instead of the shared original of that kind (evaluate, forget, compare with the oracles)."""
    state = session_state()
    with st.expander("Use your own weights", key="own-weights"):
        st.markdown(f"A **safetensors** file holding every tensor of a model of the chosen kind, built for "
                    f"*{dataset.name}* (names and shapes must match; nothing is unpickled). Oracles are still this "
                    "project's recipe retrained without the forgotten samples. It stays in this browser session.")
        kind = st.selectbox("Architecture", list_model_kinds(), key="own-weights-kind")
        upload = st.file_uploader("Weights", type=["safetensors"], key="own-weights-file")
        slot = f"{dataset.fingerprint()}:{kind}"
        if slot in state.checkpoints and st.button("Go back to the shared original", key="own-weights-drop"):
            del state.checkpoints[slot]
            st.rerun()
        if upload is None or not st.button("Use these weights", key="own-weights-go"):
            return
        with st.spinner(f"Checking {upload.name} and measuring its test accuracy..."):
            try:
                state.checkpoints[slot] = checkpoint_model(upload.getvalue(), kind, dataset, upload.name)
            except InputError as err:
                st.error(f"These weights were not loaded: {err}")
                return
        st.rerun()
