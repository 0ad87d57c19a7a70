"""Issue 14's evidence: each function on hand-made arrays with known answers, then the verdict's controls on
digits (a left-out oracle reads *looks unseen*, the untouched original *not forgotten*)."""

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import norm
from scipy.stats import t as student_t

from core import bundle
from core.data import request_classes, request_random
from core.data.dataset import Dataset
from core.eval import evidence as E
from core.eval import klom as KL
from core.eval import membership as MB
from core.eval import relearn as R
from core.eval import residue as RS
from tests.conftest import FAST

# ---- hand-made arrays -----------------------------------------------------------------------------------------


def test_margin_is_log_odds_of_the_true_class_from_logits_or_probs():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    labels = np.array([0, 2])
    expected = [2 - np.log(2), -1 - np.log(np.exp(0) + np.exp(1))]
    np.testing.assert_allclose(MB.margins_from_logits(logits, labels), expected)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(MB.margins_from_probs(probs, labels), expected, rtol=1e-9)
    p = probs[0, 0]
    assert MB.margins_from_probs(probs, labels)[0] == pytest.approx(np.log(p / (1 - p)))
    assert MB.margins_from_logits(np.array([[500.0, 0.0]]), np.array([0]))[0] == 100.0  # clipped
    # p_y rounds to 1 in float32: the others' own mass still gives φ (1 − p_y would be 0)
    sure = np.exp(np.array([[40.0, 0.0, 0.0]]) - 40.0).astype(np.float32)
    assert MB.margins_from_probs(sure / sure.sum(), np.array([0]))[0] == pytest.approx(40 - np.log(2), rel=1e-6)


def test_band_is_a_student_t_prediction_interval_with_a_floor():
    b = E.band([1.0, 2.0, 3.0], floor=0.0, level=0.95)
    half = student_t.ppf(0.975, 2) * np.sqrt(1 + 1 / 3) * 1.0
    assert (b["mean"], b["sd"], b["m"]) == (2.0, 1.0, 3)
    assert b["lo"] == pytest.approx(2 - half) and b["hi"] == pytest.approx(2 + half)
    assert E.band([5.0, 5.0, 5.0], floor=0.5)["hi"] == 5.5  # oracles that agree still leave the floor
    assert np.isnan(E.band([5.0])["lo"])  # one oracle has no spread
    logb = E.band([1.0, np.e, np.e ** 2], floor=0.0, level=0.95, log=True)
    assert logb["mean"] == pytest.approx(np.e) and logb["hi"] == pytest.approx(np.exp(1 + half))


def test_a_known_sampling_sd_replaces_the_t_quantile_but_never_narrows_a_wider_spread():
    known = E.band([50.0, 50.4, 49.6], floor=0.0, level=0.99, known_sd=0.5)  # oracles vary as sampling does
    assert known["half_width"] == pytest.approx(norm.ppf(0.995) * np.sqrt(1 + 1 / 3) * 0.5)
    assert known["half_width"] < E.band([50.0, 50.4, 49.6], floor=0.0, level=0.99)["half_width"] / 3
    wide = E.band([48.0, 50.0, 52.0], floor=0.0, level=0.99, known_sd=0.5)  # more than sampling explains
    assert wide["half_width"] == pytest.approx(norm.ppf(0.995) * np.sqrt(1 + 1 / 3) * 2.0)
    assert E.auc_sd(100, 100) == pytest.approx(np.sqrt(201 / 120000) * 100)


def test_accuracy_floor():
    assert E.accuracy_floor(np.ones((4, 50), bool)) == 0.0  # oracles that all agree on every sample
    split = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)  # q = 1/2 on both samples
    sd = np.sqrt(2 * 0.25 * 4 / 3) / 2
    assert E.accuracy_floor(split, 0.95) == pytest.approx(norm.ppf(0.975) * np.sqrt(1.25) * sd * 100)


