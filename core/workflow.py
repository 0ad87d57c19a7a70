"""The operations the pages and the CLI share: originals, oracles, method runs, comparisons.

dataset -> model (trained or loaded) -> forget request -> method run -> evaluation against K oracles.

The oracles of a (model, request) are the original's recipe retrained without D_f with seeds moved by 1..K
(``oracle_offsets``): each has its own initialisation and data order and none is the original's (issue 14;
EVIDENCE.md "Oracles"). A comparison uses every oracle that has finished, says how many, and is redone when
another one finishes (``rescore``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from core import bundle, store
from core import recorded as recorded_oracles
from core.backend import Backend, Job, Task
from core.bundle import train_seconds, train_seed  # noqa: F401  (callers read them here)
from core.comparison import Comparison, compare  # noqa: F401  (re-exported)
from core.configs import config_hash, config_to_dict
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest, request_classes
from core.errors import InputError
from core.models import get_model_kind
from core.models.base import CancelToken, Classifier, Progress, no_progress
from core.unlearn import get_method

DEFAULT_ORACLES = 3  # EVIDENCE.md "Oracles": K = 3 on a CPU; set UE_ORACLES (or --oracles) higher on a cluster


def oracle_count(value: int | str | None = None) -> int:
    """How many oracles a comparison trains: ``value``, else $UE_ORACLES, else DEFAULT_ORACLES (at least 1;
    a verdict needs 2, per-sample evidence 3)."""
    raw = value if value is not None else os.environ.get("UE_ORACLES", DEFAULT_ORACLES)
    try:
        k = int(raw)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or str(raw).strip() != str(k):
        raise InputError(f"oracle count {raw!r} (UE_ORACLES or --oracles) is not a whole number of oracles of at "
                         f"least 1; {DEFAULT_ORACLES} is the default, more give a tighter spread")
    return k


def oracle_offsets(k: int | str | None = None) -> list[int]:
    """The seed offsets of the K oracles: 1..K, so that none starts from the original's seed (offset 0), and
    the first k of a larger K are the same models."""
    return list(range(1, oracle_count(k) + 1))


def original(kind: str, dataset: Dataset, progress: Progress = no_progress, cancel: CancelToken | None = None,
             **kwargs) -> bundle.TrainedModel:
    """The model of ``kind`` trained on the full training set."""
    return bundle.train_or_load(kind, dataset, progress=progress, cancel=cancel, **kwargs)


def oracle(kind: str, dataset: Dataset, request: ForgetRequest, seed_offset: int,
           progress: Progress = no_progress, cancel: CancelToken | None = None, **kwargs) -> bundle.TrainedModel:
    """The same recipe retrained from scratch without ``request``'s samples (seed + ``seed_offset``), here.
    The offset has no default: offset 0 shares the original's seed (initial weights and data order), which
    ``compare`` refuses; the oracles a comparison uses are ``oracle_offsets`` (see ``oracles``)."""
    tc = oracle_train_config(kind, dataset, seed_offset, kwargs.pop("train_config", None))
    return bundle.train_or_load(kind, dataset, train_config=tc, excluded=request, progress=progress,
                                cancel=cancel, **kwargs)


def oracles(kind: str, dataset: Dataset, request: ForgetRequest, k: int | None = None,
            progress: Progress = no_progress, **kwargs) -> list[bundle.TrainedModel]:
    """The K oracles of ``request`` (seed offsets 1..K), trained here or loaded: for scripts and benches; the
    pages, the CLI and sweeps train them in parallel on Ray (``oracle_jobs``)."""
    return [oracle(kind, dataset, request, offset, progress, **kwargs) for offset in oracle_offsets(k)]


def oracle_train_config(kind: str, dataset: Dataset, seed_offset: int = 0, base=None):
    """The original's recipe (``base`` or the kind's own) with the seed moved by ``seed_offset``."""
    base = base or bundle.recipe(dataset, kind)
    return replace(base, seed=base.seed + seed_offset)


def model_job(engine: Backend, kind: str, dataset: Dataset, request: ForgetRequest | None = None,
              seed_offset: int = 0, config=None, train_config=None, owner: str | None = None,
              start: bool = True, gpu: bool = False, cpus: int = 1, train: bool = True) -> Job | None:
    """The job that makes the original (``request`` None) or an oracle without ``request`` (its recipe's seed
    moved by ``seed_offset``): a stored model loads in this process (seconds, never behind training), any
    other trains on Ray with ``cpus`` cores (one by default, so that oracles train side by side). Keyed by
    the model's store key, so every caller asking for it shares one job. With ``start`` False, only an
    existing job is returned; with ``train`` False, a stored model still loads but none is sent to train (None).
    A failed job is returned as it is, its error saying why, not started again by every caller that asks (a page
    asks at each redraw): ``Backend.discard`` it to try again."""
    base_tc = tc = train_config or bundle.recipe(dataset, kind)
    if seed_offset:
        tc = oracle_train_config(kind, dataset, seed_offset, tc)
    store_key = bundle.resolve(kind, dataset, config, tc, request)[2]
    key = f"{'model' if request is None else 'oracle'}:{kind}:{store_key}"
    job = engine.get(key)
    if job is not None and (job.active or job.finished_ok or job.state == "failed" or not start):
        if owner and start:
            job.owners.add(owner)
        if job.state == "queued" and request is not None and not job.local:  # a measurement may exist by now
            _estimate(job, engine, kind, dataset, config, base_tc, request)
        return job
    if not start:
        return None
    title = f"{kind} on {dataset.name}" if request is None else \
        f"{kind} oracle {f'#{seed_offset} ' if seed_offset else ''}without {request.description}"
    if bundle.is_available(kind, dataset, config, tc, request):
        def load(progress, cancel):
            return bundle.train_or_load(kind, dataset, config, tc, request, progress=progress, allow_train=False)

        return engine.run_local(key, f"loading {title}", load, owner)
    if not train:
        return None
    job = engine.submit(key, title, train_remote(kind, dataset, request, 0, config, tc, gpu, cpus), owner)
    if job.expected_s is None and request is not None:
        _estimate(job, engine, kind, dataset, config, base_tc, request)
    return job


STORED_ORIGINAL = "the stored original's training"  # what a queued oracle's estimate was judged from (its text)
SIBLINGS_RUNNING = "its sibling oracles' progress here"


def _estimate(job: Job, engine: Backend, kind: str, dataset: Dataset, config, train_config,
              request: ForgetRequest) -> None:
    """Set a queued oracle's ``expected_s``: measured on this backend when one of its recipe has trained here,
    else the stored original's training time, else left as it is."""
    if (measured := measured_train_seconds(engine, kind, dataset, config, train_config, request)) is not None:
        job.expected_s, job.expected_from = measured, "the last one trained here"
    elif job.expected_s is None:
        stored = bundle.expected_train_seconds(kind, dataset, config, train_config, request)
        if stored is not None:
            job.expected_s, job.expected_from = stored, STORED_ORIGINAL


