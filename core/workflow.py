"""The operations the pages and the CLI share: originals, oracles, method runs, comparisons.

dataset -> model (trained or loaded) -> forget request -> method run -> evaluation against the oracle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np

from core import bundle, store
from core.backend import Backend, Job, Task
from core.configs import config_hash, config_to_dict
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest
from core.eval import metrics as M
from core.models import get_model_kind
from core.models.base import CancelToken, Classifier, Progress, no_progress
from core.unlearn import get_method

NOISE_FLOOR_SEED_OFFSET = 1  # the second oracle uses seed + 1: the noise floor is oracle(seed) vs oracle(seed+1)


def original(kind: str, dataset: Dataset, progress: Progress = no_progress, cancel: CancelToken | None = None,
             **kwargs) -> bundle.TrainedModel:
    """The model of ``kind`` trained on the full training set."""
    return bundle.train_or_load(kind, dataset, progress=progress, cancel=cancel, **kwargs)


def oracle(kind: str, dataset: Dataset, request: ForgetRequest, seed_offset: int = 0,
           progress: Progress = no_progress, cancel: CancelToken | None = None, **kwargs) -> bundle.TrainedModel:
    """The same recipe retrained from scratch without ``request``'s samples (seed + ``seed_offset``)."""
    tc = oracle_train_config(kind, dataset, seed_offset, kwargs.pop("train_config", None))
    return bundle.train_or_load(kind, dataset, train_config=tc, excluded=request, progress=progress,
                                cancel=cancel, **kwargs)


def oracle_train_config(kind: str, dataset: Dataset, seed_offset: int = 0, base=None):
    """The original's recipe (``base`` or the kind's own) with the seed moved by ``seed_offset``."""
    base = base or bundle.recipe(dataset.name, kind)
    return replace(base, seed=base.seed + seed_offset)  # the noise floor compares two seeds


def model_job(engine: Backend, kind: str, dataset: Dataset, request: ForgetRequest | None = None,
              seed_offset: int = 0, config=None, train_config=None, owner: str | None = None,
              start: bool = True, gpu: bool = False) -> Job | None:
    """The job that makes the original (``request`` None) or an oracle without ``request`` (its recipe's seed
    moved by ``seed_offset``): a stored model loads in this process (seconds, never behind training), any
    other trains on Ray. Keyed by the model's store key, so every caller asking for it shares one job.
    With ``start`` False, only an existing job is returned."""
    tc = train_config or bundle.recipe(dataset.name, kind)
    if seed_offset:
        tc = oracle_train_config(kind, dataset, seed_offset, tc)
    store_key = bundle.resolve(kind, dataset, config, tc, request)[2]
    key = f"{'model' if request is None else 'oracle'}:{kind}:{store_key}"
    job = engine.get(key)
    if job is not None and (job.active or job.finished_ok or not start):
        if owner and start:
            job.owners.add(owner)
        return job
    if not start:
        return None
    title = f"{kind} on {dataset.name}" if request is None else \
        f"{kind} oracle without {request.description}" + (f" (seed +{seed_offset})" if seed_offset else "")
    if bundle.is_available(kind, dataset, config, tc, request):
        def load(progress, cancel):
            return bundle.train_or_load(kind, dataset, config, tc, request, progress=progress, allow_train=False)

        return engine.run_local(key, f"loading {title}", load, owner)
    return engine.submit(key, title, train_remote(kind, dataset, request, 0, config, tc, gpu=gpu), owner)


def train_seconds(model: bundle.TrainedModel) -> float | None:
    log = model.meta.get("train_log") or {}
    return log.get("train_s")


def run_method(method: str, model: Classifier, dataset: Dataset, request: ForgetRequest, config=None,
               progress: Progress = no_progress, cancel: CancelToken | None = None):
    """Apply a registered unlearning method to ``model`` for ``request``."""
    spec = get_method(method)
    if model.kind not in spec.model_kinds:
        raise ValueError(f"{method} applies to {', '.join(spec.model_kinds)} models, not {model.kind}")
    if spec.class_only and not request.classes:
        raise ValueError(f"{method} forgets whole classes; pick classes rather than samples")
    return spec.run(model, dataset, request, config or spec.config_cls(), progress, cancel)


@dataclass
class Comparison:
    """One model's metrics against the oracle, with the oracle-vs-oracle noise floor beside them."""

    metrics: dict
    oracle_metrics: dict
    noise_floor: dict | None