def test_oracle_spread_places_the_method_among_oracle_pairs():
    oracles = [{"FA": fa, "TA": 95.0} for fa in (90.0, 91.0, 92.0, 93.0, 94.0)]
    out = E.oracle_spread({"FA": 100.0, "TA": 95.0}, oracles)
    fa = out["metrics"]["FA"]
    assert (out["k"], out["n_pairs"], fa["n_pairs"]) == (5, 10, 10)
    assert fa["gap"] == pytest.approx(8.0) and fa["oracle_mean"] == 92.0 and fa["oracle_sd"] == pytest.approx(2.5 ** .5)
    assert fa["pairs_mean"] == pytest.approx(2.0)  # 4 pairs 1 apart, 3 two apart, 2 three apart, 1 four apart
    assert fa["z"] == pytest.approx(8 / (2.5 ** .5 * 1.2 ** .5))
    assert fa["percentile"] == 100.0 and fa["position"] == "above" and fa["within"] is False
    ta = out["metrics"]["TA"]
    assert (ta["gap"], ta["z"], ta["within"]) == (0.0, 0.0, True)
    inside = E.oracle_spread({"FA": 92.0}, oracles)["metrics"]["FA"]
    assert inside["within"] and inside["percentile"] < 100
    assert np.isnan(E.oracle_spread({"FA": 1.0}, oracles[:1])["metrics"]["FA"]["oracle_sd"])
    with pytest.raises(ValueError, match="no oracle"):
        E.oracle_spread({"FA": 1.0}, [])


def test_oracle_spread_pg_and_kl_against_oracle_pairs():
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    b = np.array([[0.1, 0.9], [0.2, 0.8]])
    out = E.oracle_spread({"FA": 0.0}, [{"FA": 0.0}] * 3, b, [a, a, a])["metrics"]
    assert out["PG"]["method"] == 50.0 and out["PG"]["pairs_mean"] == 0.0 and out["PG"]["n_pairs"] == 3
    assert out["KL"]["method"] > 0 and out["KL"]["n_pairs"] == 6 and out["KL"]["within"] is False


def test_klom_is_zero_against_itself_large_against_a_shifted_model_and_bins_by_hand():
    rng = np.random.default_rng(0)
    oracle = rng.normal(5, 1, (20, 300))
    assert np.all(KL.klom(oracle, oracle) == 0)
    assert np.all(KL.klom(rng.normal(-5, 1, (20, 300)), oracle) > 8)  # disjoint: ln(1/eps) − entropy of P
    far = KL.klom(np.full((20, 300), -5.0), oracle)
    assert np.all(far == pytest.approx(np.log(1e5)))  # one bin against none of the oracles': the saturation
    # 2 bins over [0, 1]: P = (1/2, 1/2), Q = (3/4, 1/4); the value at the max falls in the last bin
    one = KL.klom(np.array([[0.0], [0.0], [1.0], [1.0]]), np.array([[0.0], [0.0], [0.0], [1.0]]), bins=2)
    assert one[0] == pytest.approx(0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25))
    assert KL.klom(np.array([[3.0]]), np.array([[3.0], [3.0]]))[0] == 0.0  # min = max: one bin of width 1


def test_klom_gauss_and_report():
    assert KL.klom_gauss(np.array([3.0]), np.array([[0.0], [2.0]]))[0] == pytest.approx(1.0)  # (3-1)^2/(2*2)
    with pytest.raises(ValueError, match="2 oracles"):
        KL.klom_gauss(np.array([3.0]), np.array([[0.0]]))
    rng = np.random.default_rng(1)
    rep = KL.klom_report({"forget": rng.normal(0, 1, (4, 500))}, {"forget": rng.normal(0, 1, (4, 500))})["forget"]
    assert rep["indicative"] and rep["n_models"] == [4, 4]
    assert rep["klom_gauss"]["null_p95"] == pytest.approx(3.841 / 4)
    assert rep["klom_gauss"]["p95"] < 2 * rep["klom_gauss"]["null_p95"]  # same law: near the null


def test_offline_lira_z_and_score():
    oracle = np.array([[0.0, 10.0], [2.0, 12.0], [0.0, 10.0], [2.0, 12.0]])  # per-sample var 4/3, mean 1 and 11
    sigma = np.sqrt(4 / 3)
    scale = sigma * np.sqrt(1 + 1 / 4)
    out = MB.lira_offline(np.array([1 + 2 * scale, 11 - scale]), oracle)
    np.testing.assert_allclose(out["z"], [2.0, -1.0])
    np.testing.assert_allclose(out["score"], norm.cdf([2.0, -1.0]))
    assert out["sigma"] == pytest.approx(sigma) and out["k"] == 4
    raw = MB.lira_offline(np.array([1 + 2 * sigma, 11.0]), oracle, predictive=False)
    np.testing.assert_allclose(raw["z"], [2.0, 0.0])
    with pytest.raises(ValueError, match="2 oracles"):
        MB.lira_offline(np.array([0.0]), np.array([[0.0]]))


