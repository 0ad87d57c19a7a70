"""Per-sample membership evidence with the oracles as the "out" distribution (EVIDENCE.md §2, §3).

Everything here works on the logit-scaled confidence φ(θ, x, y) = z_y − logsumexp_{j≠y} z_j = ln p_y/(1−p_y)
("margin"), one value per (model, sample). Arrays of margins are (n,) for one model and (K, n) for K models.

- ``margins_from_probs`` / ``margins_from_logits`` / ``split_margins``: φ, clipped to ±100.
- ``lira_offline``: offline LiRA z-scores and one-sided scores against the oracles (Carlini et al. 2022).
- ``ulira``: the dashboard's leave-one-seed-out U-LiRA when K unlearned models exist (Hayes et al. 2025).
- ``attack_summary`` / ``tpr_at_fpr``: AUC, balanced accuracy and TPR at fixed FPR of a score.
- ``membership_rows``: the ranked, CSV-ready per-sample table.
- ``matched_heldout``: test rows with D_f's class mix (the attack's negatives).
- ``svc_mia``: the l1-sparse / SalUn SVC "MIA-efficacy" (Jia et al. 2023; Fan et al. 2024).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from core.eval.metrics import auroc, mia_auroc

CLIP = 100.0  # EVIDENCE §1: margins are clipped to ±100
FLAG_Z = 2.0  # |z| > 2 flags a sample (above: still looks trained-on; below: pushed past the oracles)
_TINY_P = 1e-45  # float32 underflow: log of a zero probability becomes ln(1e-45) ≈ −103, then the clip


def margins_from_logits(logits: np.ndarray, labels: np.ndarray, clip: float = CLIP) -> np.ndarray:
    """φ = z_y − logsumexp_{j≠y} z_j per row, in float64, clipped to ±``clip`` (EVIDENCE §Definitions)."""
    z = np.asarray(logits, np.float64)
    rows = np.arange(len(labels))
    own = z[rows, labels]
    others = z.copy()
    others[rows, labels] = -np.inf
    return np.clip(own - logsumexp(others, axis=1), -clip, clip)


def margins_from_probs(probs: np.ndarray, labels: np.ndarray, clip: float = CLIP) -> np.ndarray:
    """φ from probabilities: log p_y − log Σ_{j≠y} p_j (the same value as from logits, since softmax only shifts
    every logit by one constant); exact in float32 until a probability underflows, beyond |φ| ≈ 87. The others'
    sum is taken directly in float64 (not p_y's complement, which cancels when p_y is near 1)."""
    p = np.clip(np.asarray(probs, np.float64), _TINY_P, None)
    rows = np.arange(len(labels))
    own = p[rows, labels]
    p[rows, labels] = 0.0
    return np.clip(np.log(own) - np.log(p.sum(1)), -clip, clip)


def split_margins(model, dataset, split: str) -> np.ndarray:
    """φ of ``model`` on every sample of a whole split ("train" or "test") with its true labels, from the
    model's memoised split probabilities (a recorded oracle's own φ: ``core.recorded``); memoised on the
    (immutable) model too (EVIDENCE: cache φ)."""
    if (recorded := getattr(model, "recorded_margins", None)) is not None:
        return recorded(dataset, split)
    cache = model.__dict__.setdefault("_split_margins", {})
    key = (dataset.fingerprint(), split)
    if key not in cache:
        cache[key] = margins_from_probs(model.split_proba(dataset, split), getattr(dataset, f"y_{split}"))
    return cache[key]


def lira_offline(target: np.ndarray, oracle: np.ndarray, predictive: bool = True, per_sample: bool = False) -> dict:
    """Offline LiRA against K ≥ 2 oracles (Carlini et al., arXiv 2112.03570; EVIDENCE §2a).

    μ_i = mean oracle φ of sample i; σ = √(mean_i var_k φ) (the paper's global variance for few shadow models;
    ``per_sample`` only when K ≳ 64). With ``predictive`` σ is widened to σ·√(1 + 1/K), the spread of a *fresh*
    oracle around a mean of K, so a left-out oracle gets z ~ N(0, 1) whatever K is. z_i = (φ_i − μ_i)/σ and
    score_i = Φ(z_i) (one-sided: high = still looks trained-on). Returns z, score, mu, sigma, k."""
    oracle = np.atleast_2d(np.asarray(oracle, np.float64))
    target = np.asarray(target, np.float64)
    k = len(oracle)
    if k < 2:
        raise ValueError(f"offline LiRA needs at least 2 oracles for a variance; got {k}")
    if oracle.shape[1] != len(target):
        raise ValueError(f"{len(target)} target margins but oracle margins for {oracle.shape[1]} samples")
    mu = oracle.mean(0)
    var = oracle.var(0, ddof=1)
    sigma = np.sqrt(var) if per_sample else np.sqrt(var.mean())
    scale = np.maximum(sigma * (np.sqrt(1 + 1 / k) if predictive else 1.0), 1e-6)
    z = (target - mu) / scale
    return {"z": z, "score": norm.cdf(z), "mu": mu, "sigma": sigma, "k": k}


def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float) -> dict:
    """TPR at the strictest threshold whose FPR on ``neg`` is at most ``fpr`` (a sample is called a member when
    its score is strictly above the threshold). Returns tpr and the achieved fpr in %, the threshold, and
    ``indicative`` when fewer than 10/fpr negatives make the estimate coarse."""
    pos, neg = np.asarray(pos, np.float64), np.sort(np.asarray(neg, np.float64))[::-1]
    if len(pos) == 0 or len(neg) == 0:
        return {"tpr": float("nan"), "fpr": float("nan"), "threshold": float("nan"), "indicative": True}
    allowed = int(np.floor(fpr * len(neg)))  # false positives we may keep
    threshold = neg[allowed] if allowed < len(neg) else -np.inf
    return {"tpr": float((pos > threshold).mean() * 100), "fpr": float((neg > threshold).mean() * 100),
            "threshold": float(threshold), "indicative": len(neg) < 10 / fpr}