def compare(model: Classifier, oracle_model: Classifier, dataset: Dataset, request: ForgetRequest,
            second_oracle: Classifier | None = None, seconds: float | None = None,
            oracle_seconds: float | None = None) -> Comparison:
    metrics = M.evaluate(model, oracle_model, dataset, request, seconds, oracle_seconds)
    oracle_metrics = M.split_metrics(oracle_model, dataset, request)
    floor = M.noise_floor(oracle_model, second_oracle, dataset, request) if second_oracle is not None else None
    return Comparison(metrics, oracle_metrics, floor)


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


def run_key(method: str, model_key: str, request: ForgetRequest, config) -> str:
    return f"{method}-{config_hash(method, model_key, request.key(), config)}"


@dataclass
class MethodRun:
    """One method applied to one model for one request: the unlearned model, its cost, and, once scored,
    its comparison with the oracle. The pages, the CLI, the sweeps and the benches all make it with
    :func:`execute` (or the Ray task :func:`method_task`) and score it with :func:`score`."""

    method: str
    kind: str
    config: object
    request: ForgetRequest
    original_key: str
    model: Classifier
    seconds: float
    touched: dict = field(default_factory=dict)
    log: dict = field(default_factory=dict)
    weights_sha256: str | None = None  # of the unlearned weights (None for a by-design memory edit)
    comparison: Comparison | None = None
    oracle_seconds: float | None = None

    @property
    def key(self) -> str:
        return run_key(self.method, self.original_key, self.request, self.config)


@dataclass
class MethodOutput:
    """What a worker sends back from a method run: weights as safetensors bytes, never a pickled model."""

    weights: bytes
    seconds: float
    touched: dict
    log: dict
    split_probs: dict[str, np.ndarray] = field(default_factory=dict)  # evaluated on the worker too


SPLITS = ("test", "train")


def _single_network(model: Classifier):
    nets = model.networks()
    if len(nets) != 1:
        raise ValueError(f"{model.kind} has {len(nets)} networks; a remote method run needs exactly one")
    return next(iter(nets.values()))


def execute(method: str, original_model: bundle.TrainedModel, dataset: Dataset, request: ForgetRequest,
            config=None, progress: Progress = no_progress, cancel: CancelToken | None = None) -> MethodRun:
    """Run a method here (the by-design deletions, the CLI without Ray, the benches)."""
    config = config or get_method(method).config_cls()
    result = run_method(method, original_model.classifier, dataset, request, config, progress, cancel)
    sha = None if get_model_kind(original_model.meta["kind"]).by_design else \
        hashlib.sha256(bundle.state_bytes(_single_network(result.model))).hexdigest()
    return MethodRun(method, original_model.meta["kind"], config, request, original_model.key, result.model,
                     result.seconds, result.touched, _plain(result.log), sha)


def method_task(method: str, kind: str, model_config, weights: bytes, dataset: Dataset, request: ForgetRequest,
                config, progress: Progress = no_progress) -> MethodOutput:
    """A method run on a Ray worker: the original arrives as weights, the unlearned model leaves as weights."""
    model = bundle.from_weights(kind, dataset, weights, model_config)
    result = run_method(method, model, dataset, request, config, progress)
    progress(0.97, "predicting the test and training sets")
    probs = {split: result.model.split_proba(dataset, split) for split in SPLITS}
    return MethodOutput(bundle.state_bytes(_single_network(result.model)), result.seconds, result.touched,
                        _plain(result.log), probs)


def method_remote(method: str, original_model: bundle.TrainedModel, dataset: Dataset, request: ForgetRequest,
                  config=None, gpu: bool = False) -> Task:
    """The Ray task for a post-hoc method run; its result (on the driver) is an unscored :class:`MethodRun`."""
    spec = get_method(method)
    config = config or spec.config_cls()
    kind = original_model.meta["kind"]
    if kind not in spec.model_kinds:
        raise ValueError(f"{method} applies to {', '.join(spec.model_kinds)} models, not {kind}")
    model_config = store.config_of(original_model.meta, get_model_kind(kind).config_cls)
    weights = bundle.state_bytes(_single_network(original_model.classifier))

    def finalize(out: MethodOutput) -> MethodRun:
        model = bundle.from_weights(kind, dataset, out.weights, model_config, device="cpu")
        for split, probs in out.split_probs.items():
            model.seed_split_proba(dataset, split, probs)
        return MethodRun(method, kind, config, request, original_model.key, model, out.seconds, out.touched,
                         out.log, hashlib.sha256(out.weights).hexdigest())

    return Task(method_task, (method, kind, model_config, weights, dataset, request, config),
                finalize=finalize, num_gpus=1 if gpu else 0)


