"""Runs: every stored method run in one table, filtered, plotted method against method, and exported as CSV."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import charts, runs_db, store
from core.data import Dataset
from pages.common import forget_session, own_inputs, scored_runs, session_runs
from pages.sidebar import page_dataset
from pages.state import session_state

MAKING_RUNS = ("Runs are made on the Forget page (its post-hoc methods: each finished run is stored here once it "
               "has been scored against its oracles) or by a sweep from the command line, for example:")
ALL_MODELS = "all models"
ALL_REQUESTS = "all requests"


def empty_ui(dataset_name: str | None, elsewhere: int) -> None:
    """What to do when no run fits: how to make runs, or where the stored ones are."""
    if elsewhere:
        st.info(f"No run on **{dataset_name}** is stored yet; {elsewhere:,} run(s) on other datasets are: "
                f"tick *All datasets* above, or pick their dataset in the sidebar. {MAKING_RUNS}")
    else:
        st.info(f"No run is stored yet. {MAKING_RUNS}")
    st.code(f"python -m core sweep --dataset {dataset_name or 'digits'} --model parametric --methods ft,ga "
            "--requests class:0 --seeds 0-2", language="bash", wrap_lines=True)
    st.caption("Each method run of the sweep, one per seed, becomes a row here with its metrics, timings, "
               "configuration and hashes.")


def session_runs_ui(dataset: Dataset) -> None:
    """Score and store this session's finished method runs on ``dataset`` (every request of its history) against
    the oracles that have finished, so that they are listed here without a visit to the Predictions page first
    (no oracle is started here); say which have none yet."""
    requests = {r.key(): r for r in forget_session(dataset).history if session_runs(r)}
    if not requests:
        return
    with st.spinner("Scoring this session's finished method runs against their oracles"):
        runs = [run for request in requests.values() for run in scored_runs(dataset, request, start=False)]
    waiting = [run for run in runs if run.comparison is None and not own_inputs(run, dataset)]
    if waiting:
        st.caption(f"{len(waiting)} of this session's finished runs ({', '.join(sorted({r.method for r in waiting}))}) "
                   "have no finished oracle yet: each is listed here once one of its oracles has finished.")


def scope_ui(dataset_name: str | None) -> str | None:
    """The dataset whose runs are shown: the sidebar's, or None (all) when none is loaded or the box is ticked."""
    if dataset_name is None:
        st.caption("No dataset is loaded in the sidebar: showing the runs on every dataset.")
        return None
    everywhere = st.checkbox("All datasets", key="runs-all-datasets",
                             help=f"Show the runs on every dataset, not only on {dataset_name}.")
    return None if everywhere else dataset_name


def filters_ui(runs: pd.DataFrame) -> dict:
    """Model, methods, request and status pickers over the runs in scope; returns ``runs_db.query`` filters."""
    cols = st.columns([1, 2, 2, 1])
    model = cols[0].selectbox("Model", [ALL_MODELS, *sorted(runs["model"].unique())], key="runs-model")
    present = sorted(runs["method"].unique())
    methods = cols[1].multiselect("Methods", present, default=present, key="runs-methods")
    requests = runs.drop_duplicates("request_hash").set_index("request_hash")
    labels = {h: f"{r.request_desc} ({r.dataset})" if runs["dataset"].nunique() > 1 else r.request_desc
              for h, r in requests.iterrows()}
    request = cols[2].selectbox("Request", [ALL_REQUESTS, *labels], key="runs-request",
                                format_func=lambda h: labels.get(h, h))
    failed = cols[3].checkbox("Failed runs too", key="runs-failed",
                              help="Also list runs that stopped with an error (their error is in the table).")
    return {"model": None if model == ALL_MODELS else model, "methods": methods,
            "request_hash": None if request == ALL_REQUESTS else request, "status": None if failed else "done"}


def table_ui(runs: pd.DataFrame, dataset_name: str | None) -> None:
    """The runs as a sortable table (click a column's header), and its CSV export."""
    st.dataframe(runs_db.shown(runs), hide_index=True, width="stretch", key="runs-table",
                 column_config={"seed": st.column_config.NumberColumn("seed", format="%d")})
    st.download_button("Export this table (CSV)", runs_db.to_csv(runs), f"runs-{dataset_name or 'all'}.csv",
                       "text/csv", key="runs-download")


def default_axes(columns: list[str]) -> tuple[str, str]:
    x = next((c for c in ("method_s", "seconds") if c in columns), columns[0])
    y = next((c for c in ("AvgGap",) if c in columns), next((c for c in columns if c != x), x))
    return x, y


def axes_ui(columns: list[str]) -> tuple[str, str]:
    """The chart's x and y metric pickers (defaults: the method's time against AvgGap)."""
    x, y = default_axes(columns)
    cols = st.columns(2)
    x = cols[0].selectbox("x", columns, index=columns.index(x), key="runs-x")
    y = cols[1].selectbox("y", columns, index=columns.index(y), key="runs-y")
    return x, y


def group_columns(runs: pd.DataFrame) -> list[str]:
    """Mean ± sd per method and request, and per dataset or model too when the table holds several."""
    return ["method", "request_desc"] + [c for c in ("dataset", "model") if runs[c].nunique() > 1]


def comparison_ui(runs: pd.DataFrame) -> None:
    """Methods against each other on two chosen metrics."""
    columns = runs_db.value_columns(runs)
    if not columns:
        st.caption("These runs hold no metric to plot.")
        return
    x, y = axes_ui(columns)
    by = group_columns(runs)
    stats = runs_db.summary(runs, x, y, by=tuple(by))
    st.plotly_chart(charts.runs_scatter(runs, stats, x, y, by), width="stretch", key="runs-scatter")
    st.caption("One small point per run (seed). The diamond is the mean of a method's runs on one request, its "
               "bars one standard deviation either way (none with a single run).")
    with st.expander("Mean and sd per method and request"):
        st.dataframe(runs_db.shown(stats), hide_index=True, width="stretch")


def main() -> None:
    st.header("Runs")
    st.caption("Every stored method run: its metrics, timings and provenance, for comparing methods over seeds.")
    dataset = page_dataset(__file__, required=False)
    dataset_name = dataset.name if dataset is not None else None
    state = session_state()
    if state.uploads or state.checkpoints:
        st.caption("Runs on your own data or weights are not listed here: they stay in this browser session, on the "
                   "Predictions page's *Runs and audit* tab (with its CSV export).")
    if dataset is not None:
        session_runs_ui(dataset)
    try:
        stored = runs_db.query(status=None)
        if stored.empty:
            empty_ui(dataset_name, 0)
            return
        scope = scope_ui(dataset_name)
        in_scope = stored if scope is None else stored[stored["dataset"] == scope]
        if in_scope.empty:
            empty_ui(scope, len(stored))
            return
        filters = filters_ui(in_scope)
        runs = runs_db.query(dataset=scope, **filters)
    except store.StoreError as err:
        st.error(str(err))
        return
    if runs.empty:
        st.info("No run fits these filters.")
        return
    st.caption(f"{len(runs):,} run(s) of {len(in_scope):,} stored" + (f" on {scope}" if scope else ""))
    table_ui(runs, scope)
    st.subheader("Methods against each other")
    comparison_ui(runs)


main()