def test_tpr_at_fixed_fpr_counts_only_what_clears_the_negatives():
    neg = np.arange(100.0)
    pos = np.array([98.5, 99.5, 50.0])
    at1 = MB.tpr_at_fpr(pos, neg, 0.01)  # threshold 98: one negative (99) above it
    assert (at1["threshold"], at1["fpr"]) == (98.0, 1.0) and at1["tpr"] == pytest.approx(200 / 3)
    assert at1["indicative"] is True  # 100 negatives < 10 / 1%
    at5 = MB.tpr_at_fpr(pos, neg, 0.05)
    assert (at5["threshold"], at5["fpr"]) == (94.0, 5.0)
    assert not MB.tpr_at_fpr(pos, np.arange(1000.0), 0.01)["indicative"]
    s = MB.attack_summary(np.array([3.0, 4.0]), np.array([1.0, 2.0]))
    assert (s["auc"], s["balanced_acc"]) == (100.0, 100.0) and s["tpr_at"]["1%"]["tpr"] == 100.0
    same = MB.attack_summary(np.ones(5), np.ones(5))
    assert (same["auc"], same["balanced_acc"]) == (50.0, 50.0)


def test_ulira_separates_unlearned_from_oracles_only_when_they_differ():
    rng = np.random.default_rng(0)
    oracles = rng.normal(0, 1, (5, 400))
    leaky = MB.ulira(rng.normal(3, 1, (5, 400)), oracles)
    assert leaky["summary"]["accuracy_at_0"] > 90 and leaky["per_sample"].shape == (400,)
    clean = MB.ulira(rng.normal(0, 1, (5, 400)), oracles)
    assert 40 < clean["summary"]["auc"] < 60
    with pytest.raises(ValueError, match="at least 3"):
        MB.ulira(oracles[:2], oracles[:2])


def test_membership_rows_rank_planted_outliers_first_and_flag_both_tails():
    rng = np.random.default_rng(0)
    oracle = rng.normal(0, 1, (4, 50))
    target = oracle.mean(0) + rng.normal(0, 0.1, 50)
    target[[7, 21]] += 20  # planted: far above what the oracles give (memorised)
    target[3] -= 20  # pushed far below (over-forgotten)
    ids, labels = np.arange(1000, 1050), np.zeros(50, int)
    rows = MB.membership_rows(ids, labels, target, MB.lira_offline(target, oracle))
    assert {rows[0]["train_id"], rows[1]["train_id"]} == {1007, 1021}
    assert rows[0]["flag"] == "trained-on" and rows[-1]["train_id"] == 1003 and rows[-1]["flag"] == "over-forgotten"
    assert [r["rank"] for r in rows] == list(range(1, 51))
    assert set(rows[0]) >= {"train_id", "label", "margin", "oracle_margin", "z", "lira_score", "flag"}


def test_matched_heldout_copies_the_class_mix():
    forget = np.array([0] * 10 + [1] * 30)
    test = np.array([0] * 50 + [1] * 50 + [2] * 50)
    rows = MB.matched_heldout(forget, test, seed=3)
    assert np.bincount(test[rows], minlength=3).tolist() == [17, 49, 0]  # 66 rows: 16.5 / 49.5, ties to class 0
    assert np.array_equal(rows, MB.matched_heldout(forget, test, seed=3))  # seeded
    assert np.bincount(test[MB.matched_heldout(forget, test, size=8)], minlength=3).tolist() == [2, 6, 0]
    assert np.array_equal(MB.matched_heldout(np.zeros(5, int), test), np.arange(50))  # a class: all its rows
    with pytest.raises(ValueError, match="no sample of class"):
        MB.matched_heldout(np.array([3]), test)


def test_svc_mia_calls_retain_like_samples_members():
    rng = np.random.default_rng(0)

    def probs(n, conf):
        y = rng.integers(0, 3, n)
        p = np.full((n, 3), 0.0)
        py = np.clip(conf + rng.normal(0, 0.02, n), 0.34, 0.999)
        p[:] = ((1 - py) / 2)[:, None]
        p[np.arange(n), y] = py
        return p, y

    retain, test = probs(300, 0.99), probs(200, 0.6)
    kept = MB.svc_mia(*probs(100, 0.99), *retain, *test)
    gone = MB.svc_mia(*probs(100, 0.6), *retain, *test)
    assert kept["headline"] < 10 and gone["headline"] > 90
    assert set(kept["efficacy"]) == {"correctness", "confidence", "entropy", "m_entropy", "prob"}
    assert kept["n_members"] == 200 and kept["loss_mia"] > 90 and gone["loss_mia"] == pytest.approx(50, abs=10)


