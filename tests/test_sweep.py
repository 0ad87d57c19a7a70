"""Sweeps: specs refused before anything starts, runs in parallel on Ray, rows in the runs table, reruns reused."""

import json
from types import SimpleNamespace

import pytest

from core import cli, runs_db, sweep


def test_seed_ranges():
    assert sweep.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert sweep.parse_seeds("3,0-1,3") == [0, 1, 3]
    for bad in ("", "a", "4-1", "-2", "0-x"):
        with pytest.raises(sweep.SweepError, match="--seeds"):
            sweep.parse_seeds(bad)
    with pytest.raises(sweep.SweepError, match=r"--seeds: '0-99999999' holds more than 10,000 seeds: split"):
        sweep.parse_seeds("0-99999999")


@pytest.mark.parametrize("methods, requests, entry", [
    (["ft", "nope"], ["class:0"], "'nope'"),
    (["spm-delete"], ["class:0"], "'spm-delete'"),  # a method for another model kind
    (["ft"], ["class:42"], "class:42"),
    (["ft"], ["random:2"], "random:2"),
    (["ft"], ["cls:0"], "cls:0"),
    (["damp"], ["random:0.1"], "random:0.1"),  # DAMP forgets classes only
])
def test_a_bad_spec_is_refused_naming_the_entry_before_any_task_starts(digits, methods, requests, entry):
    with pytest.raises(sweep.SweepError) as err:
        sweep.plan(digits, "parametric", methods, requests, [0])
    assert entry in str(err.value)


def test_a_sweep_runs_every_cell_records_it_and_a_rerun_reuses_it(ray_backend, digits, parametric_model,
                                                                    monkeypatch):
    monkeypatch.delenv("UE_ORACLES", raising=False)  # the default K
    items = sweep.plan(digits, "parametric", ["ft", "ga"], ["class:0", "random:0.05"], [0, 1])
    assert len(items) == 8 and {i.config.seed for i in items} == {0, 1}
    first = sweep.run_sweep(ray_backend, digits, "parametric", items)
    assert not first.failed and len(first.done) == 8 and len(set(first.done)) == 8
    assert 0 < first.efficiency <= 1.0
    table = runs_db.query(dataset="digits", model="parametric", methods=["ft", "ga"])
    rows = table[table.run_key.isin(first.done)]
    assert len(rows) == 8 and set(rows.seed) == {0, 1}
    assert rows.RA.gt(50).all() and rows.AvgGap.notna().all()  # scored against the oracle, not collapsed
    assert set(rows.request_kind) == {"class", "random"}
    # every gap was measured against the K oracles, each on its own seed and none on the original's (seed 0)
    assert all(json.loads(s) == [1, 2, 3] for s in rows.oracle_seeds) and rows.oracle_k.eq(3).all()
    assert set(rows.verdict) <= {"looks unseen", "not forgotten", "over-forgotten", "inconclusive"}
    assert rows[rows.request_kind == "class"].mean_z.notna().all()  # per-sample evidence with 3 oracles
    again = sweep.run_sweep(ray_backend, digits, "parametric", items)
    assert sorted(again.reused) == sorted(first.done) and not again.done and again.task_s == 0


def test_cli_sweep_refuses_a_bad_spec_with_status_2(capsys):
    code = cli.main(["sweep", "--dataset", "digits", "--model", "parametric", "--methods", "ft,fx",
                     "--requests", "class:0", "--seeds", "0-1"])
    assert code == 2
    assert "'fx'" in json.loads(capsys.readouterr().out)["error"]


def test_cli_sweep_set_must_name_a_field_some_method_has(capsys):
    code = cli.main(["sweep", "--dataset", "digits", "--model", "parametric", "--methods", "ft",
                     "--requests", "class:0", "--set", "nonsense=1"])
    assert code == 2 and "nonsense" in json.loads(capsys.readouterr().out)["error"]


def test_cli_sweep_logs_each_new_run_to_mlflow(ray_backend, parametric_model, tmp_path, capsys, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the local file store, deprecated but serverless
    uri = (tmp_path / "mlruns").as_uri()
    code = cli.main(["sweep", "--dataset", "digits", "--model", "parametric", "--methods", "ft",
                     "--requests", "class:3", "--seeds", "7", "--mlflow", uri])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert len(out["mlflow_run_ids"]) == 1 and out["runs"] == 1
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(out["mlflow_run_ids"][0])
    row = runs_db.get(out["run_keys"][0])
    assert run.data.params["method"] == "ft" and run.data.params["seed"] == "7"
    assert run.data.metrics["AvgGap"] == pytest.approx(row.metrics["AvgGap"])
    assert run.data.tags["weights_sha256"] == row.weights_sha256


def test_cli_sweep_makes_its_models_with_the_given_recipe_and_model_config(capsys, monkeypatch):
    seen = {}

    def fake_run_sweep(engine, dataset, model, items, **kwargs):
        seen.update(kwargs)
        raise sweep.SweepError("stop here")

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    monkeypatch.setattr(cli, "_backend", lambda args: SimpleNamespace(has_gpu=False, shutdown=lambda: None))
    code = cli.main(["sweep", "--dataset", "digits", "--model", "parametric", "--methods", "ft",
                     "--requests", "class:0", "--epochs", "3", "--train-seed", "11",
                     "--model-set", "encoder.feature_dim=32"])
    assert code == 2 and "stop here" in json.loads(capsys.readouterr().out)["error"]
    assert seen["train_config"].epochs == 3 and seen["train_config"].seed == 11
    assert seen["model_config"].encoder.feature_dim == 32