def measured_train_seconds(engine: Backend, kind: str, dataset: Dataset, config, train_config,
                           request: ForgetRequest) -> float | None:
    """How long a model of this recipe (any seed, any excluded set) without ``request`` should take on this
    backend's workers: the latest one trained there, start to finish, scaled by the share of training samples
    kept. None before one has finished; ``bundle.expected_train_seconds`` (the stored original's time, measured
    on whichever machine trained it) is the fallback."""
    recipe = _recipe_without_seed(*bundle.resolve(kind, dataset, config, train_config)[:2])
    latest = None
    for job in engine.jobs():
        meta = getattr(job.result, "meta", None)
        if job.local or not job.finished_ok or not isinstance(meta, dict) or not meta.get("num_train_ids") or \
                meta.get("dataset_fingerprint") != dataset.fingerprint() or meta.get("kind") != kind:
            continue
        if (latest is None or job.finished > latest.finished) and \
                _recipe_without_seed(meta.get("config"), meta.get("train_config")) == recipe:
            latest = job
    if latest is None:
        return None
    kept = dataset.num_train - len(request.ids)
    return latest.elapsed * kept / latest.result.meta["num_train_ids"]


def _recipe_without_seed(config, train_config) -> tuple[str, str]:
    """A recipe as comparable JSON (configs or their dicts), the seed and device left out."""
    config = config if isinstance(config, dict) else config_to_dict(config)
    tc = {k: v for k, v in (train_config if isinstance(train_config, dict) else config_to_dict(train_config)).items()
          if k not in ("seed", "device")}
    return json.dumps(config, sort_keys=True, default=str), json.dumps(tc, sort_keys=True, default=str)


