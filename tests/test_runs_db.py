"""The SQLite runs table: round trips, filters, per-method summaries, CSV, concurrent writers, broken files."""

import io
import math
import sqlite3
import threading

import pandas as pd
import pytest

from core import runs_db, store
from core.runs_db import RunRow


@pytest.fixture(autouse=True)
def home(monkeypatch, tmp_path):
    """A store of its own for each test: other tests of the session write runs too."""
    monkeypatch.setenv("UE_HOME", str(tmp_path))
    return tmp_path


def make_row(key: str, method: str = "ft", seed: int | None = 0, **changes) -> RunRow:
    fields = dict(
        run_key=key, dataset="digits", model="parametric", method=method, config_hash="cfg-" + method,
        config={"epochs": 2, "lr": 0.01}, request_hash="req-class0", request_desc="class 0", request_kind="class",
        seed=seed, metrics={"TA": 95.0, "RA": 97.5, "FA": 1.25, "MIA": 0.5, "AvgGap": 2.0},
        timings={"method_s": 0.75, "oracle_s": 3.0, "wall_s": 4.0}, weights_sha256="ab" * 32,
        versions={"torch": "2.x", "python": "3.11"}, oracle_seeds=[1, 2], oracle_k=2, verdict="looks unseen",
        status="done", error=None)
    fields.update(changes)
    return RunRow(**fields)


def sweep_rows() -> list[RunRow]:
    """Two methods x three seeds on class 0, one on another request, model and dataset each, and a failure."""
    rows = []
    for seed in range(3):
        rows.append(make_row(f"ft-{seed}", "ft", seed, metrics={"AvgGap": 1.0 + seed, "TA": 90.0},
                             timings={"method_s": 2.0 * seed}))
        rows.append(make_row(f"ga-{seed}", "ga", seed, metrics={"AvgGap": 5.0, "TA": 80.0 + seed},
                             timings={"method_s": 1.0}))
    rows.append(make_row("ft-random", "ft", 0, request_hash="req-random", request_desc="random 10%",
                         request_kind="random"))
    rows.append(make_row("spm-0", "spm-delete", 0, model="spm"))
    rows.append(make_row("ft-mnist", "ft", 0, dataset="mnist-5k"))
    rows.append(make_row("ga-failed", "ga", 3, status="failed", error="diverged", metrics={}, timings={}))
    return rows


def test_upsert_then_get_gives_the_same_row_back():
    row = make_row("run-1", seed=None)
    runs_db.upsert(row)
    back = runs_db.get("run-1")
    assert back is not None and back.created_at
    row.created_at = back.created_at
    assert back == row
    assert back.seed is None and back.oracle_seeds == [1, 2] and back.config == {"epochs": 2, "lr": 0.01}
    assert back.oracle_k == 2 and back.verdict == "looks unseen"
    assert runs_db.get("no-such-run") is None


def test_upsert_replaces_the_row_with_the_same_key():
    runs_db.upsert(make_row("run-1", metrics={"TA": 10.0}))
    runs_db.upsert(make_row("run-1", metrics={"TA": 20.0}, status="failed", error="boom"))
    assert runs_db.get("run-1").metrics == {"TA": 20.0}
    assert runs_db.get("run-1").error == "boom"
    assert len(runs_db.query(status=None)) == 1