def _best_balanced_accuracy(pos: np.ndarray, neg: np.ndarray) -> float:
    """max over thresholds of (TPR + TNR)/2, in % (LiRA's "balanced accuracy")."""
    scores = np.concatenate([pos, neg])
    is_pos = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], is_pos[order]
    tp, fp = np.cumsum(lab), np.cumsum(1 - lab)
    last = np.r_[s[1:] != s[:-1], True]  # a threshold only between distinct scores
    acc = (tp[last] / len(pos) + 1 - fp[last] / len(neg)) / 2
    return float(max(acc.max(), 0.5) * 100)


def attack_summary(pos: np.ndarray, neg: np.ndarray, fprs: tuple[float, ...] = (0.01, 0.05)) -> dict:
    """A membership score's AUC and best balanced accuracy (%), and TPR at each FPR in ``fprs``
    (positives = D_f on the judged model, negatives = held-out samples on it; EVIDENCE §2a "Report")."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("an attack needs positives (forgotten samples) and negatives (held-out samples)")
    return {"auc": auroc(pos, neg), "balanced_acc": _best_balanced_accuracy(pos, neg),
            "tpr_at": {f"{f * 100:g}%": tpr_at_fpr(pos, neg, f) for f in fprs},
            "n_pos": int(len(pos)), "n_neg": int(len(neg))}


def _gauss_logpdf(x: np.ndarray, mu: np.ndarray, sigma: float) -> np.ndarray:
    return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma)


def ulira(unlearned: np.ndarray, oracle: np.ndarray, fprs: tuple[float, ...] = (0.01, 0.05)) -> dict:
    """U-LiRA, the dashboard variant of Hayes et al. (arXiv 2403.01218; EVIDENCE §2b): IN = K unlearned models
    (θ_u^k from their own original θ_o^k), OUT = K oracles, one global σ per side. Fold k fits both Gaussians on
    the other K−1 models and scores θ_u^k (positive) and θ_r^k (negative) on D_f by
    LR = ln N(φ; μ_u, σ_u) − ln N(φ; μ_r, σ_r). Folds are pooled for the summary (accuracy at LR > 0: 50% is
    ideal); the per-sample score is the positives' mean LR. Needs K ≥ 3 per side, equal K."""
    u, r = np.atleast_2d(np.asarray(unlearned, np.float64)), np.atleast_2d(np.asarray(oracle, np.float64))
    k = len(u)
    if k != len(r) or k < 3:
        raise ValueError(f"U-LiRA needs as many unlearned models as oracles, at least 3 each; got {k} and {len(r)}")
    pos, neg = np.empty_like(u), np.empty_like(r)
    for fold in range(k):
        rest = np.arange(k) != fold
        mu_u, mu_r = u[rest].mean(0), r[rest].mean(0)
        s_u = max(np.sqrt(u[rest].var(0, ddof=1).mean()), 1e-6)
        s_r = max(np.sqrt(r[rest].var(0, ddof=1).mean()), 1e-6)
        pos[fold] = _gauss_logpdf(u[fold], mu_u, s_u) - _gauss_logpdf(u[fold], mu_r, s_r)
        neg[fold] = _gauss_logpdf(r[fold], mu_u, s_u) - _gauss_logpdf(r[fold], mu_r, s_r)
    summary = attack_summary(pos.ravel(), neg.ravel(), fprs)
    summary["accuracy_at_0"] = float(((pos > 0).mean() + (neg <= 0).mean()) / 2 * 100)
    return {"summary": summary, "per_sample": pos.mean(0), "k": k}