def test_svc_mia_scores_repeated_targets_as_each_on_its_own():
    """Distinct target rows are predicted once and mapped back: the same efficacy as predicting every row."""
    from sklearn.svm import SVC

    rng = np.random.default_rng(1)
    n = 120
    y = rng.integers(0, 3, n)
    p = rng.dirichlet(np.ones(3), n)
    forget = np.repeat(p[:10], 6, axis=0), np.repeat(y[:10], 6)  # 60 rows, 10 distinct
    out = MB.svc_mia(*forget, p[10:70], y[10:70], p[70:], y[70:], features=("confidence", "prob"))
    for name in ("confidence", "prob"):
        shadow_in = MB._svc_features(p[10:70][MB.matched_heldout(y[70:], y[10:70], 0, size=50)],
                                     y[10:70][MB.matched_heldout(y[70:], y[10:70], 0, size=50)])[name]
        shadow_out, target = MB._svc_features(p[70:], y[70:])[name], MB._svc_features(*forget)[name]
        clf = SVC(C=3, gamma="auto", kernel="rbf").fit(np.vstack([shadow_in, shadow_out]),
                                                       np.r_[np.ones(len(shadow_in)), np.zeros(len(shadow_out))])
        assert out["efficacy"][name] == float((1 - clf.predict(target).mean()) * 100)


def test_anamnesis_index():
    assert R.anamnesis_index({"steps": 5, "cap": 500}, [{"steps": 10, "cap": 500}] * 2)["ain"] == 0.5
    assert R.anamnesis_index({"steps": 0, "cap": 500}, [{"steps": 1, "cap": 500}])["ain"] is None  # too few steps
    capped = R.anamnesis_index({"steps": None, "cap": 500}, [{"steps": 100, "cap": 500}])
    assert capped["ain"] == 5.0 and capped["censored"]


def _crit(name, value, oracles, original, **kw):
    return E.criterion(name, name, value, oracles, original, level=0.95, **kw)


def test_verdict_rule_on_hand_made_measures():
    oracles = [50.0, 51.0, 49.0, 50.0]
    unseen = E.verdict([_crit("AUC", 50.5, oracles, 80.0)], 4, "sample")
    assert unseen["verdict"] == "looks unseen" and unseen["sentence"].startswith("Looks unseen (with 4 oracles)")
    kept = E.verdict([_crit("AUC", 78.0, oracles, 80.0)], 4, "sample")
    assert kept["verdict"] == "not forgotten" and "nearer the original's 80.0%" in kept["sentence"]
    over = E.verdict([_crit("AUC", 50.0, oracles, 80.0), _crit("FA", 60.0, [97.0, 98.0, 97.0], 100.0)], 4, "sample")
    assert over["verdict"] == "over-forgotten" and "below" in over["sentence"]
    small = E.verdict([_crit("AUC", 50.5, oracles, 50.2)], 4, "sample")
    assert small["verdict"] == "inconclusive" and "too small to tell" in small["sentence"]
    few = E.verdict([], 1, "class")
    assert few["verdict"] == "inconclusive" and few["sentence"].startswith("Inconclusive with 1 oracle:")
    assert "not membership" in few["scenario_rule"]
    # a distance (KLoM) above its band counts on the side its direction gives, below it never counts
    kl = [1.0, 1.2, 0.9, 1.1]
    assert E.verdict([_crit("KLoM", 50.0, kl, 60.0, distance=True, direction="below")], 4, "sample")["verdict"] \
        == "over-forgotten"
    assert E.verdict([_crit("KLoM", 0.01, kl, 60.0, distance=True)], 4, "sample")["verdict"] == "looks unseen"


