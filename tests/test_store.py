"""Checkpoints load weights only; corrupt, foreign or hostile files give a clear StoreError."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from core import bundle, store
from core.models import get_model_kind
from tests.conftest import FAST


def small_net(digits):
    kind = get_model_kind("parametric")
    return kind.build(digits, kind.config_cls())


def test_save_and_load_roundtrip(digits):
    net = small_net(digits)
    saved = store.save_model("roundtrip-test", net, {"kind": "parametric", "config": {}})
    other = small_net(digits)
    store.load_weights(other, saved.path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    assert saved.meta["weights_sha256"] == store.file_sha256(saved.path / "weights.safetensors")


def test_corrupt_weights_are_refused(digits, tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(store.StoreError, match="not a readable safetensors"):
        store.load_weights(small_net(digits), tmp_path)


def test_weights_of_another_shape_are_refused(digits, tmp_path):
    from safetensors.torch import save_file

    state = {k: torch.zeros(3) for k in small_net(digits).state_dict()}
    save_file(state, str(tmp_path / "weights.safetensors"))
    with pytest.raises(store.StoreError, match="shape"):
        store.load_weights(small_net(digits), tmp_path)




def test_unreadable_metadata_is_reported(tmp_path):
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(store.StoreError, match="unreadable"):
        store.read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"no": "kind"}))
    with pytest.raises(store.StoreError, match="lacks"):
        store.read_meta(tmp_path)


def test_a_second_start_loads_instead_of_training(digits, spm_model, monkeypatch):
    from dataclasses import replace

    from core.models import registry

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading")

    bundle.forget_memo()
    monkeypatch.setitem(registry._MODELS._entries, "spm", replace(get_model_kind("spm"), fit=no_training))
    messages = []
    reloaded = bundle.train_or_load("spm", digits, train_config=FAST,
                                    progress=lambda f, message: messages.append(message)).classifier
    np.testing.assert_allclose(reloaded.split_proba(digits, "test"), spm_model.split_proba(digits, "test"), atol=1e-6)
    # the progress text is shown on pages to anyone: it names the store, not the server's folders
    assert any(m.startswith("loading spm from the model store (") for m in messages), messages
    assert not any(str(store.home()) in m for m in messages), messages


def test_a_shipped_model_is_shown_by_its_path_in_the_project():
    folder = store.ASSETS_MODELS / "abc123"
    assert store.shown_location(folder) == "assets/models/abc123"


def test_runs_are_stored():
    store.save_run("run-test", {"method": "x", "metrics": {"TA": np.float32(1.5)}}, {"p": np.eye(2)})
    folder = store.home() / "runs" / "run-test"
    record = json.loads((folder / "run.json").read_text())
    with np.load(folder / "arrays.npz", allow_pickle=False) as arrays:
        assert record["metrics"]["TA"] == 1.5 and np.array_equal(arrays["p"], np.eye(2))


def test_the_shipped_bundle_is_found_unless_benchmarks_turn_it_off(monkeypatch):
    shipped = sorted(p.name for p in store.ASSETS_MODELS.iterdir() if p.is_dir())
    assert shipped, "assets/models ships the default bundle"
    monkeypatch.delenv("UE_NO_ASSETS", raising=False)
    assert store.ASSETS_MODELS / shipped[0] in store.model_dirs(shipped[0])
    monkeypatch.setenv("UE_NO_ASSETS", "1")
    assert store.model_dirs(shipped[0]) == [store.home() / "models" / shipped[0]]


def test_every_shipped_model_loads_into_the_network_its_metadata_describes():
    """The shipped bundle (parametric, SPM and the generation SPM with its oracle without class 7, on
    Fashion-MNIST) still fits today's code: the weights' hash is the recorded one and every tensor loads strictly
    into the network the stored config builds."""
    from types import SimpleNamespace

    shipped = [p for p in store.ASSETS_MODELS.iterdir() if p.is_dir()]
    assert {store.read_meta(p)["kind"] for p in shipped} >= {"parametric", "spm"}
    for path in shipped:
        meta = store.read_meta(path)
        assert meta["weights_sha256"] == store.file_sha256(path / "weights.safetensors"), path.name
        kind = get_model_kind(meta["kind"])
        shape = SimpleNamespace(image_shape=(1, 28, 28), num_train=meta["num_train_ids"], num_classes=10)
        net = kind.build(shape, store.config_of(meta, kind.config_cls))
        store.load_weights(net, path)  # raises StoreError on a missing, extra or misshapen tensor
        # today's defaults (config and the kind's recipe, for an oracle with its seed moved and the same request)
        # still name these weights, so a start loads them
        data = SimpleNamespace(name=meta["dataset"], fingerprint=lambda m=meta: m["dataset_fingerprint"])
        recipe = bundle.recipe(meta["dataset"], meta["kind"])
        excluded = meta.get("excluded")
        if excluded:
            offset = meta["train_config"]["seed"] - recipe.seed
            assert offset >= 1, f"{path.name}: a shipped oracle must not share the original's seed"
            recipe = replace(recipe, seed=recipe.seed + offset)
            excluded = SimpleNamespace(key=lambda e=excluded: e["key"])
        default_key = bundle.model_key(meta["kind"], kind.config_cls(), recipe, data, excluded)
        assert default_key == path.name == meta["key"], f"{path.name}: a default changed since it was trained"


def test_training_is_reproducible_whatever_the_process_drew_before(digits):
    """The initial weights follow the recipe's seed: the same recipe trains the same weights even after other
    code consumed the global RNGs (before, the init depended on what the process had drawn)."""
    import shutil

    from core.models.training import TrainConfig

    recipe = TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=11)
    first = bundle.train_or_load("parametric", digits, train_config=recipe)
    shutil.rmtree(store.find_model(first.key).path)
    bundle.forget_memo()
    torch.rand(4321)
    np.random.rand(17)
    second = bundle.train_or_load("parametric", digits, train_config=recipe)
    a, b = first.classifier.net.state_dict(), second.classifier.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage", ["truncated", "bit flip", "no meta", "meta not json"])
def test_a_damaged_stored_model_is_named_with_the_command_that_retrains_it(digits, tmp_path, monkeypatch, damage):
    """A truncated, altered or half-deleted model folder: loading names the model, its folder and the CLI command
    that trains it again, instead of a bare parser error (and ``is_available`` sends callers down that path)."""
    from dataclasses import replace

    from core.configs import config_to_dict

    monkeypatch.setenv("UE_HOME", str(tmp_path))
    monkeypatch.setenv("UE_NO_ASSETS", "1")
    recipe = replace(FAST, epochs=3, seed=5)
    config, recipe, key = bundle.resolve("parametric", digits, None, recipe)
    saved = store.save_model(key, small_net(digits), {"kind": "parametric", "config": config_to_dict(config)})
    weights, meta = saved.path / "weights.safetensors", saved.path / "meta.json"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "bit flip":  # still parses as safetensors: only the recorded SHA-256 tells
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "no meta":
        meta.unlink()
    else:
        meta.write_text("{not json")
    bundle.forget_memo()
    assert bundle.is_available("parametric", digits, train_config=recipe)
    with pytest.raises(store.StoreError) as err:
        bundle.train_or_load("parametric", digits, train_config=recipe, allow_train=False)
    message = str(err.value)
    assert message.startswith(f"the stored parametric model on digits (key {key}): damaged: ")
    assert f"Delete {saved.path} and retrain it: `python -m core train --dataset digits --model parametric " \
           "--epochs 3 --train-seed 5`" in message
    expected = {"truncated": "not a readable safetensors", "bit flip": "recorded when they were saved",
                "no meta": "lacks meta.json", "meta not json": "unreadable"}[damage]
    assert expected in message


def test_a_damaged_oracle_names_the_comparison_that_retrains_it(digits):
    from core.data import request_classes
    from core.workflow import oracle_train_config

    request = request_classes(digits, [0, 3])
    base = bundle.recipe("digits", "parametric")
    for k in (1, 3):
        command = bundle.retrain_command("parametric", "digits", oracle_train_config("parametric", digits, k), request)
        assert command.startswith("python -m core forget --dataset digits --model parametric --classes 0,3 --method ")
        assert "--train-seed" not in command and command.endswith(f" --oracles {k}")
    # An oracle on a seed of its own: the original one below it, with one oracle.
    command = bundle.retrain_command("parametric", "digits", replace(base, seed=base.seed - 4), request)
    assert f"--train-seed {base.seed - 5} " in command and command.endswith(" --oracles 1")
    # the user's data is not the project's to load: the command asks for its file
    assert bundle.retrain_command("spm", "upload:mine", base).startswith(
        "python -m core train --dataset upload:mine --data <your data> --model spm")


def test_cached_arrays_are_named_by_the_weights_hash():
    from safetensors.torch import save as save_bytes

    weights = save_bytes({"w": torch.zeros(2)})
    saved = store.save_model_bytes("cache-keyed", weights, {"kind": "parametric", "config": {}},
                                   {"train_features": np.ones((3, 2), np.float32)})
    assert store.cached_array(saved, "train_features").shape == (3, 2)
    other = store.StoredModel(saved.key, saved.path, {**saved.meta, "weights_sha256": "f" * 64})
    assert store.cached_array(other, "train_features") is None  # other weights never read this cache
    store.cache_array(other, "train_features", np.zeros((3, 2), np.float32))
    assert store.cached_array(saved, "train_features").sum() == 6  # and never overwrite it


def test_a_stored_model_and_its_cached_arrays_load_without_the_ast_module(monkeypatch, digits, spm_model):
    """Models load in the background lane while a page may be compiling, and CPython 3.11's AST builder is not
    safe in two threads at once: loading must not parse anything with ``ast`` (numpy's .npy header reader does).
    A damaged cache file is dropped and recomputed, not an error."""
    import ast

    def no_ast(*args, **kwargs):
        raise AssertionError("ast used while loading")

    store.save_computed("ast-free", {"ids": np.arange(6).reshape(2, 3), "sims": np.ones(2, np.float32)})
    stored = store.find_model(bundle.resolve("spm", digits, train_config=FAST)[2])
    cache = next(stored.path.glob("train_features-*.safetensors"))  # written when the model was trained
    bundle.forget_memo()
    monkeypatch.setattr(ast, "parse", no_ast)
    monkeypatch.setattr(ast, "literal_eval", no_ast)
    loaded = bundle.train_or_load("spm", digits, train_config=FAST, allow_train=False)
    np.testing.assert_array_equal(loaded.classifier.train_features, store.cached_array(stored, "train_features"))
    np.testing.assert_array_equal(store.load_computed("ast-free")["ids"], np.arange(6).reshape(2, 3))
    cache.write_bytes(b"damaged")
    assert store.cached_array(stored, "train_features") is None and not cache.exists()
