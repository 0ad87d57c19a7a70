"""AppTest of the Runs page: the empty state, the table and its filters, the chart, the CSV export."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import runs_db
from core.runs_db import RunRow

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/runs.py"


@pytest.fixture(autouse=True)
def home(monkeypatch, tmp_path):
    """Runs of this test only (other tests of the session store runs too); models are not needed here."""
    monkeypatch.setenv("UE_HOME", str(tmp_path))
    return tmp_path


def store_runs() -> None:
    """ft and ga, three seeds each, on digits class 0; one run on mnist-5k; one failed run."""
    for seed in range(3):
        for method, gap in (("ft", 1.0 + seed), ("ga", 4.0)):
            runs_db.upsert(RunRow(
                run_key=f"{method}-{seed}", dataset="digits", model="parametric", method=method,
                request_hash="req-c0", request_desc="class 0", request_kind="class", seed=seed,
                metrics={"TA": 90.0 - seed, "FA": 3.0, "AvgGap": gap}, timings={"method_s": 0.5 + seed},
                oracle_seeds=[1, 2]))
    runs_db.upsert(RunRow(run_key="ft-mnist", dataset="mnist-5k", model="parametric", method="ft",
                          request_hash="req-m1", request_desc="class 1", seed=0, metrics={"AvgGap": 9.0},
                          timings={"method_s": 9.0}))
    runs_db.upsert(RunRow(run_key="ga-failed", dataset="digits", model="parametric", method="ga",
                          request_hash="req-c0", request_desc="class 0", seed=3, status="failed", error="diverged"))


def runs_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(PAGE).run()  # straight to the page: no model is trained for it
    assert not at.exception, at.exception
    return at


def shown(at: AppTest) -> list[str]:
    return sorted(at.dataframe[0].value["run_key"])


def chart(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def values(data) -> list[float]:
    """A trace's numbers: plotly writes arrays as base64 ({'dtype', 'bdata'}) or as lists."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def test_no_runs_says_how_to_make_them():
    at = runs_page()
    assert any("No run is stored yet" in i.value and "Forget page" in i.value for i in at.info)
    assert any(c.value.startswith("python -m core sweep --dataset digits ") for c in at.code)  # the sidebar's
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["dataset"] = "mnist-5k"  # a link to the page on another dataset
    at.switch_page(PAGE).run()
    assert any(c.value.startswith("python -m core sweep --dataset mnist-5k ") for c in at.code)
    assert not at.dataframe and not at.get("download_button")


def test_runs_only_on_another_dataset_point_there():
    runs_db.upsert(RunRow(run_key="x", dataset="mnist-5k", model="parametric", method="ft", metrics={"TA": 1.0}))
    at = runs_page()
    assert any("No run on **digits**" in i.value and "1 run(s) on other datasets" in i.value for i in at.info)
    at.checkbox(key="runs-all-datasets").check().run()
    assert not at.exception and shown(at) == ["x"]


def test_table_filters_chart_and_export():
    store_runs()
    at = runs_page()
    assert shown(at) == ["ft-0", "ft-1", "ft-2", "ga-0", "ga-1", "ga-2"]  # digits (the sidebar's), done
    table = at.dataframe[0].value
    assert {"TA", "FA", "AvgGap", "method_s", "seed"} <= set(table.columns)
    assert len(at.get("download_button")) == 1

    # the chart: method time against AvgGap by default, per-seed points and a mean ± sd marker per method
    assert (at.selectbox(key="runs-x").value, at.selectbox(key="runs-y").value) == ("method_s", "AvgGap")
    figure = chart(at)
    means = {t["legendgroup"]: t for t in figure["data"] if t["name"].endswith("mean ± sd")}
    assert values(means["ft"]["y"]) == [2.0] and values(means["ft"]["error_y"]["array"]) == [1.0]
    assert values(means["ga"]["y"]) == [4.0] and values(means["ga"]["error_y"]["array"]) == [0.0]
    points = [t for t in figure["data"] if not t["name"].endswith("mean ± sd")]
    assert sorted(len(values(t["x"])) for t in points) == [3, 3]

    at.selectbox(key="runs-y").set_value("TA").run()
    assert chart(at)["layout"]["yaxis"]["title"]["text"] == "TA"

    at.multiselect(key="runs-methods").unselect("ga").run()
    assert not at.exception and shown(at) == ["ft-0", "ft-1", "ft-2"]
    assert any("3 run(s) of 7 stored on digits" in c.value for c in at.caption)

    at.multiselect(key="runs-methods").select("ga").run()
    at.checkbox(key="runs-failed").check().run()
    assert "ga-failed" in shown(at)
    at.checkbox(key="runs-all-datasets").check().run()
    assert "ft-mnist" in shown(at) and len(shown(at)) == 8
    at.selectbox(key="runs-request").set_value("req-m1").run()
    assert not at.exception and shown(at) == ["ft-mnist"]


def test_a_filter_that_matches_nothing_says_so():
    store_runs()
    at = runs_page()
    at.multiselect(key="runs-methods").set_value([]).run()
    assert not at.exception and not at.dataframe
    assert any("No run fits these filters" in i.value for i in at.info)


def test_a_corrupt_runs_file_is_reported_not_raised(home):
    (home / "runs.sqlite").write_bytes(b"not a database " * 100)
    at = runs_page()
    assert any("runs.sqlite" in e.value and "move it away" in e.value for e in at.error)


def test_without_a_dataset_the_page_shows_every_dataset(monkeypatch):
    import pages.common
    from core.data import DataError
    from pages import state

    def broken(name):
        raise DataError(f"{name}: no files found (test)")

    store_runs()
    monkeypatch.setattr(pages.common, "load_dataset", broken)
    pages.common.cached_dataset.clear()  # loaded by another test of this process
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[state.KEY] = state.SessionState(dataset_name="mnist-5k")
    at.switch_page(PAGE).run()
    assert not at.exception
    assert any("showing the runs on every dataset" in c.value for c in at.caption)
    assert "ft-mnist" in shown(at) and len(shown(at)) == 7
