"""Post-hoc methods at their defaults, on digits, over the original's training seeds 0, 1 and 2.

For every method and seed: the method's defining property holds (what its paper's update does and nothing
else), and forgetting class 0 leaves the retained classes' test accuracy within RETAIN_MARGIN points of
both the original's and the oracles' mean (the same recipe retrained without class 0 on the seed + 1, 2, 3,
never the original's own) while the forget accuracy comes within FORGET_MARGIN points of the oracles'. A
method that misses this at its defaults on some seed is a finding, not a reason to tune the test: that one
case is an xfail with the measured numbers, on the AVX2 kernels tests/conftest.py selects: outcomes this close to
the margins change with the CPU's float kernels. On one machine's AVX-512 kernels, rl's defining property and
salun's forgetting failed at seed 1, and ssd forgot the class at seeds 0, 1 and 2. Even on AVX2 kernels an AMD
EPYC (Zen 5) trains other weights than the machine FINDINGS come from; the cases whose outcome changed there are
ON_THE_EDGE (either outcome passes, both are given).
Also: registration, the input model is never touched, progress and cancellation, the probe diagnostics.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import workflow
from core.configs import config_to_dict, field_help
from core.data import request_classes, request_random
from core.data.dataset import Dataset
from core.eval import metrics as M
from core.eval import probes as P
from core.models.base import Cancelled, CancelToken
from core.unlearn import get_method, list_methods
from core.unlearn.l1_sparse import l1_norm
from core.unlearn.loop import unlearn
from core.unlearn.salun import saliency_mask
from core.unlearn.scrub import distill_kl

SEEDS = (0, 1, 2)  # training seeds of the original network: the first three
METHODS = ("damp", "damp-sequential", "ft", "ga", "l1-sparse", "neggrad+", "rl", "salun", "scrub", "ssd")
FORGOTTEN = 0  # the class every case forgets
# Retained-class test accuracy within 3 points of the original's and of the oracles' mean: digits' ~325 retained
# test images make one image 0.3 points, and an oracle's retained accuracy differs from the original's by about 1.
RETAIN_MARGIN = 3.0
# Forget accuracy within 10 points of the oracles', which have never seen class 0 (their FA is 0).
FORGET_MARGIN = 10.0
# Measured failures at the defaults: FA / retained-class test accuracy of the method (original; oracles' mean).
_NEGLECT = "10 epochs on D_r alone at lr 0.01 keep the class"
_BUDGET = "the reference budget is counted in epochs, and digits' D_f (~142 images) is one batch per epoch: "
FINDINGS: dict[tuple[str, int], str] = {
    ("damp", 0): "measured: FA 70.4 (100.0; 0.0), retained 98.8 (99.1; 98.5): METHODS.md's one-pass form",
    ("damp-sequential", 0): "measured: FA 41.5 (100.0; 0.0), retained 98.8 (99.1; 98.5)",
    ("ft", 0): "measured: FA 100.0 (100.0; 0.0), retained 99.1 (99.1; 98.5): " + _NEGLECT,
    ("ft", 1): "measured: FA 100.0 (100.0; 0.0), retained 99.1 (98.5; 98.7): " + _NEGLECT,
    ("ft", 2): "measured: FA 100.0 (100.0; 0.0), retained 99.4 (99.1; 98.8): " + _NEGLECT,
    ("l1-sparse", 0): "measured: FA 100.0 (100.0; 0.0), retained 99.1 (99.1; 98.5): " + _NEGLECT + ", gamma 5e-5",
    ("l1-sparse", 1): "measured: FA 100.0 (100.0; 0.0), retained 99.1 (98.5; 98.7): " + _NEGLECT + ", gamma 5e-5",
    ("l1-sparse", 2): "measured: FA 100.0 (100.0; 0.0), retained 99.4 (99.1; 98.8): " + _NEGLECT + ", gamma 5e-5",
    ("ga", 0): "measured: FA 99.3 (100.0; 0.0), retained 98.1 (99.1; 98.5): " + _BUDGET + "5 steps at lr 1e-4",
    ("ga", 1): "measured: FA 100.0 (100.0; 0.0), retained 97.8 (98.5; 98.7): " + _BUDGET + "5 steps at lr 1e-4",
    ("ga", 2): "measured: FA 99.3 (100.0; 0.0), retained 99.4 (99.1; 98.8): " + _BUDGET + "5 steps at lr 1e-4",
    ("neggrad+", 0): "measured: FA 61.3 (100.0; 0.0), retained 95.4 (99.1; 98.5): the ascent hurts D_r first",
    ("neggrad+", 2): "measured: FA 0.0 (100.0; 0.0), retained 94.8 (99.1; 98.8): over-unlearning, retained drops 4.3",
    ("rl", 1): "measured: FA 81.0 (100.0; 0.0), retained 98.1 (98.5; 98.7)",
    ("rl", 2): "measured: FA 66.9 (100.0; 0.0), retained 99.4 (99.1; 98.8)",
    ("scrub", 0): "measured: FA 100.0 (100.0; 0.0), retained 98.8 (99.1; 98.5): " + _BUDGET + "2 max steps at lr 5e-4",
    ("scrub", 1): "measured: FA 100.0 (100.0; 0.0), retained 98.8 (98.5; 98.7): " + _BUDGET + "2 max steps at lr 5e-4",
    ("scrub", 2): "measured: FA 97.2 (100.0; 0.0), retained 98.8 (99.1; 98.8): " + _BUDGET + "2 max steps at lr 5e-4",
    ("ssd", 0): "measured: FA 100.0 (100.0; 0.0), retained 99.1 (99.1; 98.5): alpha 10 selects too few weights",
    ("ssd", 1): "measured: FA 100.0 (100.0; 0.0), retained 98.5 (98.5; 98.7): alpha 10 selects too few weights",
    ("ssd", 2): "measured: FA 100.0 (100.0; 0.0), retained 99.1 (99.1; 98.8): alpha 10 selects too few weights",
}


# Outcomes that differ between two machines with the same AVX2 kernels: FINDINGS were measured on one, and on an AMD
# EPYC (Zen 5) the same recipe trains other weights (the originals' retained accuracy differs by a point at seed 2).
# Either outcome is allowed there and the reason gives both: the case sits on the margin, which is the finding.
ON_THE_EDGE: dict[tuple[str, int], str] = {
    ("ssd", 2): FINDINGS[("ssd", 2)] + "; on an AMD EPYC (Zen 5): FA 0.0 (100.0; 0.0), retained 98.8 (98.8; 98.8)",
}
PROPERTY_ON_THE_EDGE: dict[tuple[str, int], str] = {
    ("neggrad+", 0): "on an AMD EPYC (Zen 5) the ascent raised D_f's mean loss by 0.78 nats only (FA 81.7), elsewhere "
                     "by more than 1; seeds 1 and 2 raise it by 14 and 34",
}


def _case(name: str, seed: int, edge: dict = ON_THE_EDGE, findings: dict = FINDINGS):
    if (name, seed) in edge:
        marks = [pytest.mark.xfail(strict=False, reason=edge[(name, seed)])]
    elif (name, seed) in findings:
        marks = [pytest.mark.xfail(strict=True, reason=findings[(name, seed)])]
    else:
        marks = []
    return pytest.param(name, seed, marks=marks, id=f"{name}-seed{seed}")


@pytest.fixture(scope="module")
def lab(digits, parametric_small):
    """Originals, oracles and default runs, each computed once per (method, seed)."""

    class Lab:
        ds = digits
        request = request_classes(digits, [FORGOTTEN])
        snapshots: dict = {}
        reports: dict = {}
        memo: dict = {}

        def once(self, key, make):
            if key not in self.memo:
                self.memo[key] = make()
            return self.memo[key]

        def original(self, seed):
            def make():
                model = parametric_small(seed)
                self.snapshots[seed] = {k: v.clone() for k, v in model.net.state_dict().items()}
                return model
            return self.once(("original", seed), make)

        def oracles(self, seed):
            return self.once(("oracles", seed), lambda: [workflow.oracle(
                "parametric", digits, self.request, offset, train_config=parametric_small.recipe(seed)).classifier
                for offset in workflow.oracle_offsets(3)])

        def run(self, name, seed):
            def make():
                spec, reports = get_method(name), self.reports.setdefault((name, seed), [])
                return spec.run(self.original(seed), digits, self.request, spec.config_cls(),
                                lambda f, m: reports.append(f), None)
            return self.once(("run", name, seed), make)

        def metrics(self, which, seed, name=None):
            """The metrics of the original, the run of ``name``, or the oracles' mean."""
            def make():
                if which == "oracles":
                    return M.mean_metrics([M.split_metrics(o, digits, self.request) for o in self.oracles(seed)])
                model = self.original(seed) if which == "original" else self.run(name, seed).model
                return M.split_metrics(model, digits, self.request)
            return self.once(("metrics", which, seed, name), make)

    return Lab()


