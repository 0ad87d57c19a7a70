"""MUNKEY key deletion against its oracles (arXiv 2603.15033; issue 4; METHODS.md §2 and §5).

    python bench/munkey.py                                   # Fashion-MNIST, random 10% (seed 0) and class 0
    python bench/munkey.py --dataset digits --epochs 10      # a quick run
    python bench/munkey.py --seeds 0,1,2 --settings self     # more request seeds, one self-retrieval setting
    python bench/munkey.py --settings self --levers pathway_dropout=0.5,epochs=3   # memorisation levers
    python bench/munkey.py --levers 'retrieval_reg=self-drop,retrieval_reg=neighbour-noise' --lever-oracles

For each self-retrieval setting (a training query may / may not retrieve its own entry) it trains or
loads MUNKEY, K MUNKEY oracles retrained on D_r (seed offsets 1..K, never the original's seed; --oracles),
and a plain ViT of the same size with the same budget (original, and an oracle on seed + 1); both kinds train with their
own recipe (AdamW + warm-up, core.models.vit.VIT_RECIPES; --epochs shortens it). It prints TA, RA, FA and
MIA AUROC after deletion, of the MUNKEY oracles (mean) and of the ViT oracle, the AvgGap to each next to
the oracle-to-oracle AvgGap (mean ± sd over pairs), the verdict, AvgGap before deletion, deletion time
against oracle retrain time, A_img on the test and forget sets (and the first oracle's A_img on the
forget set), and the inference cost of K passes against one. The last line is one JSON object for the
default setting (the one with the smaller AvgGap to the MUNKEY oracles on random 10%).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from core import bundle, workflow  # noqa: E402
from core.data import load_dataset, request_classes, request_random  # noqa: E402
from core.eval import metrics as M  # noqa: E402
from core.eval import munkey_diag  # noqa: E402
from core.models.munkey import MunkeyConfig  # noqa: E402
from core.models.vit import PlainViTConfig  # noqa: E402

KEYS = ("TA", "RA", "FA", "MIA")
# The single oracles (the plain-ViT reference, a lever's own MUNKEY oracle) train on seed + 1, as the app's
# reference oracle does: an oracle never shares the original's seed (initial weights and data order).
REFERENCE_OFFSET = 1


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train(kind, ds, config, tc, request=None, seed_offset=0):
    if request is not None and seed_offset < 1:
        raise ValueError("an oracle never trains on the original's seed: give it a seed offset of 1 or more")
    tc = replace(tc, seed=tc.seed + seed_offset)
    start = time.perf_counter()
    model = bundle.train_or_load(kind, ds, config, tc, excluded=request)
    log(f"  {kind} {'oracle ' + request.description if request else 'original'} seed+{seed_offset}: "
        f"{time.perf_counter() - start:.1f}s (train_s {workflow.train_seconds(model)})")
    return model


def fmt(m: dict) -> str:
    return "  ".join(f"{k} {m[k]:6.2f}" for k in KEYS)


def avg_gap(a: dict, b: dict) -> float:
    return float(np.mean([abs(a[k] - b[k]) for k in KEYS]))


def bench_setting(ds, tc, self_retrieval: bool, requests, vit_models: dict, token_lr: float | None,
                  k: int | None = None) -> dict:
    config = MunkeyConfig(self_retrieval=self_retrieval)
    if token_lr is not None:
        config = replace(config, token_lr=token_lr)
    name = "self" if self_retrieval else "no-self"
    print(f"\n=== MUNKEY, self_retrieval={self_retrieval} ===", flush=True)
    original = train(("munkey"), ds, config, tc)
    model = original.classifier
    out = {"test_acc": M.accuracy(model.split_proba(ds, "test"), ds.y_test), "requests": {}}
    diag = munkey_diag.diagnostics(model, ds)
    out["a_img_test"] = diag["A_img_test"]
    out["pathway_sensitivity"] = diag["pathway_sensitivity"]
    print(f"test acc {out['test_acc']:.2f}  A_img(test) {diag['A_img_test']:.2f}  "
          f"pathway sensitivity {diag['pathway_sensitivity']:.3f}", flush=True)
    cost = munkey_diag.inference_cost(model, ds.x_test[:2000])
    out["inference_cost"] = cost
    print(f"inference per image: K passes {cost['ensemble'] * 1e6:.1f} us, one pass {cost['single_pass'] * 1e6:.1f} us "
          f"({cost['ensemble_over_single']:.2f}x), image only {cost['image_only'] * 1e6:.1f} us", flush=True)
    for label, request in requests:
        oracles = [train("munkey", ds, config, tc, request, offset) for offset in workflow.oracle_offsets(k)]
        oracle = oracles[0]
        result = workflow.run_method("munkey-delete", model, ds, request)
        deleted = result.model
        each = [M.split_metrics(o.classifier, ds, request) for o in oracles]
        mk_o = M.mean_metrics(each)
        pairs = [avg_gap(a, b) for a, b in combinations(each, 2)]
        verdict = workflow.compare(deleted, original, oracles, ds, request, result.seconds)
        after = M.split_metrics(deleted, ds, request)
        before = M.split_metrics(model, ds, request)
        vit_o = vit_models[label]
        vit_m = M.split_metrics(vit_o.classifier, ds, request)
        row = {"after": after, "before": before, "oracle": mk_o, "vit_oracle": vit_m,
               "avg_gap": avg_gap(after, mk_o), "avg_gap_before": avg_gap(before, mk_o),
               "avg_gap_vit": avg_gap(after, vit_m), "delete_s": result.seconds,
               "oracle_train_s": float(np.mean([workflow.train_seconds(o) or np.nan for o in oracles])),
               "oracle_k": len(oracles), "verdict": verdict.verdict, "sentence": verdict.sentence}
        row["speedup"] = (row["oracle_train_s"] or float("nan")) / max(result.seconds, 1e-9)
        if pairs:
            row["oracle_pairs_avg_gap"] = float(np.mean(pairs))
            row["oracle_pairs_avg_gap_sd"] = float(np.std(pairs, ddof=1)) if len(pairs) > 1 else float("nan")
        d_after = munkey_diag.diagnostics(deleted, ds, request)
        d_oracle = munkey_diag.diagnostics(oracle.classifier, ds, request)
        row.update(a_img_forget=d_after["A_img_forget"], a_img_forget_oracle=d_oracle["A_img_forget"],
                   a_img_test_oracle=d_oracle["A_img_test"])
        out["requests"][label] = row
        print(f"\n-- {request.description} ({len(request)} samples), self_retrieval={self_retrieval}", flush=True)
        print(f"MUNKEY before deletion : {fmt(before)}   AvgGap {row['avg_gap_before']:.2f}")
        print(f"MUNKEY after deletion  : {fmt(after)}   AvgGap {row['avg_gap']:.2f} (MUNKEY oracles)  "
              f"{row['avg_gap_vit']:.2f} (ViT oracle)")
        print(f"MUNKEY oracles (mean)  : {fmt(mk_o)}"
              + (f"   oracle-to-oracle AvgGap {row['oracle_pairs_avg_gap']:.2f} ± {row['oracle_pairs_avg_gap_sd']:.2f}"
                 if "oracle_pairs_avg_gap" in row else ""))
        print(f"verdict with {verdict.k} oracles: {verdict.sentence}")
        print(f"ViT oracle             : {fmt(vit_m)}")
        print(f"A_img: test {diag['A_img_test']:.2f}, forget set {row['a_img_forget']:.2f} "
              f"(oracle: test {row['a_img_test_oracle']:.2f}, forget set {row['a_img_forget_oracle']:.2f})")
        print(f"deletion {row['delete_s'] * 1e3:.2f} ms, oracle retrain (mean) {row['oracle_train_s']:.1f} s: "
              f"speed-up {row['speedup']:.0f}x", flush=True)
    out["name"] = name
    return out


def lever_config(lever: str, tc):
    """(MunkeyConfig, recipe) for one lever: "default", or "field=value[;field=value]" over MunkeyConfig fields
    and the recipe's "epochs" (";" joins fields, e.g. "retrieval_reg=\"self-drop\";retrieval_reg_rate=0.5")."""
    config, recipe = MunkeyConfig(), tc
    if lever == "default":
        return config, recipe
    for part in lever.split(";"):
        name, _, raw = part.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word: a string value such as self-drop
        if name == "epochs":
            recipe = replace(recipe, epochs=int(value))
        elif name in MunkeyConfig.__dataclass_fields__:
            config = replace(config, **{name: value})
        else:
            raise SystemExit(f"unknown lever {name!r}: a MunkeyConfig field or 'epochs'")
    return config, recipe