def oracle_jobs(engine: Backend, kind: str, dataset: Dataset, request: ForgetRequest, k: int | None = None,
                config=None, train_config=None, owner: str | None = None, start: bool = True,
                gpu: bool = False, recorded: bool = False, train: bool = True) -> list[Job | None]:
    """The jobs of the K oracles of ``request`` (seed offsets 1..K), in parallel on Ray (``model_job``); with
    ``start`` False, the jobs that exist (None for the others); with ``train`` False, those and the stored ones,
    none sent to train. With ``recorded``, an oracle that is not trained
    but was recorded (``core.recorded``) comes as a finished job holding its recorded predictions, enough for a
    comparison but not for what needs weights; a trained oracle always comes first."""
    jobs = [_oracle_job(engine, kind, dataset, request, offset, config, train_config, owner, start, gpu, recorded,
                        train) for offset in oracle_offsets(k)]
    estimate_from_siblings(jobs)
    return jobs


def estimate_from_siblings(jobs: list[Job | None]) -> None:
    """Set the ``expected_s`` of the queued ones among the K oracles of one request (one recipe, one excluded set,
    other seeds) from those running on a worker now, once their progress says enough: the shortest time so far over
    progress. Only where the estimate was the stored original's time (measured on whichever machine trained it,
    on this machine up to several times off) or missing; one measured here stays."""
    running = [j for j in jobs if j is not None and not j.local and j.state == "running" and j.progress >= 0.02
               and j.elapsed >= 1.0]
    if not running:
        return
    total = min(j.elapsed / j.progress for j in running)
    for job in jobs:
        if job is not None and job.state == "queued" and not job.local and \
                job.expected_from in ("", STORED_ORIGINAL, SIBLINGS_RUNNING):
            job.expected_s, job.expected_from = total, SIBLINGS_RUNNING


def _oracle_job(engine: Backend, kind: str, dataset: Dataset, request: ForgetRequest, offset: int, config,
                train_config, owner: str | None, start: bool, gpu: bool, recorded: bool,
                train: bool = True) -> Job | None:
    trained = model_job(engine, kind, dataset, request, offset, config, train_config, owner, start=False)
    note = ""
    if recorded and not (trained is not None and trained.finished_ok):
        tc = oracle_train_config(kind, dataset, offset, train_config)
        if not bundle.is_available(kind, dataset, config, tc, request):
            store_key = bundle.resolve(kind, dataset, config, tc, request)[2]
            try:
                model = recorded_oracles.find(store_key, dataset)
            except store.StoreError as err:  # damaged: the oracle trains, and its job says why
                model, note = None, f"{err} Training this oracle instead."
            if model is not None:
                return engine.add_done(f"recorded:{kind}:{store_key}", f"{kind} oracle #{offset} without "
                                       f"{request.description}, recorded", model, owner)
    job = model_job(engine, kind, dataset, request, offset, config, train_config, owner, start, gpu, train=train)
    if job is not None and note:
        job.note = note
    return job


def first_class_with_oracle(kind: str, dataset: Dataset) -> int:
    """The first class whose first oracle (seed + 1) loads without training (stored or shipped), else 0."""
    tc = oracle_train_config(kind, dataset, 1)
    return next((c for c in range(dataset.num_classes)
                 if bundle.is_available(kind, dataset, train_config=tc, excluded=request_classes(dataset, [c]))), 0)


def read_class_records(kind: str, dataset: Dataset, train_config=None) -> int:
    """Read and check the recorded oracles of every one-class request on ``dataset`` (``core.recorded`` keeps them),
    so that the first Forget click on a class does not wait for its files; returns how many were found. A damaged
    record is left for the click to name (``oracle_jobs``)."""
    found = 0
    for c in range(dataset.num_classes):
        request = request_classes(dataset, [c])
        for offset in oracle_offsets():
            tc = oracle_train_config(kind, dataset, offset, train_config)
            key = bundle.resolve(kind, dataset, None, tc, request)[2]
            try:
                found += recorded_oracles.find(key, dataset) is not None
            except store.StoreError:
                pass
    return found


def finished(jobs: Sequence[Job | None]) -> list[bundle.TrainedModel]:
    """The models of the jobs that have finished successfully, in job order."""
    return [j.result for j in jobs if j is not None and j.finished_ok]