def _with_images(ds: Dataset, ids: np.ndarray, seed: int = 0) -> Dataset:
    """``ds`` with the training images ``ids`` replaced by noise (labels kept)."""
    x = ds.x_train.copy()
    x[ids] = np.random.default_rng(seed).random(x[ids].shape, dtype=np.float32)
    return dataclasses.replace(ds, x_train=x, _fingerprint=[])


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@torch.no_grad()
def _losses(net: torch.nn.Module, ds: Dataset, ids: np.ndarray) -> torch.Tensor:
    """Per-sample cross-entropy of ``net`` on training ids."""
    net.eval()
    x = torch.as_tensor(ds.x_train[ids]).contiguous(memory_format=torch.channels_last)
    return F.cross_entropy(net(x), torch.as_tensor(ds.y_train[ids]), reduction="none")


# ---- each method's defining property ------------------------------------------------------------------
def _reads_only(lab, name, seed, kept: str) -> None:
    """The update reads only the ``kept`` set: noise in place of the other set's images changes nothing."""
    forget = lab.request.mask(lab.ds.num_train)
    other = np.flatnonzero(forget if kept == "retain" else ~forget)
    spec = get_method(name)
    again = spec.run(lab.original(seed), _with_images(lab.ds, other), lab.request, spec.config_cls())
    assert _same_weights(again.model.net, lab.run(name, seed).model.net), f"{name} read the {kept}-set's complement"


