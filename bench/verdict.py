"""Was it forgotten? The verdict's controls and each method's verdict against K oracles (issue 14 item 7).

    python bench/verdict.py                                  # Fashion-MNIST, class 0 and random 10%, K = 3
    python bench/verdict.py --dataset digits --oracles 3     # a quick run
    python bench/verdict.py --oracles 5 --ray                # train the oracles in parallel on Ray first

For each request (class 0, random 10% with seed 0) and each model kind the methods need (the parametric network
for DAMP, SCRUB, FT and NegGrad+; SPM for spm-delete) it trains or loads the original and K + 1 oracles on seed
offsets 1..K+1 (never the original's seed). Controls: each of the K + 1 oracles, left out and judged against the
other K, must read *looks unseen*; the untouched original judged against oracles 1..K must read *not forgotten*.
Each method at its defaults is judged against oracles 1..K: its verdict, its gaps against the oracle spread,
KLoM P95 per split, and what its weights alone still reveal (``core.eval.residue``: kNN accuracy and, for random
10%, a feature membership AUROC, against the oracles' band). Beside them, the old single-oracle reading: the
AvgGap to one oracle on the original's own seed against the "noise floor" of that oracle and a reseed
(seed + 1), and which conclusions changed.
``report_s``: building one audit report (JSON and Markdown) once the runs exist. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from core import bundle, workflow  # noqa: E402
from core.data import load_dataset, request_classes, request_random  # noqa: E402
from core.eval import audit  # noqa: E402
from core.eval import metrics as M  # noqa: E402
from core.eval import residue as RS  # noqa: E402
from core.unlearn import get_method  # noqa: E402

REQUESTS = {"class0": lambda ds: request_classes(ds, [0]), "random10": lambda ds: request_random(ds, 0.1, 0)}
METHODS = "spm-delete,damp,scrub,ft,neggrad+"
SPREAD = ("TA", "RA", "FA", "MIA", "PG", "KL")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet(fraction: float, message: str) -> None:
    """Training and methods report progress; the benchmark keeps quiet."""


def kind_of(method: str) -> str:
    return get_method(method).model_kinds[0]


def prefetch_on_ray(ds, kinds: list[str], requests: dict, offsets: list[int]) -> None:
    """Train every original and oracle the run needs as parallel Ray tasks (stored ones load), then stop Ray."""
    from core.backend import Backend

    engine = Backend()
    engine.start(wait=True, timeout=300)
    try:
        jobs = [workflow.model_job(engine, kind, ds) for kind in kinds]
        jobs += [workflow.model_job(engine, kind, ds, r, o) for kind in kinds for r in requests.values()
                 for o in offsets]
        for job in jobs:
            job.wait()
            if not job.finished_ok:
                raise SystemExit(f"{job.title} failed: {job.error}")
    finally:
        engine.shutdown()


def spread_summary(c: workflow.Comparison) -> dict:
    """Per metric: the gap to the oracle mean (PG, KL: the mean distance to each oracle) beside the oracle pairs."""
    out = {}
    for name in SPREAD:
        e = (c.spread or {}).get("metrics", {}).get(name)
        if e is not None:
            out[name] = {"gap": e.get("gap", e["method"]), "pairs_mean": e["pairs_mean"], "pairs_sd": e["pairs_sd"],
                         "percentile": e["percentile"], "position": e.get("position")}
    return out


def klom_p95(c: workflow.Comparison) -> dict:
    return {split: e.get("klom_gauss", {}).get("p95") for split, e in (c.klom or {}).items()}


def old_reading(model, ds, request, seed0, seed1) -> dict:
    """The single-oracle figures the app showed before: AvgGap and PG to one oracle on the original's seed, and the
    same gaps between that oracle and a reseed (the two-seed "noise floor")."""
    gap = M.evaluate(model, seed0.classifier, ds, request)
    floor = M.evaluate(seed1.classifier, seed0.classifier, ds, request)
    within = gap["AvgGap"] <= floor["AvgGap"]
    return {"avg_gap": gap["AvgGap"], "pg": gap["PG"], "floor_avg_gap": floor["AvgGap"], "floor_pg": floor["PG"],
            "reading": "within the noise floor" if within else "outside the noise floor"}


def changed(name: str, verdict: str, old: dict) -> str | None:
    """A sentence when the new verdict and the old reading disagree (old: within the floor = as good as retraining)."""
    looks_fine = verdict == "looks unseen"
    if looks_fine == (old["reading"] == "within the noise floor"):
        return None
    return (f"{name}: the single oracle put it {old['reading']} (AvgGap {old['avg_gap']:.2f} vs "
            f"{old['floor_avg_gap']:.2f}); against the oracle spread it reads {verdict}")


def run_request(ds, rname: str, methods: list[str], k: int, old: bool) -> tuple[dict, list[dict], list[str]]:
    """Controls and method verdicts for one request: (results by method, controls, changed conclusions)."""
    request = REQUESTS[rname](ds)
    out, controls, notes = {}, [], []
    for kind in dict.fromkeys([kind_of(m) for m in methods] + ["parametric"]):
        original = workflow.original(kind, ds, progress=quiet)
        log(f"{rname} / {kind}: {k + 1} oracles")
        oracles = workflow.oracles(kind, ds, request, k + 1, progress=quiet)
        for j, left in enumerate(oracles):
            c = workflow.compare(left.classifier, original, oracles[:j] + oracles[j + 1:], ds, request)
            controls.append({"request": rname, "kind": kind, "control": f"oracle seed {workflow.train_seed(left)} "
                             "left out", "expected": "looks unseen", "verdict": c.verdict, "sentence": c.sentence})
        c = workflow.compare(original.classifier, original, oracles[:k], ds, request)
        controls.append({"request": rname, "kind": kind, "control": "untouched original", "expected": "not forgotten",
                         "verdict": c.verdict, "sentence": c.sentence})
        seeds = (workflow.oracle(kind, ds, request, 0, quiet), oracles[0]) if old else None
        for name in [m for m in methods if kind_of(m) == kind]:
            if get_method(name).class_only and not request.classes:
                continue
            log(f"{rname}: {name}")
            run = workflow.score(workflow.execute(name, original, ds, request, progress=quiet), original,
                                 oracles[:k], ds)
            c = run.comparison
            row = {"kind": kind, "verdict": c.verdict, "sentence": c.sentence, "oracle_k": c.k,
                   "gaps": spread_summary(c), "klom_gauss_p95": klom_p95(c), "seconds": run.seconds}
            residue = RS.residue(run.model, original.classifier, [o.classifier for o in oracles[:k]], ds, request)
            row["weights_residue"] = {m["measure"]: {f: m[f] for f in ("model", "oracle_mean", "band", "position")}
                                      for m in residue["measures"]}
            if seeds is not None:
                row["single_oracle"] = old_reading(run.model, ds, request, *seeds)
                note = changed(name, c.verdict, row["single_oracle"])
                if note:
                    notes.append(f"{rname}: {note}")
            out[name] = row
            print(f"{rname:9s} {name:11s} {c.verdict:15s} k={c.k}  {c.sentence}", flush=True)
    return out, controls, notes


def report_seconds(ds, method: str) -> float:
    """Seconds to build one audit report (JSON and Markdown) of ``method`` on class 0 once its run exists."""
    request = REQUESTS["class0"](ds)
    kind = kind_of(method)
    original = workflow.original(kind, ds, progress=quiet)
    oracles = workflow.oracles(kind, ds, request, progress=quiet)
    run = workflow.score(workflow.execute(method, original, ds, request, progress=quiet), original, oracles, ds)
    start = time.perf_counter()
    report = audit.audit_report(ds, request, original.classifier, run.model, original.meta, method, {}, run.seconds,
                                run.comparison, workflow.store_unlearned(run))
    audit.report_markdown(report, ds.class_names)
    json.dumps(report, default=float)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--oracles", type=int, default=None, help="K oracles per verdict (default $UE_ORACLES or 3)")
    ap.add_argument("--methods", default=METHODS, help=f"comma-separated (default {METHODS})")
    ap.add_argument("--requests", default=",".join(REQUESTS), help="class0, random10")
    ap.add_argument("--no-old", action="store_true", help="skip the single-oracle figures (one oracle fewer each)")
    ap.add_argument("--ray", action="store_true", help="train the models in parallel on Ray before judging")
    args = ap.parse_args(argv)
    k = workflow.oracle_count(args.oracles)
    methods = [m for m in args.methods.split(",") if m]
    requests = [r for r in args.requests.split(",") if r]
    unknown = [r for r in requests if r not in REQUESTS]
    if unknown:
        raise SystemExit(f"--requests: unknown {unknown}; known: {', '.join(REQUESTS)}")
    ds = load_dataset(args.dataset)
    log(f"{ds.name}: {ds.num_train} train / {len(ds.y_test)} test; K = {k} oracles (+1 for the controls)")
    started = time.perf_counter()
    if args.ray:
        kinds = list(dict.fromkeys([kind_of(m) for m in methods] + ["parametric"]))
        offsets = workflow.oracle_offsets(k + 1) + ([] if args.no_old else [0])
        prefetch_on_ray(ds, kinds, {r: REQUESTS[r](ds) for r in requests}, offsets)
    results, controls, notes = {}, [], []
    for rname in requests:
        results[rname], more, changes = run_request(ds, rname, methods, k, not args.no_old)
        controls += more
        notes += changes
    passed = [c["verdict"] == c["expected"] for c in controls]
    for c in controls:
        print(f"control {c['request']:9s} {c['kind']:11s} {c['control']:28s} {c['verdict']:15s} "
              f"({'pass' if c['verdict'] == c['expected'] else 'FAIL: expected ' + c['expected']})", flush=True)
    for note in notes:
        print(f"changed: {note}", flush=True)
    original_seed = bundle.recipe(ds.name, "parametric").seed
    oracle_seeds = [original_seed + o for o in workflow.oracle_offsets(k)]
    out = {"dataset": ds.name, "oracle_k": k, "oracle_seeds": oracle_seeds, "original_seed": original_seed,
           "oracle_seed_equals_original": original_seed in oracle_seeds,
           "control_pass_rate": float(np.mean(passed)) if passed else None,
           "controls": controls, "methods": results, "conclusions_changed": notes,
           "report_s": report_seconds(ds, next((m for m in methods if kind_of(m) == "parametric"), methods[0])),
           "wall_s": time.perf_counter() - started}
    print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