def lever_rows(ds, tc, levers: list[str], request, own_oracles: bool) -> list[dict]:
    """Per lever, an original trained with one MunkeyConfig field (or the recipe's epochs) changed:
    - what the shared weights kept of D_f: A_img on D_f minus A_img on the test set. A_img ignores the memory,
      so deletion does not change it; compare it with the oracle's, which never saw D_f;
    - after deleting D_f: FA, and AvgGap to the plain-ViT oracle (the same for every lever) and, with
      ``own_oracles``, to the lever's own MUNKEY oracle (same config retrained on D_r), before and after."""
    vit_oracle = train("vit", ds, PlainViTConfig(), tc, request, REFERENCE_OFFSET).classifier
    vit_m = M.split_metrics(vit_oracle, ds, request)
    rows = []
    for lever in ["default", *levers]:
        config, recipe = lever_config(lever, tc)
        model = train("munkey", ds, config, recipe).classifier
        d = munkey_diag.diagnostics(model, ds, request)
        deleted = workflow.run_method("munkey-delete", model, ds, request).model
        after = M.split_metrics(deleted, ds, request)
        r = {"lever": lever, "test_acc": d["TA"], "a_img_test": d["A_img_test"], "a_img_forget": d["A_img_forget"],
             "excess": d["A_img_forget"] - d["A_img_test"], "fa_deleted": after["FA"],
             "avg_gap_vit": avg_gap(after, vit_m)}
        line = (f"lever {lever:44s} TA {r['test_acc']:6.2f}  A_img test {r['a_img_test']:6.2f}  "
                f"D_f {r['a_img_forget']:6.2f}  D_f - test {r['excess']:+.2f}  FA after {r['fa_deleted']:6.2f}  "
                f"AvgGap ViT oracle {r['avg_gap_vit']:.2f}")
        if own_oracles:
            oracle = train("munkey", ds, config, recipe, request, REFERENCE_OFFSET).classifier
            o = M.split_metrics(oracle, ds, request)
            before = M.split_metrics(model, ds, request)
            d_o = munkey_diag.diagnostics(oracle, ds, request)
            r.update(avg_gap=avg_gap(after, o), avg_gap_before=avg_gap(before, o), fa_oracle=o["FA"],
                     oracle_excess=d_o["A_img_forget"] - d_o["A_img_test"])
            line += (f"  | own oracle: AvgGap {r['avg_gap_before']:.2f} -> {r['avg_gap']:.2f}  FA {r['fa_oracle']:6.2f}"
                     f"  oracle D_f - test {r['oracle_excess']:+.2f}")
        rows.append(r)
        print(line, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--seeds", default="0", help="request seeds of the random 10%% request, comma separated")
    ap.add_argument("--settings", default="both", choices=("both", "self", "no-self"))
    ap.add_argument("--epochs", type=int, default=None, help="override the dataset recipe's epochs")
    ap.add_argument("--token-lr", type=float, default=None, help="override MunkeyConfig.token_lr")
    ap.add_argument("--levers", default="", help="comma-separated levers, each field=value[;field=value] over "
                    "MunkeyConfig fields or epochs: train each variant, print its A_img gap between D_f and test, "
                    "FA and AvgGap after deleting random 10%% (first seed), then stop")
    ap.add_argument("--oracles", type=int, help="MUNKEY oracles per request (default $UE_ORACLES or 3)")
    ap.add_argument("--lever-oracles", action="store_true",
                    help="also train each lever's own MUNKEY oracle and print AvgGap before / after deletion")
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    tc = bundle.recipe(ds.name, "munkey")  # the ViT and MUNKEY recipe (AdamW + warm-up), shared by both kinds
    if args.epochs:
        tc = replace(tc, epochs=args.epochs)
    log(f"{ds.name}: {ds.num_train} train / {len(ds.y_test)} test, recipe {tc}")
    requests = [(f"random10_s{s}", request_random(ds, 0.1, seed=int(s))) for s in args.seeds.split(",")]
    requests.append(("class0", request_classes(ds, [0])))
    if args.levers:
        rows = lever_rows(ds, tc, [v for v in args.levers.split(",") if v], requests[0][1], args.lever_oracles)
        oracle = train("munkey", ds, MunkeyConfig(), tc, requests[0][1], REFERENCE_OFFSET)
        d = munkey_diag.diagnostics(oracle.classifier, ds, requests[0][1])
        print(f"default oracle (never saw D_f)  A_img test {d['A_img_test']:6.2f}  D_f {d['A_img_forget']:6.2f}  "
              f"D_f - test {d['A_img_forget'] - d['A_img_test']:+.2f}")
        print(json.dumps({"levers": rows, "oracle_excess": d["A_img_forget"] - d["A_img_test"]}))
        return
    print("=== plain ViT, same backbone and budget ===", flush=True)
    vit = train("vit", ds, PlainViTConfig(), tc)
    vit_acc = M.accuracy(vit.classifier.split_proba(ds, "test"), ds.y_test)
    print(f"ViT test acc {vit_acc:.2f}  (train {workflow.train_seconds(vit):.1f}s)", flush=True)
    vit_models = {label: train("vit", ds, PlainViTConfig(), tc, r, REFERENCE_OFFSET) for label, r in requests}
    settings = {"both": (True, False), "self": (True,), "no-self": (False,)}[args.settings]
    results = [bench_setting(ds, tc, s, requests, vit_models, args.token_lr, args.oracles) for s in settings]

    def random_gap(r):
        return float(np.mean([v["avg_gap"] for k, v in r["requests"].items() if k.startswith("random10")]))

    print("\n=== summary ===")
    for r in results:
        print(f"{r['name']:8s} test acc {r['test_acc']:.2f} (ViT {vit_acc:.2f})  AvgGap random10 {random_gap(r):.2f}"
              f"  class0 {r['requests']['class0']['avg_gap']:.2f}")
    best = min(results, key=random_gap)
    print(f"default by AvgGap on random 10%: {best['name']} "
          f"(MunkeyConfig().self_retrieval = {MunkeyConfig().self_retrieval})", flush=True)
    rand = [v for k, v in best["requests"].items() if k.startswith("random10")]

    def mean(key, sub=None):
        return float(np.mean([(v[sub][key] if sub else v[key]) for v in rand]))

    summary = {
        "dataset": ds.name, "default_setting": best["name"],
        "munkey_test_acc": best["test_acc"], "vit_test_acc": vit_acc,
        "avg_gap_random10": mean("avg_gap"), "avg_gap_random10_before": mean("avg_gap_before"),
        "avg_gap_random10_vit_oracle": mean("avg_gap_vit"),
        "oracle_pairs_avg_gap_random10": mean("oracle_pairs_avg_gap"), "oracle_k": rand[0]["oracle_k"],
        "verdict_random10": [v["verdict"] for v in rand], "verdict_class0": best["requests"]["class0"]["verdict"],
        "fa_deleted": mean("FA", "after"), "fa_oracle": mean("FA", "oracle"),
        "mia_auroc_deleted": mean("MIA", "after"), "mia_auroc_oracle": mean("MIA", "oracle"),
        "speedup_oracle_over_delete": mean("speedup"),
        "a_img_test": best["a_img_test"], "a_img_forget": mean("a_img_forget"),
        "avg_gap_class0": best["requests"]["class0"]["avg_gap"],
        "inference_k_over_single": best["inference_cost"]["ensemble_over_single"],
        "other_settings": {r["name"]: {"test_acc": r["test_acc"], "avg_gap_random10": random_gap(r)}
                           for r in results if r is not best},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