def property_ft(lab, seed):
    _reads_only(lab, "ft", seed, kept="retain")


def property_l1_sparse(lab, seed):
    _reads_only(lab, "l1-sparse", seed, kept="retain")
    # the same fine-tuning without the L1 term ends with a larger L1 norm
    with torch.no_grad():
        assert float(l1_norm(lab.run("l1-sparse", seed).model.net)) < float(l1_norm(lab.run("ft", seed).model.net))


def property_ga(lab, seed):
    _reads_only(lab, "ga", seed, kept="forget")
    f = lab.ds.train_ids[lab.request.mask(lab.ds.num_train)]
    assert _losses(lab.run("ga", seed).model.net, lab.ds, f).mean() > _losses(lab.original(seed).net, lab.ds, f).mean()


def property_neggrad(lab, seed):
    forget = lab.request.mask(lab.ds.num_train)
    f, r = np.flatnonzero(forget), np.flatnonzero(~forget)
    net, net0 = lab.run("neggrad+", seed).model.net, lab.original(seed).net
    assert _losses(net, lab.ds, f).mean() > _losses(net0, lab.ds, f).mean() + 1.0  # ascent on D_f
    assert _losses(net, lab.ds, r).mean() < 0.5  # descent on D_r keeps it fitted


def property_rl(lab, seed):
    # trained towards uniformly random labels: D_f's predictions lose their confidence in the true class
    f = np.flatnonzero(lab.request.mask(lab.ds.num_train))
    p = lab.run("rl", seed).model.predict_proba(lab.ds.x_train[f])
    p0 = lab.original(seed).predict_proba(lab.ds.x_train[f])
    assert p[:, FORGOTTEN].mean() < 0.5 * p0[:, FORGOTTEN].mean()


