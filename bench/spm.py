"""SPM on Fashion-MNIST: accuracy, training and deletion time, and the gap to K retrained oracles.

    python bench/spm.py [--dataset fashion-mnist] [--home DIR] [--reuse | --reuse-oracles] [--oracles K]

Everything is measured in this one run: by default every model is trained into a fresh store (``--home``,
a temporary folder; the shipped bundle is not used), so training and oracle times come from this machine
now. ``--reuse-oracles`` trains the SPM and parametric originals afresh but loads the oracles from the
normal store (their times are those recorded when they were trained); ``--reuse`` loads everything from
the normal store or the shipped bundle. Every gap is read against K oracles (seed offsets 1..K, never the
original's seed): the oracle-to-oracle distances beside it and the verdict. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(fn, repeats: int = 1):
    """(result of the last call, median seconds over ``repeats`` calls)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--home", help="model store for this run (default: a new temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="use the normal store and its recorded times")
    ap.add_argument("--reuse-oracles", action="store_true",
                    help="train the originals now, load the oracles from the normal store")
    ap.add_argument("--oracles", type=int, help="oracles per request (default $UE_ORACLES or 3)")
    args = ap.parse_args()
    normal_home = os.environ.get("UE_HOME")
    if not args.reuse:
        os.environ["UE_NO_ASSETS"] = "1"
        os.environ["UE_HOME"] = args.home or tempfile.mkdtemp(prefix="ue-bench-spm-")

    from core import workflow
    from core.data import load_dataset, request_classes, request_random
    from core.eval import metrics as M

    def log(fraction, message):
        print(f"  [{fraction * 100:5.1f}%] {message}", file=sys.stderr, end="\r")

    ds = load_dataset(args.dataset)
    print(f"dataset {ds.name}: {ds.num_train} train / {len(ds.y_test)} test; store {os.environ.get('UE_HOME')}")
    parametric = workflow.original("parametric", ds, progress=log)
    spm = workflow.original("spm", ds, progress=log)
    if args.reuse_oracles:  # store.home() reads UE_HOME on every call: from here on, the normal store
        os.environ.pop("UE_NO_ASSETS", None)
        if normal_home is None:
            os.environ.pop("UE_HOME", None)
        else:
            os.environ["UE_HOME"] = normal_home
    out = {"spm_test_acc": spm.meta["test_acc"], "parametric_test_acc": parametric.meta["test_acc"],
           "spm_train_s": workflow.train_seconds(spm), "parametric_train_s": workflow.train_seconds(parametric)}
    print(f"\ntest accuracy: SPM {out['spm_test_acc']:.2f}%  parametric {out['parametric_test_acc']:.2f}%  "
          f"(same encoder and epochs; SPM trained in {out['spm_train_s']:.0f} s, "
          f"parametric in {out['parametric_train_s']:.0f} s)")

    model = spm.classifier
    requests = {"class0": request_classes(ds, [0]), "random10": request_random(ds, 0.1, 0)}
    for name, request in requests.items():
        ids = list(request.ids)
        deleted, incremental_s = timed(lambda ids=ids: model.forget(ids), repeats=5)
        _, reencode_s = timed(lambda ids=ids: model.forget(ids, mode="reencode"))

        def page_update(ids=ids, request=request):  # what the Predictions page computes after a deletion
            after = model.forget(ids)
            return M.split_metrics(after, ds, request)

        _, page_s = timed(page_update, repeats=3)
        oracles = workflow.oracles("spm", ds, request, args.oracles, progress=log)
        oracle_s = float(statistics.mean(workflow.train_seconds(o) or float("nan") for o in oracles))
        cmp = workflow.compare(deleted, spm, oracles, ds, request, incremental_s)
        before = M.split_metrics(model, ds, request)
        before.update(M.gaps_to_oracles(before, model.split_proba(ds, "test"),
                                        [M.split_metrics(o.classifier, ds, request) for o in oracles],
                                        [o.classifier.split_proba(ds, "test") for o in oracles]))
        pairs = cmp.spread["metrics"]
        print(f"\n== {request.description}: {len(ids)} samples")
        print(f"deletion: incremental {incremental_s * 1e3:.3f} ms, re-encode {reencode_s:.2f} s; "
              f"oracle retrain {oracle_s:.0f} s -> oracle / incremental = {oracle_s / incremental_s:,.0f}x, "
              f"oracle / re-encode = {oracle_s / reencode_s:,.0f}x; predictions page update {page_s * 1e3:.0f} ms")
        m, o = cmp.metrics, cmp.oracle_metrics
        print(f"verdict with {cmp.k} oracles: {cmp.sentence}")
        print(f"after deletion vs the oracles: PG {m['PG']:.2f} (oracle pairs {pairs['PG']['pairs_mean']:.2f} ± "
              f"{pairs['PG']['pairs_sd']:.2f})  KL {m['KL']:.4f} (pairs {pairs['KL']['pairs_mean']:.4f})  "
              f"(before deletion PG {before['PG']:.2f})")
        print(f"TA {m['TA']:.2f} / oracles {o['TA']:.2f}   RA {m['RA']:.2f} / {o['RA']:.2f}   "
              f"FA {m['FA']:.2f} / {o['FA']:.2f} ± {pairs['FA']['oracle_sd']:.2f}   "
              f"MIA {m['MIA']:.2f} / {o['MIA']:.2f}")
        out[f"verdict_{name}"] = cmp.verdict
        out.update({f"pg_{name}": m["PG"], f"kl_{name}": m["KL"], f"fa_{name}": m["FA"],
                    f"fa_{name}_oracle": o["FA"], f"mia_auroc_{name}": m["MIA"],
                    f"mia_auroc_{name}_oracle": o["MIA"], f"pg_{name}_before": before["PG"],
                    f"delete_incremental_s_{name}": incremental_s, f"delete_reencode_s_{name}": reencode_s,
                    f"oracle_train_s_{name}": oracle_s, f"predictions_update_s_{name}": page_s,
                    f"oracle_pairs_pg_{name}": pairs["PG"]["pairs_mean"],
                    f"oracle_pairs_fa_{name}": pairs["FA"]["pairs_mean"]})
        if name == "random10":
            knn_model = model.with_mode("knn")
            knn_oracles = [o.classifier.with_mode("knn") for o in oracles]
            knn_oracle_metrics = [M.split_metrics(o, ds, request) for o in knn_oracles]
            knn_oracle_probs = [o.split_proba(ds, "test") for o in knn_oracles]
            knn_deleted = knn_model.forget(ids)
            knn = M.split_metrics(knn_deleted, ds, request)
            knn.update(M.gaps_to_oracles(knn, knn_deleted.split_proba(ds, "test"), knn_oracle_metrics,
                                         knn_oracle_probs))
            knn_before = M.gaps_to_oracles(M.split_metrics(knn_model, ds, request),
                                           knn_model.split_proba(ds, "test"), knn_oracle_metrics, knn_oracle_probs)
            knn_oracle_fa = M.mean_metrics(knn_oracle_metrics)["FA"]
            knn_pairs = [M.prediction_gap(a, b) for a, b in itertools.combinations(knn_oracle_probs, 2)]
            print(f"kNN mode (k={knn_model.config.knn_k}) vs the {len(oracles)} oracles in kNN mode: PG "
                  f"{knn['PG']:.2f} (oracle pairs {statistics.mean(knn_pairs) if knn_pairs else float('nan'):.2f}; "
                  f"before deletion {knn_before['PG']:.2f})  FA {knn['FA']:.2f} / oracles {knn_oracle_fa:.2f}"
                  f"  TA {knn['TA']:.2f}")
            out.update({"pg_random10_knn": knn["PG"],
                        "fa_random10_knn": knn["FA"], "pg_random10_knn_before": knn_before["PG"],
                        "fa_random10_knn_oracle": knn_oracle_fa,
                        "delete_incremental_s": incremental_s, "delete_reencode_s": reencode_s,
                        "oracle_train_s": oracle_s, "speedup_oracle_over_delete": oracle_s / incremental_s})
    keys = ["spm_test_acc", "parametric_test_acc", "spm_train_s", "delete_incremental_s", "delete_reencode_s",
            "oracle_train_s", "speedup_oracle_over_delete", "pg_class0", "pg_random10", "oracle_pairs_pg_random10",
            "fa_class0", "fa_random10", "fa_random10_oracle", "mia_auroc_random10", "mia_auroc_random10_oracle",
            "pg_random10_before", "pg_random10_knn", "fa_random10_knn"]
    verdicts = {k: v for k, v in out.items() if k.startswith("verdict_")}
    extra = {k: v for k, v in out.items() if k not in keys and k not in verdicts}
    print("\nother measurements:", json.dumps({k: round(v, 6) for k, v in extra.items()}))
    print(json.dumps({**{k: round(out[k], 6) for k in keys}, "oracle_k": len(oracles), **verdicts}))


if __name__ == "__main__":
    main()
