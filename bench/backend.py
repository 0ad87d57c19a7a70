"""The Ray backend: parallel oracles, interactive latency beside training, start-up, and sweep efficiency.

    python bench/backend.py [--dataset mnist-5k] [--ui-dataset fashion-mnist] [--oracles 4] [--repeats 30]

Measured side by side in one run, in a fresh store (nothing is reused), on a local Ray instance with one
CPU per core:
- ``oracle_throughput_ratio``: oracles finished per minute with every worker busy / with one at a time;
- ``ui_p95_ms_idle`` / ``ui_p95_ms_training``: p95 of "forget class 0 on SPM, re-predict the test set,
  score" in this (UI) process with one BLAS/torch thread, idle and while two oracles train on Ray;
- ``ray_start_s`` (the first local start), ``first_page_s`` (the app's first page drawn while Ray starts)
  and ``sweep_efficiency`` (sum of task times / (wall x workers)) of a small sweep.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["UE_HOME"] = tempfile.mkdtemp(prefix="ue-bench-backend-")
os.environ["UE_NO_ASSETS"] = "1"

import numpy as np  # noqa: E402


def p95_ms(times: list[float]) -> float:
    return float(np.percentile(np.asarray(times) * 1000, 95))


def first_page(dataset: str) -> tuple[float, str]:
    """Draw the app's first page (the Models page starts training on Ray) and time it; Ray starts meanwhile."""
    from streamlit.testing.v1 import AppTest

    os.environ["UE_DATASET"] = dataset
    start = time.perf_counter()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    seconds = time.perf_counter() - start
    if at.exception:
        raise SystemExit(f"the first page failed: {at.exception}")
    import pages.common

    return seconds, pages.common.backend().status


def oracle_throughput(engine, dataset, kind: str, n: int) -> dict:
    """n distinct oracles (random 10 % requests, seeds 100..), one at a time, then all at once."""
    from core import workflow
    from core.data import request_random

    def batch(seeds: list[int], parallel: bool) -> float:
        start = time.perf_counter()
        jobs = []
        for seed in seeds:
            request = request_random(dataset, 0.1, seed)
            job = engine.submit(f"bench-oracle-{seed}", f"oracle {seed}", workflow.train_remote(kind, dataset, request))
            jobs.append(job)
            if not parallel:
                job.wait()
        for job in jobs:
            job.wait()
            if not job.finished_ok:
                raise SystemExit(f"oracle failed: {job.error}")
        return time.perf_counter() - start

    one = batch(list(range(100, 100 + n)), parallel=False)
    many = batch(list(range(200, 200 + n)), parallel=True)
    per_min_one, per_min_many = n / one * 60, n / many * 60
    print(f"{n} oracles ({kind} on {dataset.name}): one at a time {one:.1f} s ({per_min_one:.2f}/min), "
          f"all at once {many:.1f} s ({per_min_many:.2f}/min)", flush=True)
    return {"oracles_per_min_1_worker": per_min_one, "oracles_per_min_all_workers": per_min_many,
            "oracle_throughput_ratio": per_min_many / per_min_one}


