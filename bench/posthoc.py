"""Post-hoc unlearning side by side: DAMP and the standard baselines against the parametric oracle.

    python bench/posthoc.py                      # Fashion-MNIST, class0 / class012 / random10, every method
    python bench/posthoc.py --dataset digits --methods damp,ga --no-by-design
    python bench/posthoc.py --dataset mnist-5k --requests "" --no-by-design  # damp-sequential's tuning split
    python bench/posthoc.py --set damp.head_rank=4 --set scrub.lr=0.001

For each request it trains (or loads) the parametric oracle, runs every applicable parametric method on
the original model and prints TA, RA, FA, MIA AUROC, PG against the oracle, selectivity, the method's time
and the oracle's retrain time divided by it. The SPM / MUNKEY deletion rows (when those models and their
deletion methods are registered) are scored against their own kind's oracle. DAMP, its registered variants
(damp-sequential) and any --damp-variants then run over every single-class request (FA and retained-class
test accuracy per class), and per-layer probe decodability of class 0 is printed for the original, the
oracle and each method. The last line is one JSON object.
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


def row(metrics: dict, before: dict, seconds: float, oracle_seconds: float | None) -> dict:
    return {"ta": metrics["TA"], "ra": metrics["RA"], "fa": metrics["FA"], "mia_auroc": metrics["MIA"],
            "pg": metrics["PG"], "selectivity": P.selectivity(before, metrics),
            "retained_ta": metrics.get("retained_TA"), "time_s": seconds,
            "speedup": (oracle_seconds / max(seconds, 1e-9)) if oracle_seconds else None}


def fmt(v, width: int = 8, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-".rjust(width)
    if isinstance(v, float):
        return f"{v:{width}.{digits}f}"
    return str(v).rjust(width)


def print_table(title: str, rows: dict[str, dict]) -> None:
    cols = ("ta", "ra", "fa", "retained_ta", "mia_auroc", "pg", "selectivity", "time_s", "speedup")
    print(f"\n== {title}")
    print(f"{'method':<16}" + "".join(c.rjust(12) for c in cols))
    for name, r in rows.items():
        print(f"{name:<16}" + "".join(fmt(r.get(c), 12, 2 if c in ("time_s", "speedup") else 1) for c in cols))


def by_design_rows(kinds: list[str], ds, request, param_oracle) -> dict[str, dict]:
    """Deletion rows of the by-design models, against their own kind's oracle (and PG to the parametric one)."""
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
            out.update(_deletion_rows(kind, methods, ds, request, param_oracle))
        except Exception as err:  # a by-design model that cannot run here must not sink the benchmark
            log(f"skip {kind}: {type(err).__name__}: {err}")
            out[f"{kind} (skipped)"] = {"error": f"{type(err).__name__}: {err}"}
    return out


def _deletion_rows(kind: str, methods: list[str], ds, request, param_oracle) -> dict[str, dict]:
    log(f"{kind}: original and oracle")
    orig = workflow.original(kind, ds)
    oracle = workflow.oracle(kind, ds, request)
    before = M.split_metrics(orig.classifier, ds, request)
    out = {}
    for name in methods:
        res = workflow.score(workflow.execute(name, orig, ds, request, progress=quiet), oracle, ds)
        r = row(res.comparison.metrics, before, res.seconds, res.oracle_seconds)
        r["pg_vs_parametric_oracle"] = M.prediction_gap(res.model.split_proba(ds, "test"),
                                                        param_oracle.split_proba(ds, "test"))
        out[name] = r
    return out


def quiet(fraction: float, message: str) -> None:
    """Methods report progress; the benchmark keeps quiet."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--requests", default="class0,class012,random10")
    parser.add_argument("--methods", default="", help="comma-separated parametric methods (default: all)")
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
    result: dict = {}
    probes: dict = {}
    for rname in [r for r in args.requests.split(",") if r]:
        request = REQUESTS[rname](ds)
        log(f"{rname}: oracle")
        oracle = workflow.oracle("parametric", ds, request)
        oracle_s = workflow.train_seconds(oracle)
        before = M.split_metrics(model, ds, request)
        rows: dict[str, dict] = {}
        o_metrics = M.evaluate(oracle.classifier, oracle.classifier, ds, request, oracle_s, oracle_s)
        rows["original"] = row(M.evaluate(model, oracle.classifier, ds, request), before, 0.0, None)
        rows["oracle"] = row(o_metrics, before, oracle_s or float("nan"), oracle_s)
        models = {}
        for name in methods:
            spec = get_method(name)
            if spec.class_only and not request.classes:
                continue
            log(f"{rname}: {name}")
            res = workflow.score(workflow.execute(name, original, ds, request, method_config(name, overrides), quiet),
                                 oracle, ds)
            rows[name] = row(res.comparison.metrics, before, res.seconds, oracle_s)
            models[name] = res.model
            if name.startswith("damp"):
                print(f"\n{name} layers ({rname}):")
                for layer in res.log.get("layers", []):
                    print("  " + ", ".join(f"{k}={fmt(v, 0, 3).strip() if isinstance(v, float) else v}"
                                           for k, v in layer.items()))
        rows.update(by_design_rows(by_design, ds, request, oracle.classifier))
        print_table(f"{rname}: {request.description} (oracle retrain {fmt(oracle_s, 0, 1).strip()} s)", rows)
        result[rname] = {k: {f: v for f, v in r.items()} for k, r in rows.items()}
        if rname == "class0" and not args.no_probes:
            log("class0: layer probes")
            curves = {"original": P.layer_decodability(model, ds, request),
                      "oracle": P.layer_decodability(oracle.classifier, ds, request)}
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
