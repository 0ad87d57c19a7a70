"""A model against the oracles: its metrics beside their mean, the evidence of :func:`core.eval.evidence.judge`
(verdict, criteria, spread, KLoM, per-sample membership) and the population attacks; the prediction shifts the
pages draw (transitions, changed test images)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from core import bundle
from core.bundle import train_seconds, train_seed
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import evidence
from core.eval import metrics as M
from core.eval.membership import svc_mia
from core.models.base import Classifier

# SVC is quadratic in its shadow set: measured on a 2-core CPU, 2,000 samples per side fit in ~0.8 s per model,
# 5,000 in ~5 s; a comparison fits one per model (the method, the original, each oracle) on the confidence feature.
SVC_PER_SIDE = 2000


@dataclass
class Comparison:
    """One model against the finished oracles (issue 14): its metrics beside the oracles' mean, and the evidence
    of ``evidence.judge``, namely the verdict in one sentence, the criteria it rests on, each metric's oracle
    spread, KLoM per split and the per-sample membership table, plus the population attacks (loss and SVC)."""

    metrics: dict  # the model's own metrics, its PG / KL / AvgGap to the oracles, seconds and speed-up
    oracle_metrics: dict  # the oracles' mean of each metric
    oracles: list[dict]  # key, seed, weights SHA-256 and training time of each oracle used
    verdict: str  # looks unseen | not forgotten | over-forgotten | inconclusive
    sentence: str
    scenario: str  # "class" or "sample": which rule applies (evidence.SCENARIOS)
    criteria: list[dict]
    spread: dict | None  # evidence.oracle_spread
    klom: dict | None  # per split (forget, retain, val): KLoM and KLoM-Gauss P50 / P95
    membership: dict | None  # offline LiRA summaries (model, original, left-out oracles) and the ranked ``rows``
    population: PopulationAttacks | None = field(default=None, repr=False, compare=False)  # see ``attacks``

    @property
    def attacks(self) -> dict:
        """Loss-attack AUROC and SVC MIA-efficacy per model (``PopulationAttacks``), computed when first read;
        empty when they cannot be computed for this request (``attacks_error`` says why)."""
        return self.population.value() if self.population is not None else {}

    @property
    def attacks_error(self) -> str | None:
        """Why ``attacks`` is empty, when they could not be computed (read after computing them)."""
        if self.population is None:
            return None
        self.population.value()
        return self.population.error

    @property
    def k(self) -> int:
        return len(self.oracles)

    @property
    def oracle_seeds(self) -> list[int]:
        return [o["seed"] for o in self.oracles]

    @property
    def oracle_keys(self) -> list[str]:
        return [o["key"] for o in self.oracles]

    @property
    def rule(self) -> str:
        return evidence.RULE

    @property
    def scenario_rule(self) -> str:
        return evidence.SCENARIOS[self.scenario]


def _oracle_entry(model: bundle.TrainedModel) -> dict:
    return {"key": model.key, "seed": train_seed(model), "weights_sha256": model.meta.get("weights_sha256"),
            "train_s": train_seconds(model), "recorded": bool(model.meta.get("recorded"))}


def attacks(model: Classifier, dataset: Dataset, request: ForgetRequest) -> dict:
    """The population attacks on D_f of one model: the loss-threshold AUROC (held-out set of ``M.heldout_for``)
    and the SVC MIA-efficacy on the confidence feature (l1-sparse / SalUn; EVIDENCE §3). Memoised on the
    (immutable) model: an oracle's stay valid when a further oracle finishes. A recorded oracle brings those of
    its own request, computed from its full predictions when it was recorded (``core.recorded``)."""
    if (done := getattr(model, "recorded_attacks", {}).get(request.key())) is not None:
        return done
    memo, key = model.__dict__.setdefault("_attacks", {}), (dataset.fingerprint(), request.key())
    if key not in memo:
        forget, y_tr = request.mask(dataset.num_train), dataset.y_train
        if forget.all():
            raise ValueError("the request forgets every training sample: nothing is left to train an attack on")
        tr, te = model.split_proba(dataset, "train"), model.split_proba(dataset, "test")
        svc = svc_mia(tr[forget], y_tr[forget], tr[~forget], y_tr[~forget], te, dataset.y_test,
                      max_per_side=SVC_PER_SIDE, features=("confidence",))
        memo[key] = {"loss_auroc": M.split_metrics(model, dataset, request)["MIA"], "svc_efficacy": svc["headline"],
                     "svc_members": svc["n_members"], "svc_nonmembers": svc["n_nonmembers"]}
    return memo[key]


class PopulationAttacks:
    """The population attacks of a comparison's models, computed when first read and then kept: an SVC fit per
    model is most of a comparison's cost, and the Predictions page draws them below the verdict and the metrics
    table, which come first. Every copy ``compare`` hands out shares one."""

    def __init__(self, models: dict[str, Classifier], dataset: Dataset, request: ForgetRequest):
        self._inputs: tuple | None = (models, dataset, request)
        self._value: dict | None = None
        self.error: str | None = None  # why there are none, when they could not be computed
        self._lock = threading.Lock()

    def value(self) -> dict:
        with self._lock:  # two pages reading at once: one computes, the other waits for its result
            if self._value is None:
                models, dataset, request = self._inputs
                try:
                    self._value = {name: attacks(m, dataset, request) for name, m in models.items()}
                except ValueError as err:  # e.g. no held-out set matches D_f's classes: said where they are shown
                    self._value, self.error = {}, str(err)
                self._inputs = None  # the models are not kept alive for this
            return self._value

    def __getstate__(self) -> dict:
        return {"value": self.value(), "error": self.error}

    def __setstate__(self, state: dict) -> None:
        self._inputs, self._value, self.error, self._lock = None, state["value"], state["error"], threading.Lock()


def compare(model: Classifier, original: bundle.TrainedModel, oracle_models: Sequence[bundle.TrainedModel],
            dataset: Dataset, request: ForgetRequest, seconds: float | None = None) -> Comparison:
    """``model`` (the original after unlearning) against every finished oracle: ``evidence.judge`` with
    ``original`` as the untouched reference, the metrics against the oracles' mean, and the population attacks
    (computed when ``attacks`` is first read).
    Memoised on the (immutable) model per original, oracle set, dataset and request."""
    if not oracle_models:
        raise ValueError("no oracle has finished yet: a comparison needs at least one model retrained without the "
                         "forgotten samples")
    if len(request.ids) == 0:
        raise ValueError("the request has no forgotten sample: there is nothing to compare")
    if request.mask(dataset.num_train).all():  # checked here: the attacks that need a retain set come later
        raise ValueError("the request forgets every training sample: nothing is left to train an attack on")
    own = train_seed(original)
    shared = [o.key for o in oracle_models if train_seed(o) == own and o.meta.get("kind") == original.meta.get("kind")]
    if shared:
        raise ValueError(f"oracle {shared[0]} was trained with the original's seed {own}: its initial weights and "
                         "data order are the original's, so it would understate the gap; use oracle_offsets")
    key = (original.key, tuple(o.key for o in oracle_models), dataset.fingerprint(), request.key())
    memo = model.__dict__.setdefault("_comparisons", {})
    # two redraws of a page (or two pages) may ask at once: one computes, the other waits for its result
    with model.__dict__.setdefault("_comparisons_lock", threading.Lock()):
        if key not in memo:
            memo[key] = _compared(model, original, oracle_models, dataset, request)
    out = memo[key]
    metrics = dict(out.metrics)
    if seconds is not None:
        metrics["seconds"] = seconds
        oracle_s = [o["train_s"] for o in out.oracles if o["train_s"]]
        if oracle_s:
            metrics["speedup"] = float(np.mean(oracle_s)) / max(seconds, 1e-9)
    return replace(out, metrics=metrics)


def _compared(model: Classifier, original: bundle.TrainedModel, oracle_models: Sequence[bundle.TrainedModel],
              dataset: Dataset, request: ForgetRequest) -> Comparison:
    """The work of ``compare``, unmemoised."""
    classifiers = [o.classifier for o in oracle_models]
    judged = evidence.judge(model, original.classifier, classifiers, dataset, request)
    own_metrics = M.split_metrics(model, dataset, request)
    oracle_metrics = [M.split_metrics(o, dataset, request) for o in classifiers]
    own_metrics.update(M.gaps_to_oracles(own_metrics, model.split_proba(dataset, "test"), oracle_metrics,
                                         [o.split_proba(dataset, "test") for o in classifiers]))
    models = {"method": model, "original": original.classifier,
              **{f"oracle {i}": o for i, o in enumerate(classifiers, 1)}}
    return Comparison(own_metrics, M.mean_metrics(oracle_metrics), [_oracle_entry(o) for o in oracle_models],
                      judged["verdict"], judged["sentence"], judged["scenario"], judged["criteria"],
                      judged["spread"], judged["klom"], judged["membership"],
                      PopulationAttacks(models, dataset, request))


def transition_matrix(before: np.ndarray, after: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j]: test images predicted i before unlearning and j after."""
    out = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(out, (before.argmax(1), after.argmax(1)), 1)
    return out


def changed_predictions(before: np.ndarray, after: np.ndarray, oracle_probs: np.ndarray | None = None,
                        labels: np.ndarray | None = None, limit: int | None = None) -> list[dict]:
    """Test rows whose predicted class changed, largest confidence shift first."""
    b, a = before.argmax(1), after.argmax(1)
    rows = np.flatnonzero(b != a)
    shift = np.abs(after - before).sum(1)[rows]
    rows = rows[np.argsort(-shift, kind="stable")][:limit]
    out = []
    for i in rows:
        row = {"test_id": int(i), "before": int(b[i]), "before_conf": float(before[i, b[i]]),
               "after": int(a[i]), "after_conf": float(after[i, a[i]])}
        if oracle_probs is not None:
            o = int(oracle_probs[i].argmax())
            row.update(oracle=o, oracle_conf=float(oracle_probs[i, o]))
        if labels is not None:
            row["label"] = int(labels[i])
        out.append(row)
    return out
