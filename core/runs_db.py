"""The runs table: one SQLite row per method run (metrics, timings, provenance), for comparing runs and sweeps.

The file is ``store.home() / "runs.sqlite"``. Every call opens its own short-lived connection, so threads of the
Streamlit process and a command-line sweep in another process can write at once: the database is in WAL mode
(readers never block the writer) and a writer waits up to ``BUSY_TIMEOUT_S`` for another one to finish.
``PRAGMA user_version`` holds the schema version; opening an older file migrates it in one transaction.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core import store

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 30.0  # a sweep writes one row at a time; 30 s covers a slow disk with room to spare
REQUEST_KINDS = ("class", "random", "ids")
STATUSES = ("done", "failed")

# Each schema version's statements, applied in order to a file whose user_version is below it.
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE IF NOT EXISTS runs (
            run_key TEXT PRIMARY KEY,
            dataset TEXT NOT NULL,
            model TEXT NOT NULL,
            method TEXT NOT NULL,
            config_hash TEXT NOT NULL,
            config_json TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            request_desc TEXT NOT NULL,
            request_kind TEXT NOT NULL CHECK (request_kind IN ('class', 'random', 'ids')),
            seed INTEGER,
            metrics_json TEXT NOT NULL,
            timings_json TEXT NOT NULL,
            weights_sha256 TEXT NOT NULL,
            versions_json TEXT NOT NULL,
            oracle_seeds TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
            error TEXT,
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS runs_dataset_model ON runs (dataset, model, method)",
        "CREATE INDEX IF NOT EXISTS runs_request ON runs (request_hash)",
    ],
    # how many oracles each comparison rested on, and its verdict
    2: [
        "ALTER TABLE runs ADD COLUMN oracle_k INTEGER",
        "ALTER TABLE runs ADD COLUMN verdict TEXT NOT NULL DEFAULT ''",
    ],
}

# The DataFrame columns that are not a metric or a timing, in display order. Metrics and timings (one column
# per key) go between IDENTITY and PROVENANCE.
IDENTITY_COLUMNS = ["run_key", "dataset", "model", "method", "request_desc", "seed", "status"]
PROVENANCE_COLUMNS = ["request_kind", "request_hash", "config_hash", "config_json", "weights_sha256",
                      "versions_json", "oracle_seeds", "oracle_k", "verdict", "error", "created_at"]
SCALAR_COLUMNS = IDENTITY_COLUMNS + PROVENANCE_COLUMNS


@dataclass
class RunRow:
    """One method run on one forget request, as stored in the runs table."""

    run_key: str
    dataset: str
    model: str
    method: str
    config_hash: str = ""
    config: dict = field(default_factory=dict)
    request_hash: str = ""
    request_desc: str = ""
    request_kind: str = "class"  # 'class' | 'random' | 'ids'
    seed: int | None = None  # the sweep's seed; None for a run made outside a sweep
    metrics: dict[str, float] = field(default_factory=dict)  # flat: TA, RA, FA, MIA, AvgGap, ...
    timings: dict[str, float] = field(default_factory=dict)  # seconds: method_s, oracle_s, eval_s, wall_s
    weights_sha256: str = ""
    versions: dict = field(default_factory=dict)
    oracle_seeds: list[int] = field(default_factory=list)  # the training seed of each oracle the run was judged by
    oracle_k: int | None = None  # how many oracles had finished (None: a row from before oracles were counted)
    verdict: str = ""  # evidence.verdict's: looks unseen, not forgotten, over-forgotten or inconclusive
    status: str = "done"  # 'done' | 'failed'
    error: str | None = None
    created_at: str = ""  # ISO 8601 (UTC); filled by upsert when empty

    def __post_init__(self) -> None:
        if self.request_kind not in REQUEST_KINDS:
            raise ValueError(f"request_kind must be one of {REQUEST_KINDS}, not {self.request_kind!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        self.metrics = _floats(self.metrics, "metrics")
        self.timings = _floats(self.timings, "timings")
        self.oracle_seeds = [int(s) for s in self.oracle_seeds]
        self.oracle_k = None if self.oracle_k is None else int(self.oracle_k)
        self.verdict = self.verdict or ""
        self.seed = None if self.seed is None else int(self.seed)


def _floats(values: dict, what: str) -> dict[str, float]:
    out = {}
    for name, value in values.items():
        if value is None:
            out[str(name)] = math.nan
            continue
        try:
            out[str(name)] = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what}[{name!r}] must be a number, not {value!r}") from err
    return out


def db_path() -> Path:
    return store.home() / "runs.sqlite"


def _store_error(file: Path, err: sqlite3.Error) -> store.StoreError:
    message = str(err)
    if isinstance(err, sqlite3.OperationalError) and ("locked" in message or "busy" in message):
        return store.StoreError(f"the runs table {file} stayed locked by another writer for more than "
                                f"{BUSY_TIMEOUT_S:.0f} s ({message}); try again")
    return store.StoreError(f"the runs table {file} is unreadable ({message}); move it away "
                            f"(e.g. to {file.name}.broken) and a new, empty one is made on the next run")


def _ensure_schema(conn: sqlite3.Connection, file: Path) -> None:
    """Bring the file to SCHEMA_VERSION (creating it when new); a newer schema is refused."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise store.StoreError(f"the runs table {file} has schema version {version}, newer than this program "
                               f"reads ({SCHEMA_VERSION}); update it, or move the file away")
    conn.execute("PRAGMA journal_mode=WAL")  # persistent in the file; cannot change inside a transaction
    conn.execute("BEGIN IMMEDIATE")  # one migrating writer at a time; the others wait, then see it done
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {max(version, SCHEMA_VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    """A connection for one call (autocommit: each statement is its own transaction); closed after."""
    file = db_path()
    try:
        conn = sqlite3.connect(file, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as err:
        raise _store_error(file, err) from err
    try:
        _ensure_schema(conn, file)
        yield conn
    except sqlite3.Error as err:
        raise _store_error(file, err) from err
    finally:
        conn.close()


def upsert(row: RunRow) -> None:
    """Insert ``row``, or replace the stored row with the same run_key."""
    created_at = row.created_at or datetime.now(UTC).isoformat(timespec="milliseconds")
    values = {
        "run_key": row.run_key, "dataset": row.dataset, "model": row.model, "method": row.method,
        "config_hash": row.config_hash, "config_json": json.dumps(row.config, sort_keys=True),
        "request_hash": row.request_hash, "request_desc": row.request_desc, "request_kind": row.request_kind,
        "seed": row.seed, "metrics_json": json.dumps(row.metrics), "timings_json": json.dumps(row.timings),
        "weights_sha256": row.weights_sha256, "versions_json": json.dumps(row.versions, sort_keys=True),
        "oracle_seeds": json.dumps(row.oracle_seeds), "oracle_k": row.oracle_k, "verdict": row.verdict,
        "status": row.status, "error": row.error,
        "created_at": created_at,
    }
    columns = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    with _connect() as conn:
        conn.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({marks})", values)


def _row_from_record(record: sqlite3.Row, file: Path) -> RunRow:
    try:
        return RunRow(
            run_key=record["run_key"], dataset=record["dataset"], model=record["model"], method=record["method"],
            config_hash=record["config_hash"], config=json.loads(record["config_json"]),
            request_hash=record["request_hash"], request_desc=record["request_desc"],
            request_kind=record["request_kind"], seed=record["seed"],
            metrics=json.loads(record["metrics_json"]), timings=json.loads(record["timings_json"]),
            weights_sha256=record["weights_sha256"], versions=json.loads(record["versions_json"]),
            oracle_seeds=json.loads(record["oracle_seeds"]), oracle_k=record["oracle_k"],
            verdict=record["verdict"], status=record["status"], error=record["error"],
            created_at=record["created_at"])
    except (ValueError, TypeError, AttributeError) as err:  # json.JSONDecodeError is a ValueError
        raise store.StoreError(f"run {record['run_key']!r} in {file} is unreadable ({err}); move the file away "
                               "(a new, empty one is made on the next run)") from err


def _select(where: str = "", params: tuple = ()) -> list[RunRow]:
    with _connect() as conn:
        conn.row_factory = sqlite3.Row
        records = conn.execute(f"SELECT * FROM runs {where} ORDER BY created_at, run_key", params).fetchall()
    file = db_path()
    return [_row_from_record(r, file) for r in records]


def get(run_key: str) -> RunRow | None:
    """The stored row for ``run_key``, or None."""
    rows = _select("WHERE run_key = ?", (run_key,))
    return rows[0] if rows else None


def query(dataset: str | None = None, model: str | None = None, methods: list[str] | None = None,
          request_hash: str | None = None, status: str | None = "done") -> pd.DataFrame:
    """Stored runs matching every filter given (None: any), oldest first, as a table.

    Columns: IDENTITY_COLUMNS, then one float column per metric key and per timing key (in first-seen order;
    NaN where a run lacks it; a key that clashes with an earlier column is prefixed ``metrics.`` or
    ``timings.``), then PROVENANCE_COLUMNS (dicts and lists as JSON text). ``seed`` is a nullable integer.
    """
    clauses, params = [], []
    for column, value in (("dataset", dataset), ("model", model), ("request_hash", request_hash),
                          ("status", status)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if methods is not None:
        clauses.append(f"method IN ({', '.join('?' * len(methods))})" if methods else "0")
        params.extend(methods)
    rows = _select(("WHERE " + " AND ".join(clauses)) if clauses else "", tuple(params))
    return _frame(rows)


def _frame(rows: list[RunRow]) -> pd.DataFrame:
    names: dict[tuple[str, str], str] = {}  # (source, key) -> column name
    taken = set(SCALAR_COLUMNS)
    for source in ("metrics", "timings"):
        for row in rows:
            for key in getattr(row, source):
                if (source, key) not in names:
                    name = key if key not in taken else f"{source}.{key}"
                    names[(source, key)] = name
                    taken.add(name)
    records = []
    for row in rows:
        record = {c: getattr(row, c) for c in IDENTITY_COLUMNS}
        for (source, key), name in names.items():
            record[name] = getattr(row, source).get(key, math.nan)
        record.update(request_kind=row.request_kind, request_hash=row.request_hash, config_hash=row.config_hash,
                      config_json=json.dumps(row.config, sort_keys=True), weights_sha256=row.weights_sha256,
                      versions_json=json.dumps(row.versions, sort_keys=True),
                      oracle_seeds=json.dumps(row.oracle_seeds), oracle_k=row.oracle_k, verdict=row.verdict,
                      error=row.error, created_at=row.created_at)
        records.append(record)
    columns = IDENTITY_COLUMNS + list(names.values()) + PROVENANCE_COLUMNS
    df = pd.DataFrame(records, columns=columns)
    df["seed"] = df["seed"].astype("Int64")
    df["oracle_k"] = df["oracle_k"].astype("Int64")
    for name in names.values():
        df[name] = df[name].astype(float)
    return df


def value_columns(df: pd.DataFrame) -> list[str]:
    """The metric and timing columns of a ``query`` table (what can go on a chart's axis)."""
    return [c for c in df.columns if c not in SCALAR_COLUMNS and pd.api.types.is_numeric_dtype(df[c])]


def shown(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """``df`` for reading on screen: each float to ``digits`` significant digits (whole numbers kept whole), so that
    a column's values line up (91.72, 93.83, 0.04361) rather than carry whatever precision each metric came with.
    The export keeps the stored values."""
    def significant(value: float) -> float:
        if pd.isna(value):
            return value
        if abs(value) >= 10 ** digits:
            return float(round(value))
        return float(f"{value:.{digits}g}")

    out = df.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(significant)
    return out


def to_csv(df: pd.DataFrame) -> bytes:
    """``df`` as UTF-8 CSV without the index (``pandas.read_csv`` reads it back)."""
    return df.to_csv(index=False).encode("utf-8")


def summary(df: pd.DataFrame, x: str, y: str, by: tuple[str, ...] = ("method", "request_desc")) -> pd.DataFrame:
    """Per group of ``by`` (default: method and request): mean and sample sd of ``x`` and ``y`` over its runs
    (seeds) and their count ``n``, counting only runs that have both values. Columns: the ``by`` columns,
    ``{x}_mean``, ``{x}_sd``, ``{y}_mean``, ``{y}_sd`` (once when x is y), ``n``; sd is NaN where n is 1."""
    axes = list(dict.fromkeys([x, y]))
    missing = [a for a in [*axes, *by] if a not in df.columns]
    if missing:
        raise ValueError(f"no column {missing} in the runs table; it has {list(df.columns)}")
    named = {f"{a}_{stat}": (a, "std" if stat == "sd" else "mean") for a in axes for stat in ("mean", "sd")}
    named["n"] = (axes[0], "size")
    points = df.dropna(subset=axes)
    if points.empty:
        return pd.DataFrame(columns=[*by, *named])
    out = points.groupby(list(by), sort=True, dropna=False).agg(**named).reset_index()
    return out.astype({name: float for name in named if name != "n"})