def interactive(engine, dataset, repeats: int) -> dict:
    """p95 of a deletion's interactive path, idle and beside two trainings on Ray, in two sizes:
    ``ui``: forget class 0 on SPM, re-predict the test set, score it (TA, per-class accuracy);
    ``page``: what the Predictions page adds, the training set's predictions and TA/RA/FA/MIA."""
    from core import workflow
    from core.data import request_classes, request_random
    from core.eval import metrics as M

    spm = workflow.original("spm", dataset)
    request = request_classes(dataset, [0])
    for split in ("test", "train"):  # the loaded model's features and predictions, as the app warms them
        spm.classifier.split_proba(dataset, split)

    def ui() -> float:
        start = time.perf_counter()
        after = spm.classifier.forget(list(request.ids))
        probs = after.split_proba(dataset, "test")
        M.accuracy(probs, dataset.y_test)
        M.per_class_accuracy(probs, dataset.y_test, dataset.num_classes)
        return time.perf_counter() - start

    def page() -> float:
        start = time.perf_counter()
        after = spm.classifier.forget(list(request.ids))
        M.split_metrics(after, dataset, request)
        return time.perf_counter() - start

    def sample(busy: list) -> dict:
        ui(), page()
        out = {"ui": [], "page": []}
        while len(out["page"]) < repeats and (busy is None or any(j.active for j in busy)):
            out["ui"].append(ui())
            out["page"].append(page())
        return out

    idle = sample(None)
    jobs = [engine.submit(f"bench-busy-{s}", "busy oracle",
                          workflow.train_remote("parametric", dataset, request_random(dataset, 0.1, 300 + s)))
            for s in range(2)]
    while not all(j.state == "running" for j in jobs):
        time.sleep(0.1)
    time.sleep(2.0)
    busy = sample(jobs)
    for job in jobs:
        job.cancel()
    out = {"ui_p95_ms_idle": p95_ms(idle["ui"]), "ui_p95_ms_training": p95_ms(busy["ui"]),
           "page_p95_ms_idle": p95_ms(idle["page"]), "page_p95_ms_training": p95_ms(busy["page"]),
           "ui_samples_training": len(busy["ui"])}
    print(f"forget class 0 + re-predict the test set + score on {dataset.name}: p95 {out['ui_p95_ms_idle']:.1f} ms "
          f"idle, {out['ui_p95_ms_training']:.1f} ms beside two trainings ({len(busy['ui'])} samples)", flush=True)
    print(f"... and the Predictions page's full metrics (training set too): p95 {out['page_p95_ms_idle']:.1f} ms "
          f"idle, {out['page_p95_ms_training']:.1f} ms beside two trainings", flush=True)
    return out


def sweep_efficiency(engine, dataset) -> dict:
    from core import sweep

    items = sweep.plan(dataset, "parametric", ["ft", "ga", "neggrad+"], ["class:0", "random:0.1"], [0, 1])
    result = sweep.run_sweep(engine, dataset, "parametric", items)
    print(f"sweep of {len(items)} runs on {dataset.name}: wall {result.wall_s:.1f} s, task time {result.task_s:.1f} s, "
          f"{result.workers} workers, efficiency {result.efficiency:.2f}", flush=True)
    return {"sweep_runs": len(items), "sweep_wall_s": result.wall_s, "sweep_efficiency": result.efficiency}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="mnist-5k", help="what the oracles and the sweep train on")
    ap.add_argument("--ui-dataset", default="fashion-mnist", help="what the interactive SPM deletion runs on")
    ap.add_argument("--oracles", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--parts", default="oracles,ui,sweep", help="which measurements, besides the start-up ones")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    from core.backend import limit_threads
    from core.data import DataError, load_dataset

    out = {"cores": os.cpu_count()}
    out["first_page_s"], status = first_page(args.dataset)
    import pages.common

    engine = pages.common.backend()  # the app's own backend, started by that first page
    engine.start(wait=True, timeout=300)
    out["ray_start_s"] = engine.start_seconds
    print(f"first page drawn in {out['first_page_s']:.2f} s (Ray was {status} then); "
          f"Ray's local start took {out['ray_start_s']:.2f} s", flush=True)
    for job in engine.jobs():  # the first page started training: let it finish before timing anything
        job.wait()
    limit_threads()
    dataset = load_dataset(args.dataset)
    if "oracles" in parts:
        out.update(oracle_throughput(engine, dataset, "parametric", args.oracles))
    try:
        ui_dataset = load_dataset(args.ui_dataset)
    except DataError as err:
        print(f"{args.ui_dataset} is not available ({err}); measuring the interactive path on {args.dataset}")
        ui_dataset = dataset
    if "ui" in parts:
        out["ui_dataset"] = ui_dataset.name
        out.update(interactive(engine, ui_dataset, args.repeats))
    if "sweep" in parts:
        out.update(sweep_efficiency(engine, dataset))
    engine.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
