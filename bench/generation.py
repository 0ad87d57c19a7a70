"""The generation SPM forgetting a class: generated-class accuracy, UA, FD to real images and to oracles, copying.

    python bench/generation.py [--dataset fashion-mnist] [--q 7] [--epochs 4] [--train-steps 0]
                               [--oracle-seeds 1] [--n 100] [--ddim-steps 50] [--one-at-a-time] [--fresh]
                               [--out DIR]

Trains (or loads from the store) the generation SPM and its K oracles, the same recipe retrained without class q
with seeds +1..+K, as Ray tasks side by side (one CPU each), or with ``--one-at-a-time`` one after another on every
core (``train_s`` is then the wait for one model); they are stored, so a second run only samples. Then, from the
same noise seeds: ``n`` images per class before forgetting, after ``forget_class(q)`` (q's support filled with the
donor class's images relabelled q, as the authors' evaluation) and from each oracle (sampled for q the same way),
all scored by the stored parametric classifier trained on all the data (Zheng et al., CVPR 2026, arXiv 2603.22870;
metrics in ``core.eval.generation``). Finally a sample deletion: the training images nearest to one retained class's
samples are forgotten and that class is drawn again, to see whether they still come back. ``--out`` keeps the sample
grids as PNG. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEYS = ("class_acc_before", "ua", "retained_acc_drop", "oracle_ua", "fd", "fd_o", "sample_s_per_100", "train_s")


def save_grid(images: dict[int, np.ndarray], path: Path, per_row: int = 10) -> None:
    """One row per class, ``per_row`` images each, as a PNG."""
    from PIL import Image

    rows = [np.concatenate(list(x[:per_row]), axis=-1) for _, x in sorted(images.items())]
    grid = np.concatenate(rows, axis=-2)
    arr = (np.clip(grid, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)).save(path)


def wait(jobs: list, label: str) -> list:
    """Follow Ray jobs on stderr until all have finished; their results, or exit with the first error."""
    while not all(j.done_event.wait(0) for j in jobs):
        status = "  ".join(f"{j.progress * 100:5.1f}% {j.message[:60]}" for j in jobs)
        print(f"  {label}: {status}", file=sys.stderr, end="\r")
        time.sleep(2)
    print(file=sys.stderr)
    for j in jobs:
        if not j.finished_ok:
            raise SystemExit(f"{j.title}: {j.state} {j.error}")
    return [j.result for j in jobs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--config", default="cpu-28", help="a named config of core.models.gen_spm.NAMED_CONFIGS")
    ap.add_argument("--q", type=int, default=7, help="the class to forget")
    ap.add_argument("--donor", type=int, default=None, help="the class filling q's support (default: reference)")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: the kind's recipe)")
    ap.add_argument("--train-steps", type=int, default=0, help="> 0: stop training after this many steps")
    ap.add_argument("--oracle-seeds", type=int, default=1, help="K oracles retrained without q (0: none)")
    ap.add_argument("--n", type=int, default=100, help="images generated per class and model")
    ap.add_argument("--ddim-steps", type=int, default=None, help="DDIM steps (default: the config's)")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--copied", type=int, default=20, help="training images to forget in the sample deletion")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for sampling here")
    ap.add_argument("--one-at-a-time", action="store_true",
                    help="train the original, then each oracle, each on every core (default: side by side, one "
                         "core each)")
    ap.add_argument("--fresh", action="store_true", help="train into a new temporary store (times from now)")
    ap.add_argument("--out", help="folder for the sample grids (PNG)")
    args = ap.parse_args()
    if args.fresh:
        os.environ["UE_HOME"] = tempfile.mkdtemp(prefix="ue-bench-gen-")

    from core import bundle, workflow
    from core.backend import Backend, limit_threads
    from core.data import load_dataset, request_classes
    from core.eval import generation as G
    from core.models.gen_spm import NAMED_CONFIGS

    ds = load_dataset(args.dataset)
    config = replace(NAMED_CONFIGS[args.config], train_steps=args.train_steps)
    recipe = bundle.recipe(ds.name, "gen-spm")
    recipe = replace(recipe, epochs=args.epochs) if args.epochs else recipe
    request = request_classes(ds, [args.q])
    print(f"dataset {ds.name}: {ds.num_train} train; forget class {args.q} ({ds.class_names[args.q]}); "
          f"store {bundle.store.home()}; recipe {recipe}")
    classifier = bundle.train_or_load("parametric", ds).classifier

    engine = Backend()
    try:
        if args.one_at_a_time:  # each model alone on every core: train_s is the time a user waits for one
            cpus = engine.num_cpus
            trained = wait([workflow.model_job(engine, "gen-spm", ds, None, 0, config, recipe, cpus=cpus)], "original")
            for offset in workflow.oracle_offsets(args.oracle_seeds) if args.oracle_seeds else ():
                trained += wait([workflow.model_job(engine, "gen-spm", ds, request, offset, config, recipe,
                                                    cpus=cpus)], f"oracle +{offset}")
        else:  # one CPU per training task: the original and the oracles train side by side
            jobs = [workflow.model_job(engine, "gen-spm", ds, None, 0, config, recipe)]
            if args.oracle_seeds:
                jobs += workflow.oracle_jobs(engine, "gen-spm", ds, request, args.oracle_seeds, config, recipe)
            trained = wait(jobs, "training")
    finally:
        engine.shutdown()
    limit_threads(args.threads)
    model, oracles = trained[0].classifier, [t.classifier for t in trained[1:]]
    train_s = workflow.train_seconds(trained[0])
    print(f"trained: original {train_s:.0f} s, oracles "
          f"{', '.join(f'{workflow.train_seconds(t):.0f} s' for t in trained[1:]) or 'none'}")

    def draw(m, label: str) -> tuple[dict[int, np.ndarray], float]:
        start, out = time.perf_counter(), {}
        for c in range(ds.num_classes):
            def progress(f, message, c=c):
                print(f"  {label}: class {c} {f * 100:5.1f}%", file=sys.stderr, end="\r")
            out[c] = m.sample(c, args.n, args.noise_seed, steps=args.ddim_steps, progress=progress)
        return out, time.perf_counter() - start

    before, before_s = draw(model, "before")
    after_model = model.forget_class(args.q, args.donor)
    after, _ = draw(after_model, "after")
    oracle_samples = [draw(o.forget_class(args.q, args.donor), f"oracle {k}")[0] for k, o in enumerate(oracles)]
    print(file=sys.stderr)
    neighbours = G.TrainingNeighbours(ds)
    report = G.class_forgetting_report(classifier, ds, args.q, before, after, oracle_samples, neighbours)
    report["sample_s_per_100"] = before_s / (ds.num_classes * args.n) * 100
    report["train_s"] = train_s
    report["oracle_train_s"] = [workflow.train_seconds(t) for t in trained[1:]]
    report["memory_check"] = after_model.memory_check(request.ids)
    report["retained_samples_identical"] = all(np.array_equal(before[c], after[c]) for c in before if c != args.q)

    # a sample deletion: forget the training images nearest to one retained class's samples, draw it again
    c = next(k for k in range(ds.num_classes) if k not in (args.q, after_model.donors[args.q]))
    nearest = G.memorisation(neighbours, before[c])
    copied = np.unique(nearest.ids[:, 0])[:args.copied]
    forgotten_model = model.forget(copied)
    again = forgotten_model.sample(c, args.n, args.noise_seed, steps=args.ddim_steps)
    report["sample_deletion"] = {"class": c, "forgotten": int(len(copied)),
                                 "before": nearest.summary(copied),
                                 "after": G.memorisation(neighbours, again).summary(copied),
                                 "memory_check": forgotten_model.memory_check(copied)}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        save_grid(before, out / "before.png")
        save_grid(after, out / "after.png")
        for k, o in enumerate(oracle_samples):
            save_grid(o, out / f"oracle{k}.png")
        print(f"grids in {out}")

    per_class = "  ".join(f"{k}:{v:.0f}" for k, v in report["per_class_acc_before"].items())
    print(f"\ngenerated-class accuracy before forgetting: {report['class_acc_before']:.1f}%  ({per_class})")
    print(f"after forgetting class {args.q}: UA {report['ua']:.1f}%  retained accuracy "
          f"{report['retained_acc_before']:.1f}% -> {report['retained_acc_after']:.1f}% "
          f"(drop {report['retained_acc_drop']:.2f} points; retained samples identical: "
          f"{report['retained_samples_identical']})")
    if oracles:
        print(f"oracle: UA {report['oracle_ua']:.1f}%  retained accuracy {report['oracle_retained_acc']:.1f}%  "
              f"FD {report['oracle_fd']:.3f}")
        print(f"FD_O (after vs oracle, all classes) {report['fd_o']:.3f}; class {args.q} only "
              f"{report['fd_o_forgotten_class']:.3f}" +
              (f"; oracle vs oracle {report['fd_o_seed_floor']:.3f}" if "fd_o_seed_floor" in report else ""))
    print(f"FD to real retained-class images: after {report['fd']:.3f}, before {report['fd_before']:.3f}, "
          f"real images of the same count {report['fd_floor']:.3f}")
    print(f"memorisation of class {args.q}: before {report['memorisation_before']}\n"
          f"                             after  {report['memorisation_after']}")
    print(f"sample deletion: {json.dumps(report['sample_deletion'])}")
    print(f"sampling {report['sample_s_per_100']:.1f} s per 100 images ({args.threads} threads, "
          f"{args.ddim_steps or model.config.diffusion.sample_steps} DDIM steps); "
          f"training {train_s:.0f} s")
    extra = {k: v for k, v in report.items() if k not in KEYS}
    print("\nother measurements:", json.dumps(extra, default=float))
    print(json.dumps({k: report.get(k) for k in KEYS}, default=float))


if __name__ == "__main__":
    main()