def property_salun(lab, seed):
    captured = {}
    unlearn("mask", lab.original(seed), lab.ds, lab.request,
            lambda ctx: captured.update(saliency_mask(ctx, get_method("salun").config_cls().threshold, 256)))
    mask = captured
    total = sum(m.numel() for m in mask.values())
    assert abs(sum(float(m.sum()) for m in mask.values()) / total - 0.5) < 1e-3
    before = dict(lab.original(seed).net.named_parameters())
    moved = 0
    for n, p in lab.run("salun", seed).model.net.named_parameters():
        outside = mask[n] == 0
        assert torch.equal(p[outside], before[n][outside]), f"{n}: a weight outside the saliency mask moved"
        moved += int((p[~outside] != before[n][~outside]).sum())
    assert moved > 0


def property_scrub(lab, seed):
    # the student stays with the teacher on D_r and moves away from it on D_f
    forget = lab.request.mask(lab.ds.num_train)
    net, teacher = lab.run("scrub", seed).model.net, lab.original(seed).net
    kl = {}
    with torch.no_grad():
        for split, ids in (("f", np.flatnonzero(forget)), ("r", np.flatnonzero(~forget))):
            x = torch.as_tensor(lab.ds.x_train[ids]).contiguous(memory_format=torch.channels_last)
            kl[split] = float(distill_kl(net(x), teacher(x), 1.0))
    assert kl["f"] > 10 * kl["r"], kl


def property_ssd(lab, seed):
    # no training: every weight is its original times a factor in [0, 1], buffers (BatchNorm statistics) unchanged
    res, orig = lab.run("ssd", seed), lab.original(seed).net
    before = dict(orig.named_parameters())
    changed = 0
    for n, p in res.model.net.named_parameters():
        w0 = before[n]
        moved = p != w0
        changed += int(moved.sum())
        ratio = p[moved] / w0[moved]
        assert bool(((ratio >= 0) & (ratio < 1)).all()), n
    assert 0 < changed <= res.touched["parameters"]
    assert all(torch.equal(a, b) for a, b in zip(res.model.net.buffers(), orig.buffers()))


def _property_damp(name):
    def check(lab, seed):
        # each edited operator: W' Q = (1 - alpha_l) W Q on its forget subspace Q; biases and BatchNorm untouched
        res = lab.run(name, seed)
        alphas = {r["layer"]: r["alpha"] for r in res.log["layers"]}
        mods, mods0 = dict(res.model.net.named_modules()), dict(lab.original(seed).net.named_modules())
        assert res.log["subspaces"]
        for layer, q in res.log["subspaces"].items():
            q = torch.as_tensor(np.asarray(q))
            w, w0 = (m.weight.detach().double() for m in (mods[layer], mods0[layer]))
            if w.dim() == 4:
                w, w0 = (t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]) for t in (w, w0))
            assert torch.allclose(w @ q, (1 - alphas[layer]) * (w0 @ q), atol=1e-5), layer
        after = res.model.net.state_dict()
        for key, value in lab.original(seed).net.state_dict().items():
            if not (key.endswith(".weight") and key[:-7] in res.log["subspaces"]):
                assert torch.equal(after[key], value), key
    return check


PROPERTIES = {"damp": _property_damp("damp"), "damp-sequential": _property_damp("damp-sequential"),
              "ft": property_ft, "ga": property_ga, "l1-sparse": property_l1_sparse, "neggrad+": property_neggrad,
              "rl": property_rl, "salun": property_salun, "scrub": property_scrub, "ssd": property_ssd}


