"""Unlearning Explorer: pick what to forget, and see what changed against a model retrained without it."""

import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).parent
# Every open page runs its script in a thread of this one process, and the event loop that sends their output to
# the browsers needs the GIL again after each message. Python makes a busy thread hand the GIL over every 5 ms by
# default; with 20 pages rerunning at once the loop then waited seconds to send results already computed
# (bench/classroom.py, server_p95_s). At 1 ms it gets the GIL back sooner, for a little more switching.
GIL_SWITCH_INTERVAL_S = 0.001
PAGES = [
    ("pages/models.py", "Models", ":material/model_training:"),
    ("pages/forget.py", "Forget", ":material/delete_sweep:"),
    ("pages/predictions.py", "Predictions", ":material/compare_arrows:"),
    ("pages/embeddings.py", "Embeddings", ":material/scatter_plot:"),
    ("pages/retrieval.py", "Retrieval", ":material/manage_search:"),
    ("pages/generate.py", "Generate", ":material/auto_awesome:"),
    ("pages/runs.py", "Runs", ":material/table_chart:"),
]


def open_models() -> None:
    """/models: the Models page is the default page, served at "/" (a link's ?dataset=&classes= kept)."""
    st.switch_page(PAGES[0][0], query_params=st.query_params.to_dict())


def main() -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    st.set_page_config(page_title="Unlearning Explorer", page_icon="assets/icon.png", layout="wide")
    pages = {path: st.Page(path, title=title, icon=icon) for path, title, icon in PAGES if (HERE / path).is_file()}
    # The default page is served at "/" but keeps its own pathname; it moves aside so that /models opens the
    # Models page through a hidden alias, as every other page opens by its name.
    pages[PAGES[0][0]] = st.Page(PAGES[0][0], title=PAGES[0][1], icon=PAGES[0][2], url_path="start", default=True)
    alias = st.Page(open_models, title=PAGES[0][1], url_path="models", visibility="hidden")
    # The navigation is drawn here as links: Streamlit's own sidebar navigation is off (.streamlit/config.toml),
    # because on a new server its first run listed every file of pages/ (common.py, widgets.py...) as a page
    # until this script named its own.
    navigation = st.navigation([*pages.values(), alias], position="hidden")
    for page in pages.values():
        st.sidebar.page_link(page)
    st.sidebar.divider()
    from pages.sidebar import forgetting_sidebar_ui, jobs_sidebar_ui, sidebar_ui
    from pages.state import session_state

    st.sidebar.title("Unlearning Explorer")
    state = session_state()
    state.dataset = sidebar_ui()
    state.sidebar_drawn = True
    goto, state.return_to = state.return_to, None  # a page opened by its URL before app.py ran
    if goto in pages:
        st.switch_page(pages[goto], query_params=st.query_params.to_dict())
    navigation.run()
    # The Forget page reruns without the sidebar (a fragment): it names the request itself, and shows its models'
    # loading itself, so the sidebar leaves both out there rather than show them as they were at the last full run.
    on_forget = navigation.url_path == "forget"
    if not on_forget:
        forgetting_sidebar_ui()  # after the page, so that a request made on it shows at once
    jobs_sidebar_ui(list_loads=not on_forget)  # after the page, so that the jobs it has just started are listed


main()
