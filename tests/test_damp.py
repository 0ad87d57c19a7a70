"""DAMP: the projection makes each edited operator blind to the forget subspace, leaves biases and
BatchNorm alone, removes a rank-m subspace for m classes, and never touches the input model. Forgetting at
the defaults, over three training seeds, is tested with every method in test_posthoc.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.data import request_classes, request_random
from core.unlearn import get_method
from core.unlearn.damp import DAMPConfig, alpha_for, forget_subspace


@pytest.fixture(scope="module")
def setup(digits, parametric_small):
    return digits, parametric_small(0)


def _input_axis_product(weight: torch.Tensor, q: np.ndarray) -> float:
    """||W Q|| / ||W|| with W's input axis last (conv: every kernel tap)."""
    w = weight.detach().double()
    if w.dim() == 4:
        w = w.permute(0, 2, 3, 1).reshape(-1, w.shape[1])
    return float((w @ torch.as_tensor(q, dtype=torch.float64)).norm() / w.norm())


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("sequential", [False, True], ids=["one-pass", "re-measured"])
def test_alpha_one_blinds_every_edited_operator_and_keeps_biases(setup, sequential):
    ds, model = setup
    before = _state(model.net)
    config = DAMPConfig(alpha_form="constant", alpha=1.0, sequential=sequential)
    res = get_method("damp").run(model, ds, request_classes(ds, [3]), config)
    modules = dict(res.model.net.named_modules())
    assert res.log["subspaces"], "no operator was edited"
    for name, q in res.log["subspaces"].items():
        q = np.asarray(q)
        assert q.shape[1] >= 1
        assert _input_axis_product(modules[name].weight, q) < 1e-5, name
        assert _input_axis_product(dict(model.net.named_modules())[name].weight, q) > 1e-3, name
    after = res.model.net.state_dict()
    for key, value in before.items():
        if key.endswith(".weight") and any(key == f"{n}.weight" for n in res.log["subspaces"]):
            continue
        assert torch.equal(after[key], value), f"{key} changed (biases, BatchNorm and unedited weights stay)"
    # the first conv sees one channel: no residual outside the retain span, so it is skipped
    first = res.log["layers"][0]
    assert first["skipped"] and first["weight_change"] == 0.0
    for row in res.log["layers"]:
        assert {"alpha", "probe_acc", "residual_norm", "weight_change", "layer", "rank"} <= set(row)


def test_multi_class_removes_rank_m_subspace(setup):
    ds, model = setup
    res = get_method("damp").run(model, ds, request_classes(ds, [0, 1, 2]),
                                 DAMPConfig(alpha_form="constant", alpha=1.0))
    q = np.asarray(res.log["subspaces"]["head"])
    assert q.shape[1] == 3
    assert np.allclose(q.T @ q, np.eye(3), atol=1e-6)
    delta = (model.net.head.weight - res.model.net.head.weight).detach().double().numpy()
    s = np.linalg.svd(delta, compute_uv=False)
    assert (s > 1e-6 * s[0]).sum() == 3  # W Q Q^T has rank m
    assert _input_axis_product(res.model.net.head.weight, q) < 1e-5


def test_input_model_unchanged_and_random_requests_rejected(setup):
    ds, model = setup
    before = _state(model.net)
    for cfg in (DAMPConfig(), DAMPConfig(sequential=True, head_rank=2)):
        get_method("damp").run(model, ds, request_classes(ds, [5]), cfg)
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(ValueError, match="whole classes"):
        get_method("damp").run(model, ds, request_random(ds, 0.1, 0), DAMPConfig())
    with pytest.raises(ValueError, match="alpha_form"):
        get_method("damp").run(model, ds, request_classes(ds, [5]), DAMPConfig(alpha_form="cubic"))


def test_forget_subspace_is_the_residual_outside_the_retain_span():
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(4, 10))
    q, rel = forget_subspace(protos, [0], 1e-6)
    assert q.shape == (10, 1) and 0 < rel < 1
    assert np.abs(protos[1:] @ q).max() < 1e-10  # orthogonal to every retain prototype
    # a forget prototype inside the retain span leaves nothing to remove
    protos[0] = 0.3 * protos[1] - 2 * protos[2]
    q, rel = forget_subspace(protos, [0], 1e-6)
    assert q.shape[1] == 0 and rel < 1e-8
    # a layer narrower than the retain span: nothing either
    q, _ = forget_subspace(rng.normal(size=(5, 3)), [0], 1e-6)
    assert q.shape[1] == 0


def test_alpha_forms():
    assert alpha_for("probe-ramp", 1.0, 100.0, 5, 5) == 1.0
    assert alpha_for("probe-ramp", 1.0, 50.0, 5, 5) == 0.0
    assert alpha_for("probe-ramp", 1.0, 75.0, 2, 4) == pytest.approx(0.25)
    assert alpha_for("probe-ramp", 1.5, 75.0, 4, 4) == pytest.approx(0.75)
    assert alpha_for("linear-ramp", 1.0, 10.0, 1, 4) == pytest.approx(0.25)
    assert alpha_for("constant", 0.5, 10.0, 1, 4) == pytest.approx(0.5)
    assert alpha_for("probe", 2.0, 90.0, 1, 4) == 1.0
    with pytest.raises(ValueError):
        alpha_for("nope", 1.0, 90.0, 1, 4)