def run_method(method: str, model: Classifier, dataset: Dataset, request: ForgetRequest, config=None,
               progress: Progress = no_progress, cancel: CancelToken | None = None):
    """Apply a registered unlearning method to ``model`` for ``request``."""
    spec = get_method(method)
    if model.kind not in spec.model_kinds:
        raise ValueError(f"{method} applies to {', '.join(spec.model_kinds)} models, not {model.kind}")
    if spec.class_only and not request.classes:
        raise ValueError(f"{method} forgets whole classes; pick classes rather than samples")
    return spec.run(model, dataset, request, config or spec.config_cls(), progress, cancel)


def run_key(method: str, model_key: str, request: ForgetRequest, config) -> str:
    return f"{method}-{config_hash(method, model_key, request.key(), config)}"


@dataclass
class MethodRun:
    """One method applied to one model for one request: the unlearned model, its cost, and, once scored,
    its comparison with the oracles. The pages, the CLI, the sweeps and the benches all make it with
    :func:`execute` (or the Ray task :func:`method_task`) and score it with :func:`score`."""

    method: str
    kind: str
    config: object
    request: ForgetRequest
    original_key: str
    model: Classifier
    seconds: float | None  # None: not measured here (weights unlearned elsewhere, :func:`supplied_run`)
    touched: dict = field(default_factory=dict)
    log: dict = field(default_factory=dict)
    weights_sha256: str | None = None  # of the unlearned weights (None for a by-design memory edit)
    comparison: Comparison | None = None
    oracle_seconds: float | None = None

    @property
    def key(self) -> str:
        return run_key(self.method, self.original_key, self.request, self.config)

    @property
    def label(self) -> str:
        """The run's name for people: its method, or for supplied weights the file they came from."""
        return f"{SUPPLIED} ({self.config.file})" if self.method == SUPPLIED else self.method


SUPPLIED = "supplied"  # the method name of weights unlearned elsewhere and judged here


@dataclass(frozen=True)
class SuppliedWeights:
    """Weights unlearned outside this project, judged here against the oracles: the file they came from (as the
    user named it) and the SHA-256 of its bytes as supplied. The run's config, so its key and report name them."""

    file: str
    sha256: str


def check_supplied_kind(kind: str) -> None:
    """Supplied unlearned weights are judged on a network that forgets by its weights (ValueError otherwise)."""
    if get_model_kind(kind).by_design:
        raise ValueError(f"{kind} forgets by deleting samples from its memory, not by changing its weights: "
                         "supplied unlearned weights are judged on a network that forgets by its weights "
                         "(the parametric model)")


def supplied_run(original: bundle.TrainedModel, dataset: Dataset, request: ForgetRequest, data: bytes,
                 source_name: str) -> MethodRun:
    """Weights that someone says were unlearned for ``request`` elsewhere (safetensors bytes of ``original``'s
    architecture and config), as a run to score against the oracles like any method's: an auditor's check of a
    deletion done with another tool. Checked strictly (names, shapes, dtypes, finite values; a
    :class:`core.errors.StoreError` names ``source_name``); nothing is unpickled. Its time is unknown (None), and
    its weights' hash is that of the file as supplied."""
    from core.validate import load_checkpoint

    kind = original.meta["kind"]
    check_supplied_kind(kind)
    spec = get_model_kind(kind)
    config = store.config_of(original.meta, spec.config_cls)
    state = load_checkpoint(data, kind, dataset, source_name, config=config)
    model = bundle.from_weights(kind, dataset, state, config, where=source_name)
    sha = hashlib.sha256(data).hexdigest()
    return MethodRun(SUPPLIED, kind, SuppliedWeights(source_name, sha), request, original.key, model, None,
                     log={"supplied_file": source_name}, weights_sha256=sha)


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
                 config=None, train_config=None, gpu: bool = False, cpus: int = 1) -> Task:
    """The Ray task that trains a model (the original, or an oracle without ``excluded``); the worker returns
    its weights, the driver stores them and loads the model (the task's result is a TrainedModel)."""
    base = train_config or bundle.recipe(dataset, kind)
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
                num_cpus=cpus, num_gpus=1 if gpu else 0)


def score(run: MethodRun, original: bundle.TrainedModel, oracle_models: Sequence[bundle.TrainedModel],
          dataset: Dataset) -> MethodRun:
    """Compare ``run``'s model with the finished ``oracle_models`` (``compare``, the ``original`` as the untouched
    reference); sets ``run.comparison`` and ``run.oracle_seconds`` (their mean training time). Scoring runs where
    the models live: the UI process or the sweep's driver."""
    times = [t for t in (train_seconds(o) for o in oracle_models) if t]
    run.oracle_seconds = float(np.mean(times)) if times else None
    run.comparison = compare(run.model, original, oracle_models, dataset, run.request, run.seconds)
    return run