def test_what_the_model_keeps_is_shown_beside_the_verdict_and_never_decides_it():
    oracles, acc = [50.0, 51.0, 49.0, 50.0], [96.0, 96.5, 96.2]
    forgot = _crit("AUC", 50.5, oracles, 80.0)
    wrecked = E.verdict([forgot, _crit("TA", 69.0, acc, 92.0, counts=False)], 4, "class")
    assert wrecked["verdict"] == "looks unseen"  # the verdict is on forgetting alone
    assert "Beside the verdict: its TA (69.0%) lies below the oracles' band" in wrecked["sentence"]
    assert "the original's 92.0%: the model lost what it should keep" in wrecked["sentence"]
    # the untouched original and a model near it say nothing: a retrain's retained accuracy may exceed theirs
    for value in (92.0, 91.9):
        quiet = E.verdict([forgot, _crit("TA", value, acc, 92.0, counts=False)], 4, "class")
        assert quiet["verdict"] == "looks unseen" and "Beside" not in quiet["sentence"]
    # only the measures that count make a request too small to tell or a model not forgotten
    small = E.verdict([_crit("AUC", 50.5, oracles, 50.2), _crit("TA", 99.0, acc, 99.0, counts=False)], 4, "class")
    assert small["verdict"] == "inconclusive"
    assert E.verdict([forgot, _crit("TA", 99.9, acc, 92.0, counts=False)], 4, "class")["verdict"] == "looks unseen"


# ---- real models: relearn time and the controls ----------------------------------------------------------------

K = 5  # oracles per request: each control leaves one out and judges it against the other 4


def _oracles(dataset, request, recipe):
    return [bundle.train_or_load("parametric", dataset, train_config=replace(recipe, seed=recipe.seed + s),
                                 excluded=request).classifier for s in range(1, K + 1)]


@pytest.fixture(scope="module")
def class_case(digits, parametric_model):
    request = request_classes(digits, [0])
    return digits, request, parametric_model, _oracles(digits, request, FAST)


