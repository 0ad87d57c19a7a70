"""Training throughput of the paper-scale CIFAR-10 models (parametric and SPM on the CIFAR ResNet-18) on CUDA,
in float32 and under bf16 autocast, beside a few CPU steps for the ratio; with ``--full``, the full default
SPM training on CIFAR-10 (``$CIFAR10_DIR``) in a fresh store.

    python bench/gpu.py [--steps 30] [--cpu-steps 2] [--full]

The models, recipe and configs are the ones ``core.bundle`` picks for cifar10 (ResNet-18 512-d, SGD, SPM with
1024 support images); the throughput runs train them through their own ``fit`` on random CIFAR-shaped
images, so they need no data. Images/s counts what the encoder sees per step: the batch for the parametric
model, batch + the support actually drawn for SPM (img/step). The CPU runs use 64 images a step (parametric
batch 64; SPM batch 32 + 32 support) to finish in under a minute on two cores. Without CUDA it says so and
measures the CPU only.
Last line: one JSON object.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core import bundle  # noqa: E402
from core.data.dataset import Dataset  # noqa: E402
from core.models import get_model_kind  # noqa: E402

KINDS = ("parametric", "spm")


def synthetic_cifar(n: int, seed: int = 0) -> Dataset:
    """``n`` random 3x32x32 training images over 10 classes (throughput does not depend on the pixels)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, 32, 32), dtype=np.float32)
    y = np.arange(n) % 10
    return Dataset("cifar10-synthetic", x, y, x[:10], y[:10], tuple(str(c) for c in range(10)))


def throughput(kind: str, device: torch.device, amp: bool, steps: int, batch: int, support: int | None,
               warmup_steps: int = 2) -> dict:
    """Train ``kind`` (cifar10's default config, cifar10's recipe at ``batch``) for ``steps`` steps after
    ``warmup_steps`` unmeasured ones (CUDA context, cuDNN algorithm choice, allocator)."""
    spec = get_model_kind(kind)
    config = bundle.default_config(kind, "cifar10")
    if support is not None and kind == "spm":
        config = replace(config, support_size=support)
    recipe = replace(bundle.RECIPES["cifar10"], epochs=1, batch_size=batch, amp=amp, device=device.type)
    data = synthetic_cifar(max(steps, warmup_steps) * batch)
    seen = []

    def run(n_steps: int) -> dict:
        torch.manual_seed(0)
        net = spec.build(data, config)
        ids = data.train_ids[:n_steps * batch]
        kwargs = {"episode_hook": lambda b, s: seen.append(len(b) + len(s))} if kind == "spm" else {}
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        log = spec.fit(net, data, ids, config, recipe, device=device, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        log["wall_s"] = time.perf_counter() - start
        return log

    run(warmup_steps)
    seen.clear()
    log = run(steps)
    images = sum(seen) if kind == "spm" else log["steps"] * batch
    return {"kind": kind, "device": device.type, "precision": "bf16" if amp and device.type == "cuda" else "fp32",
            "batch": batch, "support": getattr(config, "support_size", 0) if kind == "spm" else 0,
            "steps": log["steps"], "images_per_step": images / max(log["steps"], 1), "seconds": log["wall_s"],
            "images_per_s": images / log["wall_s"],
            "final_loss": log["final_loss"]}


def full_spm(home: str | None) -> dict:
    """The default SPM on CIFAR-10 (100 epochs, ResNet-18, support 1024) trained from scratch in a fresh store."""
    os.environ["UE_NO_ASSETS"] = "1"
    os.environ["UE_HOME"] = home or tempfile.mkdtemp(prefix="ue-bench-gpu-")
    from core.data import load_dataset

    ds = load_dataset("cifar10")  # DataError with what to set when $CIFAR10_DIR is missing

    def log(fraction, message):
        print(f"  [{fraction * 100:5.1f}%] {message}", file=sys.stderr, end="\r")

    start = time.perf_counter()
    model = bundle.train_or_load("spm", ds, progress=log)
    return {"full_spm_test_acc": model.meta["test_acc"], "full_spm_train_s": model.meta["train_log"]["train_s"],
            "full_spm_wall_s": time.perf_counter() - start, "full_spm_key": model.key}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="measured CUDA steps per run")
    ap.add_argument("--cpu-steps", type=int, default=2, help="measured CPU steps per run")
    ap.add_argument("--full", action="store_true", help="also train the default SPM on CIFAR-10 (CUDA, $CIFAR10_DIR)")
    ap.add_argument("--home", help="store for --full (default: a new temporary folder)")
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    where = torch.cuda.get_device_name(0) if cuda else f"no CUDA: CPU only ({torch.get_num_threads()} threads)"
    print(f"torch {torch.__version__}; {where}")
    recipe = bundle.RECIPES["cifar10"]
    rows = []
    for kind in KINDS:
        if cuda:
            for amp in (False, True):
                rows.append(throughput(kind, torch.device("cuda"), amp, args.steps, recipe.batch_size, None))
        cpu_batch = 64 if kind == "parametric" else 32  # 64 images a step for both (SPM: + 32 support)
        rows.append(throughput(kind, torch.device("cpu"), False, args.cpu_steps, cpu_batch, 32, warmup_steps=1))

    print("\nResNet-18 training throughput (images through the encoder per second; SPM: batch + support)")
    print(f"{'model':<11}{'device':<7}{'precision':<10}{'batch':>6}{'support':>8}{'img/step':>9}{'steps':>6}"
          f"{'seconds':>9}{'images/s':>10}")
    for r in rows:
        print(f"{r['kind']:<11}{r['device']:<7}{r['precision']:<10}{r['batch']:>6}{r['support']:>8}"
              f"{r['images_per_step']:>9.0f}{r['steps']:>6}{r['seconds']:>9.2f}{r['images_per_s']:>10.1f}")

    out: dict = {"cuda": cuda, "device": where}
    for r in rows:
        out[f"{r['kind']}_{r['device']}_{r['precision']}_img_s"] = round(r["images_per_s"], 2)
    if cuda:
        print("\nratios")
        for kind in KINDS:
            fp32, bf16, cpu = (out[f"{kind}_{d}_img_s"] for d in ("cuda_fp32", "cuda_bf16", "cpu_fp32"))
            out[f"{kind}_amp_speedup"] = round(bf16 / fp32, 3)
            out[f"{kind}_cuda_over_cpu"] = round(bf16 / cpu, 1)
            print(f"  {kind}: bf16 autocast / float32 {bf16 / fp32:.2f}x; CUDA (bf16) / CPU {bf16 / cpu:.0f}x")
    if args.full:
        if cuda:
            print("\nfull default SPM training on CIFAR-10 ...")
            full = full_spm(args.home)
            print(f"\nSPM on CIFAR-10: test accuracy {full['full_spm_test_acc']:.2f} %, "
                  f"trained in {full['full_spm_train_s']:.0f} s")
            out.update(full)
        else:
            print("\n--full skipped: the 100-epoch ResNet-18 recipe needs CUDA")
            out["full_spm"] = "skipped: no CUDA"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
