"""Sweeps: methods x requests x seeds as parallel Ray tasks, with the oracles they need; one row per run in the
runs table, and a rerun reuses every finished run.

A seed sets the method config's ``seed`` (batch order, random labels, sampled statistics) and, for a
``random:`` request, which samples are drawn. The original model and the K oracles of each request (seed
offsets 1..K, ``workflow.oracle_offsets``) are shared by every run that needs them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core import runs_db, workflow
from core.backend import Backend, Job
from core.configs import ConfigError
from core.data.dataset import Dataset
from core.data.requests import ForgetRequest, ForgetRequestError, request_classes, request_random
from core.errors import InputError
from core.models import get_model_kind
from core.models.base import Progress, no_progress
from core.unlearn import get_method, list_methods

MAX_RUNS = 10_000


class SweepError(InputError):
    """A sweep spec that cannot run; the message names the entry. Nothing has started."""


@dataclass(frozen=True)
class SweepItem:
    method: str
    request_text: str
    seed: int
    request: ForgetRequest
    config: object


@dataclass
class SweepResult:
    """What a sweep did: run keys by state, and how well it used the workers."""

    done: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run key -> cause
    wall_s: float = 0.0
    task_s: float = 0.0  # sum over the Ray tasks this sweep started of their running time
    workers: int = 1

    @property
    def efficiency(self) -> float:
        """Sum of task times / (wall time x workers): 1.0 means every worker was busy the whole sweep."""
        return self.task_s / max(self.wall_s * self.workers, 1e-9)

    def to_json(self) -> dict:
        return {"runs": len(self.done), "reused": len(self.reused), "failed": self.failed,
                "wall_s": self.wall_s, "task_s": self.task_s, "workers": self.workers,
                "sweep_efficiency": self.efficiency, "run_keys": self.done + self.reused}


def parse_seeds(text: str) -> list[int]:
    """``0-4`` or ``0,2,7`` (or both: ``0-2,9``) as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise SweepError(f"--seeds: {part.strip()!r} is not a seed or a range like 0-4") from None
        if first < 0 or last < first:
            raise SweepError(f"--seeds: {part.strip()!r} is not a range of non-negative seeds like 0-4")
        if last - first >= MAX_RUNS:
            raise SweepError(f"--seeds: {part.strip()!r} holds more than {MAX_RUNS:,} seeds: split the sweep")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise SweepError("--seeds: no seed given (e.g. 0-4)")
    return sorted(set(seeds))


def parse_request(dataset: Dataset, text: str, seed: int) -> ForgetRequest:
    """``class:0``, ``class:0+2`` (several classes), or ``random:0.1`` (a fraction, drawn with ``seed``)."""
    kind, _, value = text.partition(":")
    try:
        if kind == "class":
            return request_classes(dataset, [int(c) for c in value.split("+")])
        if kind == "random":
            return request_random(dataset, float(value), seed)
    except (ValueError, ForgetRequestError) as err:
        raise SweepError(f"--requests: {text!r}: {err}") from None
    raise SweepError(f"--requests: {text!r} is not class:N, class:N+M or random:FRACTION")


def plan(dataset: Dataset, model: str, methods: list[str], requests: list[str], seeds: list[int],
         method_sets: Callable[[str], object] | None = None) -> list[SweepItem]:
    """Every run of the sweep, checked before anything starts (unknown method, request or seed range, or a
    method that does not apply to the model or the request, is refused naming the entry)."""
    try:
        get_model_kind(model)
    except KeyError as err:
        raise SweepError(f"--model: {err.args[0]}") from None
    known = list_methods(model)
    for name in methods:
        if name not in known:
            raise SweepError(f"--methods: {name!r} is not a method for {model} models; known: {', '.join(known)}")
    if not requests:
        raise SweepError("--requests: nothing to forget (e.g. class:0,random:0.1)")
    if len(methods) * len(requests) * len(seeds) > MAX_RUNS:
        raise SweepError(f"the sweep has more than {MAX_RUNS:,} runs: split it")
    items = []
    for text in requests:
        for seed in seeds:
            request = parse_request(dataset, text, seed)
            for name in methods:
                spec = get_method(name)
                if spec.class_only and not request.classes:
                    raise SweepError(f"--methods: {name} forgets whole classes; it cannot run {text!r}")
                try:
                    config = method_sets(name) if method_sets else spec.config_cls()
                except ConfigError as err:
                    raise SweepError(f"--set for {name}: {err}") from None
                if any(f.name == "seed" for f in dataclasses.fields(config)):
                    config = dataclasses.replace(config, seed=seed)
                items.append(SweepItem(name, text, seed, request, config))
    return items