@pytest.fixture(scope="module")
def noisy_case(digits):
    """Digits is so easy that a plain original does not memorise a random 10% beyond its forget accuracy (its
    loss attack reads 50%): a positive control needs something to detect. Here 10% of the training labels are
    flipped (seeded), the atypical samples only memorisation gets right, and training runs 30 epochs."""
    rng = np.random.default_rng(12345)
    y = digits.y_train.copy()
    flip = rng.choice(len(y), len(y) // 10, replace=False)
    y[flip] = (y[flip] + rng.integers(1, 10, len(flip))) % 10
    noisy = Dataset("digits-noisy", digits.x_train, y, digits.x_test, digits.y_test, digits.class_names)
    recipe = replace(FAST, epochs=30)
    request = request_random(noisy, 0.1, 0)
    original = bundle.train_or_load("parametric", noisy, train_config=recipe).classifier
    return noisy, request, original, _oracles(noisy, request, recipe), y != digits.y_train


@pytest.mark.slow
@pytest.mark.parametrize("case", ["class_case", "noisy_case"])
def test_controls_left_out_oracle_looks_unseen_and_original_not_forgotten(case, request):
    """Negative control: a model retrained without the request, judged against the other oracles, is never a false
    alarm, and most often looks unseen; with four oracles the band can be wide enough to hold the untouched original
    too, and the judge then says the request is too small to tell (seen on one CPU for one of the five). Positive
    control: the untouched original is not forgotten."""
    dataset, forget_request, original, oracles = request.getfixturevalue(case)[:4]
    unseen = 0
    for j in range(K):  # every oracle in turn, judged against the other four: never a false alarm
        result = E.judge(oracles[j], original, oracles[:j] + oracles[j + 1:], dataset, forget_request)
        assert result["k"] == K - 1
        if result["verdict"] == "inconclusive":  # allowed only as the judge's own "too small to tell"
            assert "the untouched original itself lies inside the oracles' band" in result["sentence"], j
        else:
            assert result["verdict"] == "looks unseen", (j, result["sentence"])
            unseen += 1
    assert unseen > K // 2, f"only {unseen} of {K} retrained models were judged unseen"  # most of them
    result = E.judge(original, original, oracles, dataset, forget_request)
    assert result["verdict"] == "not forgotten", result["sentence"]
    assert result["scenario"] == ("class" if forget_request.classes else "sample")
    names = {c["name"] for c in result["criteria"] if c["counts"]}
    assert names == ({"FA", "forgotten_TA", "mean_z", "klom_p95"} if forget_request.classes
                     else {"FA", "membership_auc", "mean_z", "klom_p95"})
    (kept,) = [c for c in result["criteria"] if not c["counts"]]  # shown beside the verdict
    assert kept["name"] == ("retained_TA" if forget_request.classes else "TA") and "Beside" not in result["sentence"]
    assert set(result["klom"]) == {"forget", "retain", "val"} and result["spread"]["k"] == K
    assert len(result["membership"]["rows"]) == len(forget_request.ids)


@pytest.mark.slow
def test_per_sample_score_ranks_planted_mislabelled_samples_first(noisy_case):
    dataset, forget_request, original, oracles, flipped = noisy_case
    result = E.judge(original, original, oracles, dataset, forget_request)
    rows = result["membership"]["rows"]
    planted = np.array([flipped[r["train_id"]] for r in rows])  # in rank order
    assert 5 <= planted.sum() < len(rows) // 2
    ranks = np.arange(1, len(rows) + 1)
    assert ranks[planted].mean() < 0.25 * ranks[~planted].mean()  # memorised outliers rank near the top
    assert result["membership"]["method"]["tpr_at"]["5%"]["tpr"] > 5  # above the 5% a chance attack gets


@pytest.mark.slow
def test_judge_bad_input_and_svc_on_real_models(class_case):
    dataset, forget_request, original, oracles = class_case
    none = E.judge(original, original, [], dataset, forget_request)
    assert none["verdict"] == "inconclusive" and "0 oracles" in none["sentence"] and none["spread"] is None
    two = E.judge(oracles[0], original, oracles[1:3], dataset, forget_request)  # 2 oracles: no per-sample measures
    assert two["membership"] is None and {c["name"] for c in two["criteria"]} == {"FA", "forgotten_TA", "retained_TA"}
    forget = forget_request.mask(dataset.num_train)
    tr, te = original.split_proba(dataset, "train"), original.split_proba(dataset, "test")
    svc = MB.svc_mia(tr[forget], dataset.y_train[forget], tr[~forget], dataset.y_train[~forget], te, dataset.y_test)
    assert 0 <= svc["headline"] <= 100 and svc["n_nonmembers"] == len(dataset.y_test)


@pytest.mark.slow
def test_relearn_time_oracle_needs_steps_original_none(class_case):
    dataset, forget_request, original, oracles = class_case
    ids = np.array(forget_request.ids)
    x, y = dataset.x_train[ids], dataset.y_train[ids]
    target = R.relearn_target(original.split_proba(dataset, "train")[ids], y)
    assert target == pytest.approx(95.0)
    assert R.relearn_time(original, x, y, target)["steps"] == 0
    before = {k: v.clone() for k, v in oracles[0].net.state_dict().items()}
    run = R.relearn_time(oracles[0], x, y, target, lr=0.05, max_steps=200)
    assert run["reached"] and run["steps"] > 1 and run["curve"][0] == [0, 0.0]
    assert all(np.array_equal(v, oracles[0].net.state_dict()[k]) for k, v in before.items())  # a copy was tuned
    assert R.relearn_time(oracles[0], x, y, target, lr=1e-6, max_steps=3)["steps"] is None
    with pytest.raises(TypeError, match="parametric"):
        R.relearn_time(object(), x, y, target)


def test_knn_correct_votes_by_majority_and_leaves_the_query_out():
    ref = np.array([[1, 0], [0.9, 0.1], [0.8, 0.2], [0, 1], [0.1, 0.9], [0.7, 0.72]], np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2])  # class 2 has one sample: only itself can vote for it
    rows = np.arange(len(ref))
    assert RS.knn_correct(ref, labels, ref, labels, k=1).all()  # each row finds itself
    out = RS.knn_correct(ref, labels, ref, labels, k=1, query_rows=rows)
    assert out.tolist() == [True, True, True, True, True, False]
    assert RS.knn_correct(ref[:3], labels[:3], ref, labels, k=3, query_rows=rows[:3]).all()


@pytest.mark.slow
def test_residue_controls_left_out_oracle_inside_and_original_reads_its_training(class_case, digits):
    dataset, forget_request, original, oracles = class_case
    for j in range(K):
        result = RS.residue(oracles[j], original, oracles[:j] + oracles[j + 1:], dataset, forget_request)
        assert [m["position"] for m in result["measures"]] == ["inside"], (j, result["measures"])
        assert result["oracle_k"] == K - 1 and result["cka"][0]["depth"] == 1
    (knn,) = RS.residue(original, original, oracles, dataset, forget_request)["measures"]
    assert knn["model"] == knn["original"] > knn["oracle_mean"]  # the original's features still separate class 0
    with pytest.raises(ValueError, match="at least 2"):
        RS.residue(original, original, oracles[:1], dataset, forget_request)