@pytest.mark.parametrize("name,seed", [_case(n, s, PROPERTY_ON_THE_EDGE, {}) for n in METHODS for s in SEEDS])
def test_defining_property_at_defaults(lab, name, seed):
    PROPERTIES[name](lab, seed)


@pytest.mark.parametrize("name,seed", [_case(n, s) for n in METHODS for s in SEEDS])
def test_default_forgets_the_class_and_keeps_the_rest(lab, name, seed):
    m, m0, mo = lab.metrics("run", seed, name), lab.metrics("original", seed), lab.metrics("oracles", seed)
    numbers = (f"{name} seed {seed}: FA {m['FA']:.1f} (original {m0['FA']:.1f}, oracles {mo['FA']:.1f}); retained "
               f"test acc {m['retained_TA']:.1f} (original {m0['retained_TA']:.1f}, oracles {mo['retained_TA']:.1f})")
    print(numbers)
    assert m0["FA"] > 90 and mo["FA"] <= 1, numbers
    assert abs(m["retained_TA"] - m0["retained_TA"]) <= RETAIN_MARGIN, numbers
    assert abs(m["retained_TA"] - mo["retained_TA"]) <= RETAIN_MARGIN, numbers
    assert m["FA"] <= mo["FA"] + FORGET_MARGIN, numbers


def test_every_baseline_is_registered():
    assert set(METHODS) <= set(list_methods("parametric"))


@pytest.mark.parametrize("name", METHODS)
def test_input_model_untouched_new_model_progress(lab, name):
    model, res = lab.original(0), lab.run(name, 0)
    reports = lab.reports[(name, 0)]
    assert np.isfinite(res.model.split_proba(lab.ds, "test")).all()
    assert res.model is not model and res.model.net is not model.net
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in lab.snapshots[0].items()), "input model changed"
    assert res.method == name and res.seconds > 0
    assert reports and reports[-1] == 1.0 and all(0 <= f <= 1 for f in reports)


def test_every_config_field_has_a_reason():
    for name in METHODS:
        cls = get_method(name).config_cls
        helps = field_help(cls)
        missing = [f for f in config_to_dict(cls()) if not helps.get(f)]
        assert not missing, f"{name}: fields without a reason: {missing}"


def test_random_request_and_cancel(lab):
    ds, model = lab.ds, lab.original(0)
    request = request_random(ds, 0.1, 0)
    res = get_method("rl").run(model, ds, request, get_method("rl").config_cls(), lambda f, m: None, None)
    m = M.split_metrics(res.model, ds, request)
    assert m["TA"] > 80
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        get_method("ft").run(model, ds, request, get_method("ft").config_cls(), lambda f, m: None, token)


def test_probes_selectivity_and_bias_shift(lab):
    ds, model = lab.ds, lab.original(0)
    res = lab.run("damp", 0)
    curve = P.layer_decodability(model, ds, lab.request)
    assert [r["layer"] for r in curve][-1] == "head" and len(curve) == 5
    assert curve[-1]["probe_acc"] > 80  # the original model separates class 0 at the head's input
    diss = P.representational_dissimilarity(model, model, ds)
    assert all(abs(r["dissimilarity"]) < 1e-6 for r in diss if np.isfinite(r["dissimilarity"]))
    assert P.selectivity({"forgotten_TA": 99, "retained_TA": 98}, {"forgotten_TA": 4, "retained_TA": 97}) == 94
    assert P.selectivity({"FA": 100, "RA": 100}, {"FA": 90, "RA": 99}) == 9
    shift = P.head_bias_shift(model, res.model, lab.request.classes)
    assert shift["mean_shift"] == 0.0  # DAMP leaves every bias untouched
    assert P.linear_cka(np.eye(5)[:, :3], np.eye(5)[:, :3]) == pytest.approx(1.0)
