"""KLoM: KL divergence of margins per sample, unlearned models against oracles (EVIDENCE.md §1).

Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching" (arXiv 2410.23232, App. E.1);
easydub/EasyDUB-code easydub/eval.py. Margins are φ = ln p_y/(1−p_y) (``core.eval.membership``), models × samples.
"""

from __future__ import annotations

import numpy as np

INDICATIVE_KLOM_N = 50  # EVIDENCE §1: KLoM with fewer models per side is indicative only


def klom(unlearned: np.ndarray, oracle: np.ndarray, bins: int = 20, eps: float = 1e-5,
         clip: float = 100.0) -> np.ndarray:
    """KLoM per sample, EasyDUB's direction KL(unlearned ‖ oracle) (Georgiev et al., arXiv 2410.23232 App. E.1;
    easydub eval.py; EVIDENCE §1): margins (models × samples) clipped to ±``clip``, ``bins`` equal-width bins over
    the pooled [min, max] of each sample (width 1 when min = max), KL = Σ_{p_b>0} p_b ln(p_b / max(q_b, eps)).
    Unlike the reference's digitize, a value equal to the pooled max falls in the last bin. Saturates at
    ln(1/eps) ≈ 11.5; meaningless for few models per side (EVIDENCE §1 pitfall d): see ``klom_gauss``."""
    p = np.clip(np.atleast_2d(np.asarray(unlearned, np.float64)), -clip, clip)
    q = np.clip(np.atleast_2d(np.asarray(oracle, np.float64)), -clip, clip)
    if p.shape[1] != q.shape[1]:
        raise ValueError(f"margins for {p.shape[1]} and {q.shape[1]} samples")
    lo, hi = np.minimum(p.min(0), q.min(0)), np.maximum(p.max(0), q.max(0))
    width = np.where(hi > lo, (hi - lo) / bins, 1.0)
    n = p.shape[1]

    def hist(v: np.ndarray) -> np.ndarray:  # (n·bins,): sample i's share of models in bin b at i·bins + b
        idx = np.clip(np.floor((v - lo) / width).astype(np.int64), 0, bins - 1)
        return np.bincount((np.arange(n) * bins + idx).ravel(), minlength=n * bins) / len(v)

    hp, hq = hist(p), hist(q)
    used = np.flatnonzero(hp)  # the terms with p_b > 0: at most N_u per sample
    terms = hp[used] * np.log(hp[used] / np.maximum(hq[used], eps))
    return np.bincount(used // bins, weights=terms, minlength=n)


def klom_gauss(unlearned: np.ndarray, oracle: np.ndarray) -> np.ndarray:
    """The small-K stand-in for KLoM (EVIDENCE §1 pitfall d, non-reference): (μ_u − μ_r)² / (2σ²) per sample,
    σ² the oracles' within-sample variance pooled over samples. Needs ≥ 2 oracles. Null (same law on both sides):
    (1/N_u + 1/K)·χ²₁/2."""
    u = np.atleast_2d(np.asarray(unlearned, np.float64))
    r = np.atleast_2d(np.asarray(oracle, np.float64))
    if len(r) < 2:
        raise ValueError(f"KLoM-Gauss needs at least 2 oracles for a variance; got {len(r)}")
    var = max(float(r.var(0, ddof=1).mean()), 1e-12)
    return (u.mean(0) - r.mean(0)) ** 2 / (2 * var)


def summarize(values: np.ndarray) -> dict:
    """n, mean, P50 and P95 of per-sample values."""
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return {"n": 0, "mean": float("nan"), "p50": float("nan"), "p95": float("nan")}
    return {"n": int(len(v)), "mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p95": float(np.percentile(v, 95))}


def klom_report(unlearned: dict[str, np.ndarray], oracle: dict[str, np.ndarray]) -> dict:
    """Per split (e.g. forget, retain, val): KLoM and KLoM-Gauss summaries (P50/P95) of the unlearned models'
    margins (N_u × n) against the oracles' (K × n). ``indicative`` when either side has fewer than 50 models;
    ``null_p95`` is KLoM-Gauss's P95 when both sides share one law, 3.84·(1/N_u + 1/K)/2."""
    out = {}
    for split, u in unlearned.items():
        u, r = np.atleast_2d(u), np.atleast_2d(oracle[split])
        entry = {"n_models": [len(u), len(r)], "indicative": min(len(u), len(r)) < INDICATIVE_KLOM_N,
                 "klom": summarize(klom(u, r))}
        if len(r) >= 2:
            entry["klom_gauss"] = summarize(klom_gauss(u, r))
            entry["klom_gauss"]["null_p95"] = 3.841 * (1 / len(u) + 1 / len(r)) / 2
        out[split] = entry
    return out