def membership_rows(train_ids: np.ndarray, labels: np.ndarray, margins: np.ndarray, lira: dict,
                    ulira_scores: np.ndarray | None = None, flag_z: float = FLAG_Z) -> list[dict]:
    """The per-sample table for D_f, most member-like first: one dict per forgotten sample (CSV-ready) with its
    training id, label, margin φ on the judged model, the oracles' mean φ, z, the LiRA score Φ(z), a flag
    (``trained-on`` when z > ``flag_z``, ``over-forgotten`` when z < −``flag_z``) and the U-LiRA LR if given."""
    z, score = np.asarray(lira["z"]), np.asarray(lira["score"])
    order = np.argsort(-z, kind="stable")
    rows = []
    for rank, i in enumerate(order, start=1):
        flag = "trained-on" if z[i] > flag_z else "over-forgotten" if z[i] < -flag_z else ""
        row = {"rank": rank, "train_id": int(train_ids[i]), "label": int(labels[i]), "margin": float(margins[i]),
               "oracle_margin": float(lira["mu"][i]), "z": float(z[i]), "lira_score": float(score[i]), "flag": flag}
        if ulira_scores is not None:
            row["ulira_lr"] = float(ulira_scores[i])
        rows.append(row)
    return rows


def matched_heldout(forget_labels: np.ndarray, test_labels: np.ndarray, seed: int = 0,
                    size: int | None = None) -> np.ndarray:
    """Sorted test rows whose class mix matches ``forget_labels`` (the attack's negatives for id and random
    requests; for a class request: every test row of the forgotten classes). By default as many rows as the
    scarcest class allows; per-class counts by largest remainder, rows drawn without replacement with ``seed``."""
    forget_labels, test_labels = np.asarray(forget_labels), np.asarray(test_labels)
    if len(forget_labels) == 0:
        raise ValueError("no forgotten samples: nothing to match a held-out set to")
    classes, counts = np.unique(forget_labels, return_counts=True)
    pools = [np.flatnonzero(test_labels == c) for c in classes]
    missing = [int(c) for c, p in zip(classes, pools) if len(p) == 0]
    if missing:
        raise ValueError(f"the test set has no sample of class {missing}: no held-out set matches D_f's classes")
    share = counts / counts.sum()
    most = int(min(np.floor(len(p) / s + 1e-9) for p, s in zip(pools, share)))
    n = most if size is None else min(int(size), most)
    exact = n * share
    alloc = np.floor(exact + 1e-9).astype(int)
    extra = np.argsort(-(exact - alloc), kind="stable")[: n - alloc.sum()]  # largest remainders get one more
    alloc[extra] += 1
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(p, a, replace=False) for p, a in zip(pools, alloc)]))


