"""Uncertainty arithmetic, checked against scipy and statsmodels (not against a copy of our own
formulas), the two-level bootstrap's behaviour on hand-made seeds x items outcomes (seeds that
disagree widen an interval; pairing on seeds removes what both sides share; its standard error
matches the spread across simulated studies), and forgetting's per-item record and its pooling
over seeds."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, t as student_t
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint

from harness.analysis import stats
from harness.pipeline import forgetting
from harness.record.schema import Forgetting
from harness.report import retention, tables


def test_wilson_interval_is_statsmodels_and_the_textbook_formula():
    low, high = stats.wilson(7, 10)
    assert (low / 100, high / 100) == pytest.approx(proportion_confint(7, 10, method="wilson"), abs=1e-6)
    z, p, n = 1.959964, 0.7, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((100 * (centre - half), 100 * (centre + half)), abs=1e-3)
    assert stats.wilson(0, 4)[0] == 0 and stats.wilson(0, 4)[1] > 40  # 0 of 4 is not "0 for sure"
    assert stats.wilson(4, 4)[1] == 100 and stats.wilson(4, 4)[0] < 60


def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs():
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    out = stats.mcnemar_exact(a, b)
    assert (out["only_a"], out["only_b"]) == (10, 2)
    assert out["p"] == pytest.approx(binomtest(2, 12, 0.5).pvalue) == pytest.approx(2 * 79 / 4096)
    assert stats.mcnemar_exact([True, False], [True, False])["p"] == 1.0  # no discordant pair: no evidence
    with pytest.raises(ValueError):
        stats.mcnemar_exact([True], [True, False])


def test_holm_adjustment_is_statsmodels():
    pvalues = [0.01, 0.04, 0.03, 0.2]
    assert stats.holm(pvalues) == pytest.approx(list(multipletests(pvalues, method="holm")[1]))
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([]) == []


def test_t_quantile_is_scipys_at_any_degrees_of_freedom():
    # the old table fell back to 1.96 above 30 degrees of freedom and rounded fractional ones down
    for df in (1, 2, 12, 45, 2.5, 300):
        assert stats.t95(df) == pytest.approx(student_t.ppf(0.975, df), rel=1e-9)
    out = stats.mean_sd_ci([40.0, 42.0, 44.0])
    assert out["mean"] == 42.0 and out["sd"] == pytest.approx(2.0)
    assert out["high"] - out["mean"] == pytest.approx(student_t.ppf(0.975, 2) * 2.0 / math.sqrt(3))
    assert stats.mean_sd_ci([40.0])["low"] is None


def test_mdd_is_the_effect_a_z_test_finds_with_80_percent_power():
    # one-sample design (statsmodels' NormalIndPower with ratio=0): sd 1, n items; SE = 1/sqrt(n)
    for n, alpha in ((40, 0.05), (320, 0.05 / 8)):
        effect = NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=0.8, ratio=0)
        assert stats.mdd(1 / math.sqrt(n), alpha, 0.8) == pytest.approx(effect, rel=1e-3)
    assert stats.mdd(1.0) == pytest.approx(2.8016, abs=1e-4)


def seeds_items(*rows) -> stats.Scores:
    """One set, a row of 0/1 outcomes (in points) per seed."""
    return stats.Scores.of(range(1, len(rows) + 1), [100.0 * np.array(rows)])


def test_seeds_that_disagree_widen_the_interval():
    # both 70% on average over 2 seeds x 40 items; the seeds agree item by item in one case and score
    # 50% and 90% in the other. Averaging each item over the seeds first (the old scheme) made the
    # disagreeing case look *more* certain (its item means sit at 0.5); the seeds' spread must count.
    agree = seeds_items([1] * 28 + [0] * 12, [1] * 28 + [0] * 12)
    disagree = seeds_items([1] * 20 + [0] * 20, [1] * 36 + [0] * 4)
    wide, narrow = stats.bootstrap([disagree]), stats.bootstrap([agree])
    assert wide["mean"] == narrow["mean"] == 70.0 and wide["seed_variance"]
    items_only = stats.bootstrap([stats.Scores.of([0], [disagree.strata[0].mean(axis=0)])])
    assert wide["high"] - wide["low"] > narrow["high"] - narrow["low"] > items_only["high"] - items_only["low"]
    assert wide["high"] - wide["low"] > 40  # seeds 40 points apart: nothing like the items' +-7


def test_one_seed_measures_no_seed_variance():
    out = stats.bootstrap([seeds_items([1] * 30 + [0] * 10)])
    assert out["seeds"] == [1] and not out["seed_variance"]


def test_standard_error_matches_the_spread_over_simulated_studies():
    # 3 seeds (a seed effect of sd 8 points) x 4 sets of 40 items, 0/1 outcomes
    rng = np.random.default_rng(7)
    estimates, errors = [], []
    for rep in range(150):
        shift = rng.normal(0, 0.08, size=3)
        strata = [(rng.random((3, 40)) < np.clip(rng.beta(2, 2, 40)[None, :] + shift[:, None], 0, 1)) * 100.0
                  for _ in range(4)]
        out = stats.bootstrap([stats.Scores.of((1, 2, 3), strata)], resamples=300, seed=rep)
        estimates.append(out["mean"])
        errors.append(out["se"])
    assert np.mean(errors) == pytest.approx(np.std(estimates), rel=0.2)


def test_differences_pair_on_seeds_when_both_sides_ran_them():
    # seed 2 helps both methods by 20 points (the same data order): paired by seed that cancels
    base = [1] * 20 + [0] * 20
    a = stats.Scores.of((1, 2), [100.0 * np.array([base, [1] * 28 + [0] * 12])])
    b = stats.Scores.of((2, 1), [100.0 * np.array([[1] * 24 + [0] * 16, [1] * 16 + [0] * 24])])  # order differs
    paired = stats.bootstrap([a, b], signs=(1.0, -1.0))
    assert paired["paired_seeds"] and paired["mean"] == pytest.approx(10.0)
    unpaired = stats.bootstrap([a, stats.Scores(("x", "y"), b.strata)], signs=(1.0, -1.0))
    assert not unpaired["paired_seeds"] and unpaired["mean"] == pytest.approx(10.0)
    assert unpaired["high"] - unpaired["low"] > 2 * (paired["high"] - paired["low"])


def test_a_p_value_below_the_resolution_is_a_bound_not_zero():
    better = seeds_items([1] * 40 + [0] * 60)
    worse = stats.Scores.of((1,), [np.zeros((1, 100))])
    out = stats.bootstrap([better, worse], signs=(1.0, -1.0), resamples=2000)
    assert out["p"] == 1 / 2000 and out["p_bound"] and stats.p_text(out["p"], True) == "< 0.0005"
    same = stats.bootstrap([better, better], signs=(1.0, -1.0))
    assert same["p"] == 1.0 and not same["p_bound"]
    swapped = stats.bootstrap([seeds_items([1, 0] * 20), seeds_items([0, 1] * 20)], signs=(1.0, -1.0))
    assert swapped["p"] > 0.5  # as many items better as worse


def test_a_constant_cell_gets_wilsons_interval_not_plus_minus_zero():
    for rows, correct in (([[0] * 40, [0] * 40], 0), ([[1] * 40, [1] * 40], 40)):
        out = stats.cell_interval(stats.Scores.of((1, 2), [rows]))
        low, high = proportion_confint(correct, 40, method="wilson")
        assert out["method"] == "wilson" and (out["low"], out["high"]) == pytest.approx((100 * low, 100 * high), abs=1e-3)
        assert out["high"] - out["low"] > 8  # 0/40 is not "0.0 +-0.0"
    near = stats.cell_interval(seeds_items([1] + [0] * 39, [0] * 40))
    assert near["method"] == "bootstrap" and near["low"] >= 0.0  # cut to what an accuracy can be


def test_forgetting_keeps_the_paired_difference_of_every_item():
    before = {"hellaswag": {"metric": "acc_norm", "items": [1, 1, 0, 1], "accuracy": 75.0},
              "winogrande": {"metric": "acc", "items": [1, 0], "accuracy": 50.0}}
    after = {"hellaswag": {"metric": "acc_norm", "items": [1, 0, 1, 0], "accuracy": 50.0},
             "winogrande": {"metric": "acc", "items": [1, 0], "accuracy": 50.0}}
    out = forgetting.summarise(before, after)
    assert out["sets"]["hellaswag"]["item_diffs"] == [0, 1, -1, 1]
    assert out["sets"]["hellaswag"]["forgetting"] == 25.0  # (0 + 100 - 100 + 100) / 4
    assert out["sets"]["winogrande"]["forgetting"] == 0.0 and out["sets"]["winogrande"]["ci95"] == [0.0, 0.0]
    assert out["forgetting_avg"] == 12.5  # the mean over the sets
    low, high = out["forgetting_avg_ci95"]
    assert low < 12.5 < high


def summary(diffs: list[int]) -> dict:
    before = {"arc_challenge": {"metric": "acc_norm", "items": [1] * len(diffs), "accuracy": 100.0}}
    after = {"arc_challenge": {"metric": "acc_norm", "items": [1 - d for d in diffs], "accuracy": 0.0}}
    return forgetting.summarise(before, after)


def pooled_over_seeds(summaries: list, seeds: list):
    """retention.across_seeds on the records' typed forgetting sections (None: a seed without one)."""
    return retention.across_seeds([Forgetting.model_validate(s) if s else None for s in summaries], seeds)


