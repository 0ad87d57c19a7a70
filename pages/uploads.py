"""The user's own data on the Models page: an image-folder zip, a .npz or CIFAR-10 batches, for this session."""

import numpy as np
import streamlit as st

from core.data import load_user_data
from core.errors import InputError
from pages.state import session_state

UPLOAD_TYPES = ["zip", "npz", "gz", "tar"]
HELP = ("A **zip of an image folder** (one sub-folder per class), a **.npz** with arrays `x` and `y` (or `x_train`, "
        "`y_train`, `x_test`, `y_test`; images as (N, H, W), (N, H, W, C) or (N, C, H, W)), or **CIFAR-10's python "
        "batches** (`cifar-10-python.tar.gz`). Nothing in it is ever unpickled or run. It stays in this browser "
        "session: no other session sees it.")


def own_data_ui() -> None:
    """Upload a dataset for this browser session; once loaded it becomes the sidebar's dataset."""
    with st.expander("Use your own data"):
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