def train_remote(kind: str, dataset: Dataset, excluded: ForgetRequest | None = None, seed_offset: int = 0,
                 config=None, train_config=None, gpu: bool = False) -> Task:
    """The Ray task that trains a model (the original, or an oracle without ``excluded``); the worker returns
    its weights, the driver stores them and loads the model (the task's result is a TrainedModel)."""
    base = train_config or bundle.recipe(dataset.name, kind)
    tc = oracle_train_config(kind, dataset, seed_offset, base) if seed_offset else base
    if gpu:
        tc = replace(tc, device="auto")

    expected = bundle.resolve(kind, dataset, config, tc, excluded)[2]

    def finalize(trained: bundle.TrainedWeights) -> bundle.TrainedModel:
        if trained.key != expected:
            raise RuntimeError(f"the worker's code differs from this process's: it trained {trained.key}, this "
                               f"process expects {expected}; run the same version of the project on both")
        bundle.save(trained)
        model = bundle.train_or_load(kind, dataset, config, replace(tc, device="cpu"), excluded, allow_train=False)
        for split, probs in trained.split_probs.items():
            model.classifier.seed_split_proba(dataset, split, probs)
        return model

    return Task(bundle.train_weights, (kind, dataset, config, tc, excluded), finalize=finalize,
                num_gpus=1 if gpu else 0)


def score(run: MethodRun, oracle_model: bundle.TrainedModel, dataset: Dataset,
          second_oracle: bundle.TrainedModel | None = None) -> MethodRun:
    """Compare ``run``'s model with the oracle (and the noise floor from a second oracle); sets
    ``run.comparison``. Scoring runs where the models live: the UI process or the sweep's driver."""
    run.oracle_seconds = train_seconds(oracle_model)
    run.comparison = compare(run.model, oracle_model.classifier, dataset, run.request,
                             second_oracle.classifier if second_oracle else None, run.seconds, run.oracle_seconds)
    return run


def record(run: MethodRun, dataset: Dataset, seed: int | None = None, oracle_seeds: list[int] | None = None,
           timings: dict | None = None) -> str:
    """Store a scored run: its folder (record + test predictions) and its row in the runs table."""
    from core import runs_db

    comparison = run.comparison
    if comparison is None:
        raise ValueError("score the run before recording it")
    key = save_comparison(run.method, run.original_key, run.request, run.config, comparison, run.seconds,
                          run.model.split_proba(dataset, "test"), {"touched": run.touched, "kind": run.kind})
    metrics = {k: float(v) for k, v in comparison.metrics.items() if isinstance(v, (int, float))}
    runs_db.upsert(runs_db.RunRow(
        run_key=key, dataset=dataset.name, model=run.kind, method=run.method,
        config_hash=config_hash(run.config), config=config_to_dict(run.config),
        request_hash=run.request.key(), request_desc=run.request.description,
        request_kind=request_kind(run.request), seed=seed, metrics=metrics,
        timings={"method_s": run.seconds, "oracle_s": run.oracle_seconds or 0.0, **(timings or {})},
        weights_sha256=run.weights_sha256 or "", versions=store.versions(),
        oracle_seeds=oracle_seeds or [], status="done", error=""))
    return key


def request_kind(request: ForgetRequest) -> str:
    if request.classes:
        return "class"
    return "random" if request.description.startswith("random") else "ids"


def _plain(log: dict) -> dict:
    """A method's log without what cannot be stored as JSON (tensors, models)."""
    out = {}
    for k, v in log.items():
        try:
            json.dumps(v, default=store.json_default)
            out[k] = v
        except (TypeError, ValueError):
            continue
    return out


def save_comparison(method: str, model_key: str, request: ForgetRequest, config, comparison: Comparison,
                    seconds: float, test_probs: np.ndarray, extra: dict | None = None) -> str:
    """Store a run (record + predictions) so it can be listed, reloaded and exported."""
    key = run_key(method, model_key, request, config)
    record = {"method": method, "model_key": model_key, "request": request.to_json(),
              "config": config_to_dict(config) if config is not None else None, "seconds": seconds,
              "metrics": comparison.metrics, "oracle_metrics": comparison.oracle_metrics,
              "noise_floor": comparison.noise_floor, **(extra or {})}
    store.save_run(key, record, {"test_probs": test_probs.astype(np.float32)})
    return key