def test_forgetting_pools_seeds_item_by_item_not_their_bounds():
    # one seed forgets 20 points, the other 0 (same 40 items): averaging the seeds' interval bounds
    # (the old aggregation) gives an interval as narrow as one seed's; pooling must show the spread
    one, two = summary([1] * 8 + [0] * 32), summary([0] * 40)
    pooled = pooled_over_seeds([one, two], [1, 2])
    averaged_bounds = [(one["forgetting_avg_ci95"][i] + two["forgetting_avg_ci95"][i]) / 2 for i in (0, 1)]
    assert pooled["mean"] == 10.0 and not pooled["approximate"] and pooled["seed_variance"]
    assert pooled["high"] - pooled["low"] > 1.5 * (averaged_bounds[1] - averaged_bounds[0])
    for s in (one, two):  # a record written before per-item differences were kept: still readable
        del s["sets"]["arc_challenge"]["item_diffs"]
    old = pooled_over_seeds([one, two], [1, 2])
    assert old["approximate"] and old["low"] < 10.0 < old["high"]
    assert pooled_over_seeds([one, None], [1, 2]) is None


def test_cross_entropy_forgetting_pools_documents_in_nats_not_points():
    """A commonsense run's retention measure is the cross-entropy of held-out text (after - before,
    nats per token): pooled over seeds document by document, in nats, never scaled to points."""
    def loss_summary(rise: float) -> dict:
        before = {"gsm8k_train_solutions": {"metric": "loss", "items": [1.0, 1.2, 0.8, 1.1]}}
        after = {"gsm8k_train_solutions": {"metric": "loss", "items": [x + rise for x in (1.0, 1.2, 0.8, 1.1)]}}
        return forgetting.summarise_loss(before, after)
    pooled = pooled_over_seeds([loss_summary(0.02), loss_summary(0.04)], [1, 2])
    assert pooled["unit"] == "nats" and pooled["mean"] == pytest.approx(0.03) and not pooled["approximate"]
    assert tables.fmt_forgetting(pooled).endswith("nats") and "+0.030" in tables.fmt_forgetting(pooled)
    cloze = pooled_over_seeds([summary([1] * 4 + [0] * 36)] * 2, [1, 2])
    assert cloze["unit"] == "pts" and pooled_over_seeds([loss_summary(0.02), summary([0] * 4)], [1, 2]) is None
