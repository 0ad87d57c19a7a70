"""Unlearning Explorer: pick what to forget, and see what changed against a model retrained without it."""

from pathlib import Path

import streamlit as st

from pages.sidebar import sidebar_ui
from pages.state import session_state

HERE = Path(__file__).parent
PAGES = [
    ("pages/models.py", "Models", ":material/model_training:"),
    ("pages/forget.py", "Forget", ":material/delete_sweep:"),
    ("pages/predictions.py", "Predictions", ":material/compare_arrows:"),
    ("pages/embeddings.py", "Embeddings", ":material/scatter_plot:"),
    ("pages/retrieval.py", "Retrieval", ":material/manage_search:"),
    ("pages/runs.py", "Runs", ":material/table_chart:"),
]


def main() -> None:
    st.set_page_config(page_title="Unlearning Explorer", page_icon="assets/icon.png", layout="wide")
    pages = {path: st.Page(path, title=title, icon=icon) for path, title, icon in PAGES if (HERE / path).is_file()}
    navigation = st.navigation(list(pages.values()))
    st.sidebar.title("Unlearning Explorer")
    state = session_state()
    state.dataset = sidebar_ui()
    state.sidebar_drawn = True
    goto, state.return_to = state.return_to, None  # a page opened by its URL before app.py ran
    if goto in pages:
        st.switch_page(pages[goto])
    navigation.run()


main()