def rescore(run: MethodRun, original: bundle.TrainedModel, oracle_models: Sequence[bundle.TrainedModel],
            dataset: Dataset) -> bool:
    """Score ``run`` unless its comparison already rests on exactly ``oracle_models`` (none finished: nothing to
    do); True when it scored, so that the caller records the new comparison."""
    if not oracle_models:
        return False
    if run.comparison is not None and run.comparison.oracle_keys == [o.key for o in oracle_models]:
        return False
    score(run, original, oracle_models, dataset)
    return True


def unlearned_key(run: MethodRun) -> str:
    """The store key of a post-hoc run's unlearned weights: the run's key and the weights' hash (a rerun of the
    same run on other hardware may differ in the last bits, and each result is kept)."""
    return f"unlearned-{run.key}-{run.weights_sha256[:16]}"


def store_unlearned(run: MethodRun) -> store.StoredModel | None:
    """Keep a post-hoc run's unlearned weights (safetensors, under ``models/unlearned-<run key>-<hash>``) so
    that an auditor can hash and reload exactly the model that was judged; their SHA-256 must equal the run's.
    A by-design deletion moves no weight (None: its network is the original's); supplied weights are the user's
    own file, not copied into the store (None)."""
    if run.weights_sha256 is None or run.method == SUPPLIED:
        return None
    stored = store.find_model(unlearned_key(run))
    if stored is not None:
        return stored
    weights = bundle.state_bytes(_single_network(run.model))
    if hashlib.sha256(weights).hexdigest() != run.weights_sha256:
        raise store.StoreError(f"{run.method}: the unlearned weights here differ from those the run produced "
                               f"(SHA-256 {run.weights_sha256[:16]}…); run it again")
    original = store.find_model(run.original_key)
    meta = {"kind": run.kind, "config": original.meta["config"] if original else None,
            "original_key": run.original_key, "method": run.method, "method_config": config_to_dict(run.config),
            "request": run.request.to_json()}
    return store.save_model_bytes(unlearned_key(run), weights, meta)


def record(run: MethodRun, dataset: Dataset, seed: int | None = None, timings: dict | None = None) -> str:
    """Store a scored run: its unlearned weights (post-hoc runs), its folder (record with the evidence, test
    predictions) and its row in the runs table with the oracles' seeds, their number and the verdict."""
    from core import runs_db

    comparison = run.comparison
    if comparison is None:
        raise ValueError("score the run before recording it")
    store_unlearned(run)
    key = save_comparison(run.method, run.original_key, run.request, run.config, comparison, run.seconds,
                          run.model.split_proba(dataset, "test"), {"touched": run.touched, "kind": run.kind})
    metrics = {k: float(v) for k, v in comparison.metrics.items() if isinstance(v, (int, float))}
    metrics.update({c["name"]: c["value"] for c in comparison.criteria if c["name"] not in metrics})
    if "method" in comparison.attacks:
        metrics["svc_efficacy"] = comparison.attacks["method"]["svc_efficacy"]
    runs_db.upsert(runs_db.RunRow(
        run_key=key, dataset=dataset.name, model=run.kind, method=run.method,
        config_hash=config_hash(run.config), config=config_to_dict(run.config),
        request_hash=run.request.key(), request_desc=run.request.description,
        request_kind=request_kind(run.request), seed=seed, metrics=metrics,
        timings={"method_s": run.seconds, "oracle_s": run.oracle_seconds or 0.0, **(timings or {})},
        weights_sha256=run.weights_sha256 or "", versions=store.versions(),
        oracle_seeds=comparison.oracle_seeds, oracle_k=comparison.k, verdict=comparison.verdict,
        status="done", error=""))
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
              "oracles": comparison.oracles, "verdict": comparison.verdict, "sentence": comparison.sentence,
              "scenario": comparison.scenario, "criteria": comparison.criteria, "spread": comparison.spread,
              "klom": comparison.klom, "membership": comparison.membership, "attacks": comparison.attacks,
              **(extra or {})}
    store.save_run(key, record, {"test_probs": test_probs.astype(np.float32)})
    return key