@pytest.mark.slow
def test_a_memory_deletion_leaves_the_weights_residue_of_the_original(digits, spm_model):
    request = request_random(digits, 0.1, 0)
    oracles = [bundle.train_or_load("spm", digits, train_config=replace(FAST, seed=FAST.seed + s),
                                    excluded=request).classifier for s in (1, 2)]
    deleted = spm_model.forget(request.ids)
    result = RS.residue(deleted, spm_model, oracles, digits, request)
    assert {m["measure"] for m in result["measures"]} == {"knn_acc", "feature_mia"}
    for m in result["measures"]:
        assert m["model"] == m["original"], m  # no weight moved: the same numbers as the original's
    assert [r["to_oracles"] for r in result["cka"]] == [r["original_to_oracles"] for r in result["cka"]]
    knn = result["measures"][0]
    assert knn["model"] > knn["oracle_mean"]  # D_f trained the encoder, and its features still fit D_f


# ---- the product: K oracles per comparison, scored again as each finishes ---------------------------------------

def test_oracle_count_and_offsets(monkeypatch):
    from core import workflow
    from core.errors import InputError

    monkeypatch.delenv("UE_ORACLES", raising=False)
    assert workflow.oracle_count() == workflow.DEFAULT_ORACLES
    assert workflow.oracle_offsets(4) == [1, 2, 3, 4]  # never offset 0: the original's own seed
    monkeypatch.setenv("UE_ORACLES", "5")
    assert workflow.oracle_offsets() == [1, 2, 3, 4, 5]
    for bad in ("0", "three", "2.5", "-1"):
        monkeypatch.setenv("UE_ORACLES", bad)
        with pytest.raises(InputError, match="UE_ORACLES"):
            workflow.oracle_count()


def test_cli_refuses_a_bad_oracle_count_before_anything_starts(capsys):
    import json

    from core import cli

    code = cli.main(["forget", "--dataset", "digits", "--classes", "0", "--model", "parametric", "--method", "ft",
                     "--oracles", "0"])
    assert code == 2 and "oracle count" in json.loads(capsys.readouterr().out)["error"]


@pytest.fixture(scope="module")
def class_run(digits, parametric_model):
    """An FT run on class 5 (parametric, digits' own recipe) and the first 3 of its oracles, trained here. Class 5:
    no sweep in the tests runs it, so the run this module records is never one a sweep expects to make."""
    from core import workflow

    request = request_classes(digits, [5])
    original = workflow.original("parametric", digits)
    run = workflow.execute("ft", original, digits, request)
    return run, original, workflow.oracles("parametric", digits, request, 3)


@pytest.mark.slow
def test_a_comparison_says_k_and_is_redone_when_another_oracle_finishes(class_run, digits):
    from core import workflow

    run, original, oracles = class_run
    assert [workflow.train_seed(o) for o in oracles] == [1, 2, 3] and workflow.train_seed(original) == 0
    assert workflow.rescore(run, original, [], digits) is False and run.comparison is None  # none finished yet
    assert workflow.rescore(run, original, oracles[:2], digits) is True
    two = run.comparison
    assert two.k == 2 and two.oracle_seeds == [1, 2] and "(with 2 oracles)" in two.sentence
    assert two.membership is None  # per-sample evidence waits for a third oracle
    assert workflow.rescore(run, original, oracles[:2], digits) is False and run.comparison is two  # nothing new
    assert workflow.rescore(run, original, oracles, digits) is True  # the third oracle finished
    three = run.comparison
    assert three.k == 3 and three.oracle_seeds == [1, 2, 3] and "(with 3 oracles)" in three.sentence
    assert len(three.membership["rows"]) == len(run.request.ids) and set(three.klom) == {"forget", "retain", "val"}
    assert {c["name"] for c in three.criteria} > {c["name"] for c in two.criteria}
    assert three.spread["k"] == 3 and three.spread["metrics"]["FA"]["n_pairs"] == 3
    assert set(three.attacks) == {"method", "original", "oracle 1", "oracle 2", "oracle 3"}
    # measured: FT at its defaults leaves class 5's forget accuracy at 100% on digits; the verdict must say so
    assert three.verdict == "not forgotten" and three.metrics["FA"] > 90


