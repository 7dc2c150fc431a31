"""Uncertainty arithmetic, checked against values computed by hand or by textbook formulas, and
forgetting's paired summary on hand-made item outcomes."""
from __future__ import annotations

import math

import pytest

from harness import forgetting, stats


def test_wilson_interval_matches_the_formula_and_stays_inside_0_100():
    low, high = stats.wilson(7, 10)
    z = 1.959964
    p, n = 0.7, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((100 * (centre - half), 100 * (centre + half)), abs=1e-3)
    assert stats.wilson(0, 4)[0] == 0 and stats.wilson(0, 4)[1] > 40  # 0 of 4 is not "0 for sure"
    assert stats.wilson(4, 4)[1] == 100 and stats.wilson(4, 4)[0] < 60


def test_mcnemar_exact_on_discordant_pairs():
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    out = stats.mcnemar_exact(a, b)
    assert (out["only_a"], out["only_b"]) == (10, 2)
    # two-sided binomial(12, 0.5): 2 * P(X <= 2) = 2 * (1 + 12 + 66) / 4096
    assert out["p"] == pytest.approx(2 * 79 / 4096)
    assert stats.mcnemar_exact([True, False], [True, False])["p"] == 1.0  # no discordant pair: no evidence
    with pytest.raises(ValueError):
        stats.mcnemar_exact([True], [True, False])


def test_holm_adjustment():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_paired_bootstrap_is_seeded_and_brackets_the_mean():
    diffs = [[100, 0, 0, 100, -100, 0, 100, 0], [0, 0, 100, 0]]
    one, two = stats.paired_bootstrap(diffs, seed=3), stats.paired_bootstrap(diffs, seed=3)
    assert one == two and one["n"] == 12
    assert one["mean"] == pytest.approx((25.0 + 25.0) / 2)
    assert one["low"] < one["mean"] < one["high"]
    assert stats.paired_bootstrap([[0, 0, 0]]) == {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 3}


def test_bootstrap_p_separates_a_real_difference_from_none():
    assert stats.bootstrap_p([[0.0] * 50]) == 1.0
    assert stats.bootstrap_p([[100.0] * 40 + [0.0] * 60]) < 0.001  # 40 of 100 items better, none worse
    assert stats.bootstrap_p([[100.0, -100.0] * 20]) > 0.5  # as many better as worse


def test_mean_sd_ci_over_seeds():
    out = stats.mean_sd_ci([40.0, 42.0, 44.0])
    assert out["mean"] == 42.0 and out["sd"] == pytest.approx(2.0)
    assert out["high"] - out["mean"] == pytest.approx(4.303 * 2.0 / math.sqrt(3))
    assert stats.mean_sd_ci([40.0])["low"] is None


def test_forgetting_is_the_paired_difference_item_by_item():
    before = {"hellaswag": {"metric": "acc_norm", "items": [1, 1, 0, 1], "accuracy": 75.0},
              "winogrande": {"metric": "acc", "items": [1, 0], "accuracy": 50.0}}
    after = {"hellaswag": {"metric": "acc_norm", "items": [1, 0, 1, 0], "accuracy": 50.0},
             "winogrande": {"metric": "acc", "items": [1, 0], "accuracy": 50.0}}
    out = forgetting.summarise(before, after)
    assert out["sets"]["hellaswag"]["forgetting"] == 25.0  # (0 + 100 - 100 + 100) / 4
    assert out["sets"]["winogrande"]["forgetting"] == 0.0 and out["sets"]["winogrande"]["ci95"] == [0.0, 0.0]
    assert out["forgetting_avg"] == 12.5  # the mean over the sets
    low, high = out["forgetting_avg_ci95"]
    assert low < 12.5 < high
