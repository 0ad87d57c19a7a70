"""Post-hoc unlearning side by side: DAMP and the standard baselines against K parametric oracles.

    python bench/posthoc.py                      # Fashion-MNIST, class0 / class012 / random10, every method
    python bench/posthoc.py --dataset digits --methods damp,ga --no-by-design
    python bench/posthoc.py --dataset mnist-5k --requests "" --no-by-design  # damp-sequential's tuning split
    python bench/posthoc.py --set damp.head_rank=4 --set scrub.lr=0.001

For each request it trains (or loads) K parametric oracles (seed offsets 1..K, never the original's seed),
runs every applicable parametric method on the original model and prints TA, RA, FA, MIA AUROC, PG (mean over
the oracles), selectivity, the verdict against the oracles' spread (``core.eval.evidence``), the method's time
and the oracles' mean retrain time divided by it. The ``oracles`` row holds the oracles' mean, and in the PG
column the mean disagreement between oracle pairs (the yardstick for a method's PG). The SPM / MUNKEY deletion
rows (when those models and their deletion methods are registered) are scored against K oracles of their own
kind. DAMP, its registered variants
(damp-sequential) and any --damp-variants then run over every single-class request (FA and retained-class
test accuracy per class), and per-layer probe decodability of class 0 is printed for the original, the
first oracle and each method. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from core import workflow  # noqa: E402
from core.configs import config_from_dict, config_to_dict  # noqa: E402
from core.data import load_dataset, request_classes, request_random  # noqa: E402
from core.eval import metrics as M  # noqa: E402
from core.eval import probes as P  # noqa: E402
from core.models import registry as model_registry  # noqa: E402
from core.unlearn import get_method, list_methods  # noqa: E402

REQUESTS = {"class0": lambda ds: request_classes(ds, [0]),
            "class012": lambda ds: request_classes(ds, [0, 1, 2]),
            "random10": lambda ds: request_random(ds, 0.1, 0)}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_sets(pairs: list[str]) -> dict[str, dict]:
    """--set method.field=value (value parsed as JSON when it parses, else a string)."""
    out: dict[str, dict] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        method, _, name = key.partition(".")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(method, {})[name] = value
    return out


def method_config(name: str, overrides: dict):
    spec = get_method(name)
    values = {**config_to_dict(spec.config_cls()), **overrides.get(name, {})}
    return config_from_dict(spec.config_cls, values)


def row(comparison, before: dict, seconds: float) -> dict:
    """One table row: the model's metrics and verdict against the oracles."""
    metrics = comparison.metrics
    return {"ta": metrics["TA"], "ra": metrics["RA"], "fa": metrics["FA"], "mia_auroc": metrics["MIA"],
            "pg": metrics["PG"], "selectivity": P.selectivity(before, metrics),
            "retained_ta": metrics.get("retained_TA"), "verdict": comparison.verdict.replace(" ", "-"),
            "time_s": seconds, "speedup": metrics.get("speedup")}


def oracles_row(comparison, before: dict) -> dict:
    """The oracles' mean metrics; PG is the mean disagreement between oracle pairs."""
    metrics = comparison.oracle_metrics
    times = [o["train_s"] for o in comparison.oracles if o["train_s"]]
    return {"ta": metrics["TA"], "ra": metrics["RA"], "fa": metrics["FA"], "mia_auroc": metrics["MIA"],
            "pg": comparison.spread["metrics"]["PG"]["pairs_mean"] if comparison.k > 1 else None,
            "selectivity": P.selectivity(before, metrics), "retained_ta": metrics.get("retained_TA"),
            "verdict": f"k={comparison.k}", "time_s": float(np.mean(times)) if times else None, "speedup": 1.0}