def test_the_file_is_wal_mode_with_a_schema_version(home):
    runs_db.upsert(make_row("run-1"))
    assert runs_db.db_path() == home / "runs.sqlite"
    with sqlite3.connect(home / "runs.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == runs_db.SCHEMA_VERSION


def test_query_filters_narrow_the_runs():
    for row in sweep_rows():
        runs_db.upsert(row)

    def keys(**filters) -> set[str]:
        return set(runs_db.query(**filters)["run_key"])

    done = {r.run_key for r in sweep_rows() if r.status == "done"}
    assert keys() == done  # failed runs only on request
    assert keys(status=None) == done | {"ga-failed"}
    assert keys(status="failed") == {"ga-failed"}
    assert keys(dataset="mnist-5k") == {"ft-mnist"}
    assert keys(dataset="digits", model="spm") == {"spm-0"}
    assert keys(dataset="digits", methods=["ga"]) == {"ga-0", "ga-1", "ga-2"}
    assert keys(dataset="digits", model="parametric", methods=["ft"], request_hash="req-class0") == {
        "ft-0", "ft-1", "ft-2"}
    assert keys(request_hash="req-random") == {"ft-random"}
    assert keys(methods=[]) == set()


def test_query_has_a_column_per_metric_and_timing():
    runs_db.upsert(make_row("a", metrics={"TA": 90.0, "AvgGap": 1.5}, timings={"method_s": 0.25}))
    runs_db.upsert(make_row("b", metrics={"TA": 80.0, "speedup": 100.0, "seed": 7.0}, timings={"wall_s": 2.0}))
    df = runs_db.query().set_index("run_key")
    assert df.loc["a", "AvgGap"] == 1.5 and math.isnan(df.loc["b", "AvgGap"])
    assert df.loc["b", "speedup"] == 100.0 and df.loc["a", "method_s"] == 0.25 and df.loc["b", "wall_s"] == 2.0
    assert df.loc["b", "metrics.seed"] == 7.0 and df.loc["b", "seed"] == 0  # a clashing key keeps the scalar
    assert set(runs_db.value_columns(df.reset_index())) == {"TA", "AvgGap", "speedup", "metrics.seed", "method_s",
                                                            "wall_s"}
    assert set(runs_db.SCALAR_COLUMNS) <= set(df.reset_index().columns)


def test_an_empty_query_has_the_scalar_columns():
    empty = runs_db.query()
    assert empty.empty and list(empty.columns) == runs_db.SCALAR_COLUMNS
    runs_db.upsert(make_row("a"))
    assert list(runs_db.query(dataset="nothing").columns) == runs_db.SCALAR_COLUMNS


def test_summary_gives_mean_sd_and_count_per_method_and_request():
    for row in sweep_rows():
        runs_db.upsert(row)
    df = runs_db.query(dataset="digits", model="parametric")
    stats = runs_db.summary(df, "method_s", "AvgGap").set_index(["method", "request_desc"])
    ft = stats.loc[("ft", "class 0")]
    assert ft["n"] == 3
    assert ft["method_s_mean"] == pytest.approx(2.0) and ft["method_s_sd"] == pytest.approx(2.0)
    assert ft["AvgGap_mean"] == pytest.approx(2.0) and ft["AvgGap_sd"] == pytest.approx(1.0)
    ga = stats.loc[("ga", "class 0")]
    assert ga["n"] == 3 and ga["AvgGap_sd"] == 0 and ga["method_s_mean"] == 1.0
    one = stats.loc[("ft", "random 10%")]
    assert one["n"] == 1 and math.isnan(one["AvgGap_sd"])
    assert len(stats) == 3


def test_summary_counts_only_runs_that_have_both_values():
    runs_db.upsert(make_row("a", seed=0, metrics={"AvgGap": 1.0}, timings={"method_s": 1.0}))
    runs_db.upsert(make_row("b", seed=1, metrics={"AvgGap": 3.0}, timings={"method_s": 3.0}))
    runs_db.upsert(make_row("c", seed=2, metrics={"TA": 50.0}, timings={"method_s": 100.0}))
    stats = runs_db.summary(runs_db.query(), "method_s", "AvgGap")
    assert stats["n"].tolist() == [2] and stats["method_s_mean"].tolist() == [2.0]
    same = runs_db.summary(runs_db.query(), "AvgGap", "AvgGap")
    assert list(same.columns) == ["method", "request_desc", "AvgGap_mean", "AvgGap_sd", "n"]
    assert runs_db.summary(runs_db.query(dataset="nothing").assign(AvgGap=[]), "AvgGap", "AvgGap").empty
    with pytest.raises(ValueError, match="nope"):
        runs_db.summary(runs_db.query(), "nope", "AvgGap")


def test_csv_round_trips_through_pandas():
    for row in sweep_rows():
        runs_db.upsert(row)
    df = runs_db.query(status=None)
    back = pd.read_csv(io.BytesIO(runs_db.to_csv(df)))
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    for column in runs_db.value_columns(df) + ["seed"]:
        pd.testing.assert_series_equal(back[column].astype(float), df[column].astype(float), check_names=False)
    for column in ["run_key", "dataset", "method", "request_desc", "config_json", "versions_json", "oracle_seeds"]:
        assert back[column].tolist() == df[column].tolist()
    assert back.set_index("run_key").loc["ga-failed", "error"] == "diverged"


def test_the_shown_table_gives_each_value_four_significant_digits_and_leaves_the_rest():
    df = pd.DataFrame({"method": ["ga", "ft"], "RA": [93.82963, 91.72], "KL": [0.043612, float("nan")],
                       "speedup": [28444.37, 9.665014], "seed": pd.array([1, None], dtype="Int64")})
    shown = runs_db.shown(df)
    assert shown["RA"].tolist() == [93.83, 91.72] and shown["speedup"].tolist() == [28444, 9.665]
    assert shown["KL"].iloc[0] == 0.04361 and pd.isna(shown["KL"].iloc[1])
    assert shown["method"].tolist() == ["ga", "ft"] and shown["seed"].iloc[0] == 1
    assert df["RA"].iloc[0] == 93.82963  # the table itself (and its export) keeps the stored values


def test_writers_in_several_threads_lose_nothing():
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(25):
                runs_db.upsert(make_row(f"w{worker}-{i}", seed=i, metrics={"TA": float(worker)}))
                runs_db.query(methods=["ft"])  # readers beside the writers
        except BaseException as err:  # reported below, with the thread that raised it gone
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    df = runs_db.query()
    assert len(df) == 150 and df["run_key"].is_unique
    assert runs_db.get("w5-24").metrics == {"TA": 5.0}


@pytest.mark.parametrize("content", [b"this is not a database " * 200, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_a_corrupt_file_names_itself_and_says_to_move_it_away(home, content):
    (home / "runs.sqlite").write_bytes(content)
    for call in (lambda: runs_db.query(), lambda: runs_db.get("x"), lambda: runs_db.upsert(make_row("x"))):
        with pytest.raises(store.StoreError, match="move it away") as info:
            call()
        assert str(home / "runs.sqlite") in str(info.value)


def test_a_newer_schema_is_refused(home):
    runs_db.upsert(make_row("a"))
    with sqlite3.connect(home / "runs.sqlite") as conn:
        conn.execute(f"PRAGMA user_version = {runs_db.SCHEMA_VERSION + 1}")
    with pytest.raises(store.StoreError, match="newer"):
        runs_db.query()


def test_an_existing_database_without_the_table_is_migrated(home):
    with sqlite3.connect(home / "runs.sqlite") as conn:
        conn.execute("CREATE TABLE other (x)")
    runs_db.upsert(make_row("a"))
    assert runs_db.get("a") is not None


def test_a_version_1_table_gains_the_oracle_count_and_verdict_and_keeps_its_rows(home):
    with sqlite3.connect(home / "runs.sqlite") as conn:
        for statement in runs_db._MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO runs VALUES ('old', 'digits', 'parametric', 'ft', 'c', '{}', 'r', 'class 0', "
                     "'class', 0, '{\"TA\": 90.0}', '{}', '', '{}', '[0, 1]', 'done', NULL, '2026-01-01')")
    old = runs_db.get("old")
    assert old.metrics == {"TA": 90.0} and old.oracle_seeds == [0, 1] and old.oracle_k is None and old.verdict == ""
    runs_db.upsert(make_row("new"))
    table = runs_db.query().set_index("run_key")
    assert table.loc["new", "oracle_k"] == 2 and table.loc["new", "verdict"] == "looks unseen"
    assert pd.isna(table.loc["old", "oracle_k"])
    with sqlite3.connect(home / "runs.sqlite") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == runs_db.SCHEMA_VERSION == 2


def test_rows_with_wrong_values_are_refused():
    with pytest.raises(ValueError, match="request_kind"):
        make_row("a", request_kind="lasso")
    with pytest.raises(ValueError, match="status"):
        make_row("a", status="running")
    with pytest.raises(ValueError, match="TA"):
        make_row("a", metrics={"TA": "high"})
    assert math.isnan(make_row("a", metrics={"MIA": None}).metrics["MIA"])