@pytest.mark.slow
def test_population_attacks_are_fitted_when_first_read_and_once(class_run, digits, monkeypatch):
    """The SVC fits (most of a comparison's cost) wait until the attacks are read, below the verdict and the
    metrics table on the Predictions page; every copy of the comparison shares them, a pickled one too."""
    import pickle

    from core import comparison, workflow

    run, original, oracles = class_run
    fits, real = [], comparison.svc_mia
    monkeypatch.setattr(comparison, "svc_mia", lambda *a, **kw: fits.append(1) or real(*a, **kw))
    fresh = workflow.execute("ft", original, digits, run.request)  # a model with no attack memoised on it
    scored = workflow.score(fresh, original, oracles, digits).comparison
    assert fits == [] and scored.verdict == "not forgotten" and scored.k == 3
    assert set(scored.attacks) == {"method", "original", "oracle 1", "oracle 2", "oracle 3"} and len(fits) >= 1
    fitted = len(fits)
    again = workflow.compare(fresh.model, original, oracles, digits, run.request, seconds=1.0)
    assert again is not scored and again.attacks == scored.attacks and len(fits) == fitted
    assert pickle.loads(pickle.dumps(scored)).attacks == scored.attacks and len(fits) == fitted
    assert scored.attacks_error is None


@pytest.mark.slow
def test_population_attacks_that_cannot_be_computed_say_why_instead_of_raising(class_run, digits, monkeypatch):
    from core import comparison, workflow

    run, original, oracles = class_run

    def refused(*args, **kwargs):
        raise ValueError("the test set has no sample of class [5]: no held-out set matches D_f's classes")

    monkeypatch.setattr(comparison, "svc_mia", refused)
    fresh = workflow.execute("ft", original, digits, run.request)
    scored = workflow.score(fresh, original, oracles, digits).comparison
    assert scored.verdict == "not forgotten"  # the verdict does not rest on them
    assert scored.attacks == {} and "no held-out set matches" in scored.attacks_error


@pytest.mark.slow
def test_a_comparison_refuses_what_it_cannot_judge(class_run, digits):
    from core import workflow

    run, original, oracles = class_run
    with pytest.raises(ValueError, match="no oracle has finished"):
        workflow.compare(run.model, original, [], digits, run.request)
    same_seed = workflow.oracle("parametric", digits, run.request, seed_offset=0)
    with pytest.raises(ValueError, match="original's seed"):
        workflow.compare(run.model, original, [same_seed, *oracles], digits, run.request)
    # one oracle: the metrics against it, and no verdict without a spread
    one = workflow.score(workflow.execute("ft", original, digits, run.request), original, oracles[:1], digits)
    assert one.comparison.k == 1 and one.comparison.verdict == "inconclusive"
    assert "AvgGap" in one.comparison.metrics and "with 1 oracle" in one.comparison.sentence


@pytest.mark.slow
def test_a_recorded_run_keeps_its_unlearned_weights_k_seeds_and_verdict(class_run, digits):
    from core import runs_db, store, workflow

    run, original, oracles = class_run
    workflow.score(run, original, oracles, digits)
    key = workflow.record(run, digits)
    row = runs_db.get(key)
    assert row.oracle_k == 3 and row.oracle_seeds == [1, 2, 3] and row.verdict == run.comparison.verdict
    assert {"FA", "forgotten_TA", "mean_z", "klom_p95", "svc_efficacy", "AvgGap"} <= set(row.metrics)
    stored = store.find_model(workflow.unlearned_key(run))
    assert store.file_sha256(stored.path / "weights.safetensors") == run.weights_sha256 == row.weights_sha256
    reloaded = bundle.from_weights("parametric", digits, (stored.path / "weights.safetensors").read_bytes())
    np.testing.assert_allclose(reloaded.predict_proba(digits.x_test[:50]), run.model.predict_proba(digits.x_test[:50]),
                               atol=1e-6)


def test_a_percentage_band_is_shown_within_0_and_100_and_judges_alike():
    from core.eval.evidence import band, criterion

    high = criterion("TA", "test accuracy", 100.0, [98.0, 100.0, 100.0], 99.0)
    wide = band([98.0, 100.0, 100.0])
    assert wide["hi"] > 100 and high["band"]["hi"] == 100.0 and high["band"]["lo"] == pytest.approx(wide["lo"])
    assert high["position"] == "inside"
    low = criterion("FA", "forget accuracy", 0.0, [0.0, 0.0, 0.1], 90.0)
    assert low["band"]["lo"] == 0.0 and low["position"] == "inside" and low["original_position"] == "above"
    score = criterion("klom_p95", "KLoM", 0.5, [0.1, 0.2, 0.3], 3.0, unit="", distance=True)
    assert score["band"]["lo"] > 0  # not a percentage: left as computed
