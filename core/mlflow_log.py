"""Optional: each stored run also logged to MLflow (``python -m core sweep ... --mlflow URI``).

One MLflow run per runs-table row, in the experiment ``unlearning/<dataset>/<model>``: the method, request,
seed and config as parameters, every metric and timing as a metric, hashes and versions as tags. The runs
table stays the source of truth; MLflow is a view for labs that already use it. Only this module imports
mlflow, and only when asked.
"""

from __future__ import annotations

import math

from core.configs import ConfigError
from core.runs_db import RunRow

INSTALL_HINT = "pip install mlflow-skinny (the version in requirements.txt)"


def check_installed() -> None:
    """Refuse ``--mlflow`` up front (before a sweep starts) when mlflow is missing."""
    _mlflow()


def _mlflow():
    try:
        import mlflow
    except ImportError as err:
        raise ConfigError(f"--mlflow needs the mlflow package, which is not installed: {INSTALL_HINT}") from err
    return mlflow


def _flat(prefix: str, value, out: dict) -> dict:
    """Nested config dicts as ``a.b`` keys (MLflow parameters are flat strings)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)
    return out


def log_runs(uri: str, rows: list[RunRow]) -> list[str]:
    """Log ``rows`` to the MLflow tracking server or store at ``uri``; returns the MLflow run ids."""
    mlflow = _mlflow()
    try:
        return _log(mlflow.MlflowClient(tracking_uri=uri), rows)
    except mlflow.exceptions.MlflowException as err:
        raise ConfigError(f"--mlflow {uri}: MLflow refused the runs ({err.message}); they are in the runs table "
                          "all the same") from err


def _log(client, rows: list[RunRow]) -> list[str]:
    ids = []
    for row in rows:
        name = f"unlearning/{row.dataset}/{row.model}"
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        run = client.create_run(experiment_id, run_name=row.run_key, tags={
            "run_key": row.run_key, "weights_sha256": row.weights_sha256, "request_hash": row.request_hash,
            "config_hash": row.config_hash, "status": row.status,
            **{f"version.{k}": str(v) for k, v in row.versions.items()}})
        params = {"method": row.method, "request": row.request_desc, "request_kind": row.request_kind,
                  "seed": str(row.seed), "oracle_seeds": ",".join(map(str, row.oracle_seeds)),
                  **_flat("config", row.config, {})}
        for key, value in params.items():
            client.log_param(run.info.run_id, key, value[:6000])
        for key, value in {**row.metrics, **{f"time.{k}": v for k, v in row.timings.items()}}.items():
            if value is not None and math.isfinite(value):
                client.log_metric(run.info.run_id, key, float(value))
        client.set_terminated(run.info.run_id, "FINISHED" if row.status == "done" else "FAILED")
        ids.append(run.info.run_id)
    return ids