def fmt(v, width: int = 8, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-".rjust(width)
    if isinstance(v, float):
        return f"{v:{width}.{digits}f}"
    return str(v).rjust(width)


def print_table(title: str, rows: dict[str, dict]) -> None:
    cols = ("ta", "ra", "fa", "retained_ta", "mia_auroc", "pg", "selectivity", "verdict", "time_s", "speedup")
    width = {"verdict": 16}
    print(f"\n== {title}")
    print(f"{'method':<16}" + "".join(c.rjust(width.get(c, 12)) for c in cols))
    for name, r in rows.items():
        print(f"{name:<16}" + "".join(fmt(r.get(c), width.get(c, 12), 2 if c in ("time_s", "speedup") else 1)
                                      for c in cols))


def by_design_rows(kinds: list[str], ds, request, param_oracles, k: int) -> dict[str, dict]:
    """Deletion rows of the by-design models, against K oracles of their own kind (and PG to the parametric
    oracles)."""
    out = {}
    for kind in kinds:
        if kind not in model_registry.list_model_kinds():
            log(f"skip {kind}: model kind not registered")
            continue
        methods = list_methods(kind, request)
        if not methods:
            log(f"skip {kind}: no deletion method registered for it")
            continue
        try:
            out.update(_deletion_rows(kind, methods, ds, request, param_oracles, k))
        except Exception as err:  # a by-design model that cannot run here must not sink the benchmark
            log(f"skip {kind}: {type(err).__name__}: {err}")
            out[f"{kind} (skipped)"] = {"error": f"{type(err).__name__}: {err}"}
    return out


def _deletion_rows(kind: str, methods: list[str], ds, request, param_oracles, k: int) -> dict[str, dict]:
    log(f"{kind}: original and {k} oracles")
    orig = workflow.original(kind, ds)
    oracles = workflow.oracles(kind, ds, request, k)
    before = M.split_metrics(orig.classifier, ds, request)
    out = {}
    for name in methods:
        res = workflow.score(workflow.execute(name, orig, ds, request, progress=quiet), orig, oracles, ds)
        r = row(res.comparison, before, res.seconds)
        r["pg_vs_parametric_oracles"] = float(np.mean([
            M.prediction_gap(res.model.split_proba(ds, "test"), o.classifier.split_proba(ds, "test"))
            for o in param_oracles]))
        out[name] = r
    return out


def quiet(fraction: float, message: str) -> None:
    """Methods report progress; the benchmark keeps quiet."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--requests", default="class0,class012,random10")
    parser.add_argument("--methods", default="", help="comma-separated parametric methods (default: all)")
    parser.add_argument("--oracles", type=int, default=None, help="K oracles per request (default $UE_ORACLES or 3)")
    parser.add_argument("--set", action="append", default=[], help="method.field=value config override")
    parser.add_argument("--by-design", default="spm,munkey", help="by-design kinds for deletion rows ('' for none)")
    parser.add_argument("--no-by-design", action="store_true")
    parser.add_argument("--damp-classes", default="all", help="'all', 'none' or comma-separated classes")
    parser.add_argument("--damp-variants", default="", help="extra DAMP variants per class: name:field=v;field=v")
    parser.add_argument("--no-probes", action="store_true")
    args = parser.parse_args(argv)
    overrides = parse_sets(args.set)
    started = time.perf_counter()

    ds = load_dataset(args.dataset)
    log(f"{ds.name}: {ds.num_train} train / {len(ds.y_test)} test; UE_HOME={os.environ.get('UE_HOME', 'default')}")
    original = workflow.original("parametric", ds, progress=lambda f, m: None)
    model = original.classifier
    methods = [m for m in (args.methods.split(",") if args.methods else list_methods("parametric")) if m]
    by_design = [] if args.no_by_design else [k for k in args.by_design.split(",") if k]
    n_oracles = workflow.oracle_count(args.oracles)
    result: dict = {}
    probes: dict = {}
    for rname in [r for r in args.requests.split(",") if r]:
        request = REQUESTS[rname](ds)
        log(f"{rname}: {n_oracles} oracles")
        oracles = workflow.oracles("parametric", ds, request, n_oracles)
        before = M.split_metrics(model, ds, request)
        untouched = workflow.compare(model, original, oracles, ds, request)
        rows: dict[str, dict] = {"original": row(untouched, before, 0.0), "oracles": oracles_row(untouched, before)}
        models = {}
        for name in methods:
            spec = get_method(name)
            if spec.class_only and not request.classes:
                continue
            log(f"{rname}: {name}")
            res = workflow.score(workflow.execute(name, original, ds, request, method_config(name, overrides), quiet),
                                 original, oracles, ds)
            rows[name] = row(res.comparison, before, res.seconds)
            models[name] = res.model
            if name.startswith("damp"):
                print(f"\n{name} layers ({rname}):")
                for layer in res.log.get("layers", []):
                    print("  " + ", ".join(f"{k}={fmt(v, 0, 3).strip() if isinstance(v, float) else v}"
                                           for k, v in layer.items()))
        rows.update(by_design_rows(by_design, ds, request, oracles, n_oracles))
        seeds = ", ".join(str(o["seed"]) for o in untouched.oracles)
        print_table(f"{rname}: {request.description} ({n_oracles} oracles, seeds {seeds}; mean retrain "
                    f"{fmt(rows['oracles']['time_s'], 0, 1).strip()} s)", rows)
        result[rname] = {name: dict(r) for name, r in rows.items()}
        result[rname]["oracles"]["seeds"] = [o["seed"] for o in untouched.oracles]
        if rname == "class0" and not args.no_probes:
            log("class0: layer probes")
            curves = {"original": P.layer_decodability(model, ds, request),
                      "oracle": P.layer_decodability(oracles[0].classifier, ds, request)}
            for name, m in models.items():
                curves[name] = P.layer_decodability(m, ds, request)
            print("\n== class0: forget-vs-retain probe accuracy per layer (test images; compare with the oracle)")
            layers = [c["layer"] for c in curves["original"]]
            print(f"{'model':<12}" + "".join(layer.split(".")[-1].rjust(12) for layer in layers))
            for name, curve in curves.items():
                print(f"{name:<12}" + "".join(fmt(c["probe_acc"], 12) for c in curve))
            probes = {name: [c["probe_acc"] for c in curve] for name, curve in curves.items()}
            probes["layers"] = layers
            if "damp" in models:
                bias = P.head_bias_shift(model, models["damp"], request.classes)
                print(f"DAMP head-bias shift of class 0: {bias['mean_shift']:+.3f} "
                      f"(relative {bias['relative_shift']:+.3f})")

    damp_per_class = {}
    if args.damp_classes != "none" and "damp" in list_methods("parametric"):
        wanted = args.damp_classes
        classes = range(ds.num_classes) if wanted == "all" else [int(c) for c in wanted.split(",")]
        # name -> (registered method, config fields over its defaults): damp, every registered damp-* variant,
        # then the --damp-variants of damp
        variants = {"default": ("damp", {})}
        variants.update({n: (n, {}) for n in list_methods("parametric") if n.startswith("damp-")})
        for spec_text in [v for v in args.damp_variants.split(",") if v]:
            vname, _, fields = spec_text.partition(":")
            variants[vname] = ("damp", parse_sets([f"x.{f}" for f in fields.split(";") if f]).get("x", {}))
        full = M.per_class_accuracy(model.split_proba(ds, "test"), ds.y_test, ds.num_classes)
        print("\n== DAMP over single classes: FA / retained-class test accuracy (original retained in brackets)")
        summary = {}
        for vname, (method, fields) in variants.items():
            per = {}
            for c in classes:
                request = request_classes(ds, [c])
                cfg = method_config(method, {method: {**overrides.get(method, {}), **fields}})
                res = get_method(method).run(model, ds, request, cfg, quiet, None)
                m = M.split_metrics(res.model, ds, request)
                keep = np.arange(ds.num_classes) != c
                orig_ret = float(np.average(full[keep], weights=np.bincount(ds.y_test, minlength=ds.num_classes)[keep]))
                per[str(c)] = {"fa": m["FA"], "retained_acc": m["retained_TA"], "retained_acc_original": orig_ret,
                               "time_s": res.seconds}
                print(f"  {vname:<12} class {c} ({ds.class_names[c]:<12}) FA {m['FA']:5.1f}  retained "
                      f"{m['retained_TA']:5.1f} ({orig_ret:5.1f})  {res.seconds:.2f} s")
            fas = [v["fa"] for v in per.values()]
            drops = [v["retained_acc_original"] - v["retained_acc"] for v in per.values()]
            summary[vname] = {"median_fa": statistics.median(fas), "worst_fa": max(fas),
                              "worst_retained_drop": max(drops)}
            print(f"  {vname}: median FA {summary[vname]['median_fa']:.1f}, worst FA {summary[vname]['worst_fa']:.1f}, "
                  f"worst retained drop {summary[vname]['worst_retained_drop']:.1f} points")
            if vname == "default":
                damp_per_class = per
        result["damp_variants"] = summary
    result["damp_per_class"] = damp_per_class
    if probes:
        result["probes_class0"] = probes
    result["meta"] = {"dataset": ds.name, "device": str(model.device), "total_s": time.perf_counter() - started,
                      "original_test_acc": original.meta.get("test_acc")}
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