# ---- SVC MIA-efficacy (l1-sparse / SalUn) -------------------------------------------------------------------

def _svc_features(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The attack's features: correctness, confidence p_y, entropy, modified entropy (Song & Mittal 2021,
    −(1−p_y) log p_y − Σ_{j≠y} p_j log(1−p_j), written correctly rather than as the repos' buggy m_entropy),
    and the probability vector."""
    p = np.clip(np.asarray(probs, np.float64), 1e-30, 1.0)
    rows = np.arange(len(labels))
    py = p[rows, labels]
    others = p * np.log(np.clip(1 - p, 1e-30, None))
    others[rows, labels] = 0.0
    return {"correctness": (p.argmax(1) == labels).astype(np.float64)[:, None], "confidence": py[:, None],
            "entropy": -(p * np.log(p)).sum(1)[:, None],
            "m_entropy": (-(1 - py) * np.log(py) - others.sum(1))[:, None], "prob": p}


def svc_mia(forget_probs: np.ndarray, forget_labels: np.ndarray, retain_probs: np.ndarray,
            retain_labels: np.ndarray, test_probs: np.ndarray, test_labels: np.ndarray, seed: int = 0,
            max_per_side: int | None = 5000, features: tuple[str, ...] | None = None) -> dict:
    """SVC MIA-efficacy (Jia et al., arXiv 2304.04934 / Fan et al., arXiv 2310.12508, evaluation/SVC_MIA.py;
    EVIDENCE §3): per feature, sklearn SVC(C=3, rbf, gamma='auto') trained on shadow members = retain samples
    vs non-members = test samples; efficacy = % of D_f predicted non-member (closer to the oracle's is better,
    not higher). Members are a seeded subset of D_r matched to the test set's class mix (not the repos' "first
    |D_t| of D_r"); ``max_per_side`` caps each side (SVC is quadratic). ``features``: the features to attack with
    (default all five; the headline needs only "confidence"). The loss-threshold AUROC of D_f vs the same test
    samples sits beside it. Headline: ``efficacy['confidence']``."""
    from sklearn.svm import SVC  # scikit-learn is in requirements.txt; imported here as only this needs it

    rng = np.random.default_rng(seed)
    neg_rows = np.arange(len(test_labels))
    if max_per_side is not None and len(neg_rows) > max_per_side:
        neg_rows = np.sort(rng.choice(neg_rows, max_per_side, replace=False))
    kept = np.isin(test_labels[neg_rows], np.unique(retain_labels))  # test classes the retain set still has
    pos_rows = matched_heldout(test_labels[neg_rows][kept], retain_labels, seed, size=len(neg_rows))
    shadow_in = _svc_features(retain_probs[pos_rows], retain_labels[pos_rows])
    shadow_out = _svc_features(test_probs[neg_rows], test_labels[neg_rows])
    target = _svc_features(forget_probs, forget_labels)
    y = np.r_[np.ones(len(pos_rows)), np.zeros(len(neg_rows))]
    efficacy = {}
    for name in features or tuple(shadow_in):
        clf = SVC(C=3, gamma="auto", kernel="rbf").fit(np.vstack([shadow_in[name], shadow_out[name]]), y)
        # a row's prediction depends on that row alone: each distinct row once (after a class deletion a
        # by-design model gives every forgotten sample p_y = 0, so thousands of rows are one)
        rows, back = np.unique(target[name], axis=0, return_inverse=True)
        efficacy[name] = float((1 - clf.predict(rows)[back.ravel()].mean()) * 100)
    return {"efficacy": efficacy, "headline": efficacy["confidence"], "n_members": int(len(pos_rows)),
            "n_nonmembers": int(len(neg_rows)), "n_forget": int(len(forget_labels)),
            "loss_mia": mia_auroc(forget_probs, forget_labels, test_probs, test_labels)}