def run_sweep(engine: Backend, dataset: Dataset, model: str, items: list[SweepItem],
              progress: Progress = no_progress, owner: str | None = None, gpu: bool = False,
              model_config=None, train_config=None, oracles: int | None = None) -> SweepResult:
    """Run ``items`` on ``engine``: the original, each request's K oracles (``oracles``, default
    ``workflow.oracle_count()``) and each method run as Ray tasks in parallel; each run is scored here against
    every oracle that finished once none of them is still training, and written to the runs table.
    ``model_config`` and ``train_config`` (None: the kind's defaults for the dataset) make the original and
    every oracle."""
    offsets = workflow.oracle_offsets(oracles)
    start, wall_start = time.perf_counter(), time.time()
    result = SweepResult(workers=max(1, int(engine.resources().get("CPU", engine.num_cpus))))
    started: list[Job] = []

    def ray_job(key: str, title: str, task) -> Job:
        job = engine.submit(key, title, task, owner)
        started.append(job)
        return job

    def model_job(request: ForgetRequest | None, offset: int = 0) -> Job:
        job = workflow.model_job(engine, model, dataset, request, offset, model_config, train_config,
                                 owner=owner, gpu=gpu)
        if not job.local and job.submitted >= wall_start and all(j is not job for j in started):
            started.append(job)  # a Ray task this sweep started (not one shared from before)
        return job

    original_job = model_job(None)
    progress(0.0, f"{len(items)} runs: training or loading the original")
    original = original_job.wait()
    if not original_job.finished_ok:
        raise SweepError(f"the original {model} model could not be trained: {original_job.error}")

    todo: list[tuple[SweepItem, str]] = []
    for item in items:
        key = workflow.run_key(item.method, original.key, item.request, item.config)
        row = runs_db.get(key)
        if row is not None and row.status == "done":
            result.reused.append(key)
        else:
            todo.append((item, key))
    oracle_jobs: dict[str, list[Job]] = {}
    for item, _ in todo:
        if item.request.key() not in oracle_jobs:
            oracle_jobs[item.request.key()] = [model_job(item.request, offset) for offset in offsets]
    by_design = get_model_kind(model).by_design
    runs: dict[str, tuple[SweepItem, Job | workflow.MethodRun]] = {}
    for item, key in todo:
        if by_design:  # a memory edit: milliseconds, here
            runs[key] = (item, workflow.execute(item.method, original, dataset, item.request, item.config))
        else:
            task = workflow.method_remote(item.method, original, dataset, item.request, item.config, gpu=gpu)
            runs[key] = (item, ray_job(key, f"{item.method} on {item.request.description} (seed {item.seed})", task))

    pending = dict(runs)
    while pending:
        for key, (item, work) in list(pending.items()):
            jobs = oracle_jobs[item.request.key()]
            if isinstance(work, Job) and not work.active and not work.finished_ok:
                _record_failure(result, key, item, dataset, model, work.error)
                del pending[key]
                continue
            if any(j.active for j in jobs) or (isinstance(work, Job) and work.active):
                continue
            ready = workflow.finished(jobs)
            if not ready:
                _record_failure(result, key, item, dataset, model,
                                "every oracle failed: " + "; ".join(j.error or j.state for j in jobs))
                del pending[key]
                continue
            run = work.result if isinstance(work, Job) else work
            workflow.score(run, original, ready, dataset)
            workflow.record(run, dataset, seed=item.seed, timings={"wall_s": time.perf_counter() - start})
            result.done.append(key)
            del pending[key]
        jobs = [j for j in started if j is not None]
        fraction = sum(j.progress if j.active else 1.0 for j in jobs) / max(len(jobs), 1)
        progress(min(fraction, 0.999), f"{len(result.done) + len(result.failed)} of {len(todo)} runs finished"
                 + (f", {len(result.reused)} reused" if result.reused else ""))
        if pending:
            time.sleep(0.2)
    result.wall_s = time.perf_counter() - start
    result.task_s = sum(j.finished - j.started for j in started if j.started and j.finished)
    progress(1.0, f"{len(result.done)} runs, {len(result.reused)} reused, {len(result.failed)} failed")
    return result


def _record_failure(result: SweepResult, key: str, item: SweepItem, dataset: Dataset, model: str,
                    error: str) -> None:
    result.failed[key] = error
    runs_db.upsert(runs_db.RunRow(
        run_key=key, dataset=dataset.name, model=model, method=item.method, config=dataclasses.asdict(item.config),
        request_hash=item.request.key(), request_desc=item.request.description,
        request_kind=workflow.request_kind(item.request), seed=item.seed, status="failed", error=error))
