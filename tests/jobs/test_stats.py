"""Intervals, paired tests and tie sentences of jobs/stats.py (the claims of docs/statistics.md).

Run as a script (`python tests/jobs/test_stats.py`) it prints the calibration table of docs/statistics.md.
"""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from jobs import stats


def simulate_benchmarks(count: int, repeats: int, n: int, accuracy: float, image_sd: float, run_sd: float,
                        seed: int) -> np.ndarray:
    """`count` simulated benchmarks as (count, repeats, n) correctness with a known expected accuracy.

    Image i is right in run j when z_i + w_j + e_ji > threshold: z_i ~ N(0, image_sd^2) is the image's ease,
    shared by every run; w_j ~ N(0, run_sd^2) is the run's luck, shared by every image; e_ji ~ N(0, 1) is the
    rest. The threshold makes P(correct) exactly `accuracy`, the expected accuracy over new images and new runs.
    """
    generator = np.random.default_rng(seed)
    threshold = -np.sqrt(1 + image_sd ** 2 + run_sd ** 2) * scipy_stats.norm.ppf(accuracy)
    ease = generator.normal(0, image_sd, (count, 1, n))
    luck = generator.normal(0, run_sd, (count, repeats, 1))
    rest = generator.normal(0, 1, (count, repeats, n))
    return ease + luck + rest > threshold


def simulate_pairs(count: int, repeats: int, n: int, accuracy: float, run_sd: float, seed: int):
    """Two backbones with the same expected accuracy on shared test images, as two (count, repeats, n) arrays.

    As simulate_benchmarks, with the image's ease split into a part both backbones share (sd 1.5) and a part
    of each backbone's own (sd 0.7), so the two agree on most images, as backbones of one benchmark do.
    """
    generator = np.random.default_rng(seed)
    threshold = -np.sqrt(1 + 1.5 ** 2 + 0.7 ** 2 + run_sd ** 2) * scipy_stats.norm.ppf(accuracy)
    shared = generator.normal(0, 1.5, (count, 1, n))

    def backbone():
        own = generator.normal(0, 0.7, (count, 1, n))
        luck = generator.normal(0, run_sd, (count, repeats, 1))
        return shared + own + luck + generator.normal(0, 1, (count, repeats, n)) > threshold

    return backbone(), backbone()


def coverage(correct: np.ndarray, truth: float) -> float:
    """Share of the benchmarks' intervals, computed by the code accuracy_interval runs, that hold the truth."""
    _, low, high = stats._interval_arrays(correct, stats.CONFIDENCE, stats.RESAMPLES, seed=0)
    return float(np.mean((low <= truth) & (truth <= high)))


def false_alarm_rate(repeats: int, run_sd: float, count: int, seed: int) -> float:
    """Share of equally good simulated pairs that the paired bootstrap calls different at ALPHA."""
    a, b = simulate_pairs(count, repeats, 200, 0.8, run_sd, seed)
    _, p_values = stats._paired_bootstrap_arrays(a, b, stats.RESAMPLES, seed=0)
    return float(np.mean(p_values < stats.ALPHA))


def first_correct(n: int, count: int) -> np.ndarray:
    """n images of which the first `count` are right."""
    correct = np.zeros(n, dtype=bool)
    correct[:count] = True
    return correct


# McNemar


def test_mcnemar_matches_a_hand_computed_table():
    # 40 both right, 50 both wrong, 1 only a right, 9 only b right: p = 2 * (C(10,0) + C(10,1)) / 2^10.
    a = np.array([True] * 40 + [False] * 50 + [True] * 1 + [False] * 9)
    b = np.array([True] * 40 + [False] * 50 + [False] * 1 + [True] * 9)
    assert stats.mcnemar_exact(a, b) == pytest.approx(0.021484375, abs=1e-12)
    assert stats.mcnemar_exact(b, a) == pytest.approx(0.021484375, abs=1e-12)


def test_mcnemar_without_discordant_pairs_is_one():
    a = first_correct(30, 20)
    assert stats.mcnemar_exact(a, a.copy()) == 1.0


def test_mcnemar_refuses_arrays_of_different_lengths():
    with pytest.raises(ValueError):
        stats.mcnemar_exact(np.ones(5, dtype=bool), np.ones(6, dtype=bool))


# accuracy_interval


def test_single_repeat_interval_is_close_to_clopper_pearson():
    # Tolerance 0.005: with one repeat the interval is the exact binomial one at n (z/t)^2 images, n = 200
    # here, with n estimated by the bootstrap variance, whose Monte Carlo error with 2,000 resamples is about
    # 3 %; both move each bound by about 0.001, so 0.005 is several of those errors and still a tenth of the
    # interval's half-width.
    correct = np.random.default_rng(5).permutation(first_correct(200, 160))
    exact = scipy_stats.binomtest(160, 200).proportion_ci(confidence_level=0.95, method="exact")
    interval = stats.accuracy_interval(correct)
    assert interval.mean == 0.8
    assert interval.low == pytest.approx(exact.low, abs=0.005)
    assert interval.high == pytest.approx(exact.high, abs=0.005)
    assert interval.confidence == stats.CONFIDENCE
    assert interval.method == "bootstrap over test images"


def test_a_perfect_score_still_gets_the_exact_lower_bound():
    interval = stats.accuracy_interval(np.ones(50, dtype=bool))
    assert interval.mean == 1.0
    assert interval.high == 1.0
    assert interval.low == pytest.approx(0.025 ** (1 / 50), abs=1e-9)  # exact bound for 50 of 50


def test_a_zero_score_with_repeats_stays_inside_zero_to_one():
    interval = stats.accuracy_interval(np.zeros((3, 50), dtype=bool))
    assert interval.mean == interval.low == 0.0
    assert 0.0 < interval.high < 1.0


def test_interval_is_deterministic_for_a_seed_and_brackets_the_mean():
    correct = simulate_benchmarks(1, 3, 120, 0.9, 1.5, 0.2, seed=3)[0]
    first = stats.accuracy_interval(correct, seed=7)
    assert stats.accuracy_interval(correct, seed=7) == first
    assert 0.0 <= first.low <= first.mean <= first.high <= 1.0
    assert first.method == "bootstrap over test images + spread between repeats"


def test_bootstrap_variance_matches_the_closed_form_over_images():
    # The bootstrap over images estimates the plug-in variance of the mean of per-image means; its Monte Carlo
    # error with 2,000 resamples is about 3 %, so 12 % is four of those errors.
    per_image = simulate_benchmarks(1, 3, 200, 0.8, 1.5, 0.2, seed=4).mean(axis=1)
    resampled = stats._image_bootstrap_means(per_image, stats.RESAMPLES, seed=0)
    plug_in = per_image.var(axis=1) / per_image.shape[1]
    assert resampled.var(axis=1, ddof=1) == pytest.approx(plug_in, rel=0.12)


def test_repeats_are_resampled_on_the_same_images():
    # Two identical repeats carry no more information than one. Resampling the images of each repeat on its
    # own would halve the variance and narrow the interval by about 0.03; the same indices for every repeat
    # keep it as it is.
    correct = np.random.default_rng(6).permutation(first_correct(200, 160))
    one = stats.accuracy_interval(correct)
    twice = stats.accuracy_interval(np.vstack([correct, correct]))
    assert twice.high - twice.low == pytest.approx(one.high - one.low, abs=0.003)


def test_spread_between_repeats_widens_the_interval():
    # Same 0.8 mean accuracy; the runs agree in one case and score 0.7, 0.8 and 0.9 in the other.
    agreeing = np.vstack([first_correct(200, 160)] * 3)
    spread = np.vstack([first_correct(200, 140), first_correct(200, 160), first_correct(200, 180)])
    narrow = stats.accuracy_interval(agreeing)
    wide = stats.accuracy_interval(spread)
    assert narrow.mean == wide.mean == pytest.approx(0.8)
    assert wide.high - wide.low > 2 * (narrow.high - narrow.low)


def test_batched_intervals_are_those_of_accuracy_interval():
    # A batch this size takes the matrix-product path and a single benchmark the gathering one: same resamples.
    correct = simulate_benchmarks(12, 3, 100, 0.8, 1.5, 0.2, seed=8)
    assert len(correct) > stats._GATHER_ROWS
    mean, low, high = stats._interval_arrays(correct, stats.CONFIDENCE, stats.RESAMPLES, seed=0)
    for index, benchmark in enumerate(correct):
        interval = stats.accuracy_interval(benchmark)
        assert (interval.mean, interval.low, interval.high) == pytest.approx((mean[index], low[index], high[index]),
                                                                             abs=1e-12)


def test_interval_covers_the_truth_95_percent_of_the_time_with_one_repeat():
    correct = simulate_benchmarks(2000, 1, 200, 0.8, image_sd=0.0, run_sd=0.0, seed=1)  # the doc's table
    assert 0.93 <= coverage(correct, 0.8) <= 0.97


def test_interval_covers_the_truth_95_percent_of_the_time_with_three_varying_repeats():
    # run_sd 0.2 makes single runs' accuracies spread by about 3 points around 0.8, as much as the test set's
    # own sampling error with 200 images; the interval must hold both.
    correct = simulate_benchmarks(2000, 3, 200, 0.8, image_sd=1.5, run_sd=0.2, seed=1)  # the doc's table
    per_run = correct.mean(axis=2)
    assert 0.02 < per_run.std(axis=1, ddof=1).mean() < 0.05
    assert 0.93 <= coverage(correct, 0.8) <= 0.97


def test_interval_refuses_values_other_than_zero_and_one():
    with pytest.raises(ValueError):
        stats.accuracy_interval(np.array([0.2, 0.9]))
    with pytest.raises(ValueError):
        stats.accuracy_interval(np.zeros((0, 5), dtype=bool))


# compare_paired


def test_identical_results_with_repeats_are_not_different():
    correct = simulate_benchmarks(1, 3, 300, 0.8, 1.5, 0.2, seed=9)[0]
    test = stats.compare_paired(correct, correct.copy())
    assert test.test == "paired bootstrap"
    assert test.difference == 0.0
    assert test.p_value == 1.0


def test_clearly_different_results_with_repeats_are_significant():
    generator = np.random.default_rng(10)
    better = generator.random((3, 300)) < 0.9
    worse = generator.random((3, 300)) < 0.6
    test = stats.compare_paired(better, worse)
    assert test.test == "paired bootstrap"
    assert test.difference == pytest.approx(better.mean() - worse.mean())
    assert test.difference > 0.2
    assert test.p_value < 0.001


def test_single_repeats_are_compared_with_exact_mcnemar():
    a = np.array([True] * 40 + [False] * 50 + [True] * 1 + [False] * 9)
    b = np.array([True] * 40 + [False] * 50 + [False] * 1 + [True] * 9)
    test = stats.compare_paired(a, b[np.newaxis, :])
    assert test.test == "exact McNemar"
    assert test.p_value == pytest.approx(0.021484375, abs=1e-12)
    assert test.difference == pytest.approx(-0.08)


def test_paired_bootstrap_rarely_calls_equal_backbones_different():
    # Equally good backbones, three repeats each, runs spreading by 2.6 points: the share of p < 0.05
    # must not exceed 5 % by more than the binomial error of 1,000 pairs allows (0.7 points; 0.07 is 3 of them).
    # Larger run spread makes it exceed 5 %: docs/statistics.md gives the figures.
    assert false_alarm_rate(repeats=3, run_sd=0.15, count=1000, seed=12) <= 0.07


def test_compare_paired_refuses_different_test_sets():
    with pytest.raises(ValueError):
        stats.compare_paired(np.ones((2, 10), dtype=bool), np.ones((2, 11), dtype=bool))


# compare_to_leader


def test_no_results_no_comparison():
    assert stats.compare_to_leader({}) is None


def test_leader_and_tied_backbones():
    leader = first_correct(300, 270)
    close = leader.copy()
    close[:3] = False  # 3 discordant images: exact McNemar p = 0.25
    far = np.vstack([first_correct(300, 200)] * 3)  # 0.67 against 0.9, three repeats: paired bootstrap
    equal = leader.copy()  # the same mean: the leader stays the first key
    comparison = stats.compare_to_leader({"close": close, "leader": leader, "far": far, "equal": equal})
    assert comparison.leader == "leader"
    assert set(comparison.tests) == {"close", "far", "equal"}
    assert comparison.tests["close"].test == "exact McNemar"
    assert comparison.tests["close"].p_value == pytest.approx(0.25)
    assert comparison.tests["close"].difference == pytest.approx(0.01)
    assert comparison.tests["far"].test == "paired bootstrap"
    assert comparison.tests["far"].p_value < stats.ALPHA
    assert comparison.tests["equal"].p_value == 1.0
    assert comparison.tied == ["close", "equal"]
    assert comparison.alpha == stats.ALPHA


def test_leader_is_the_highest_mean_whatever_the_order():
    results = {"low": first_correct(100, 60), "high": first_correct(100, 90), "middle": first_correct(100, 75)}
    assert stats.compare_to_leader(results).leader == "high"


def test_a_single_result_leads_alone():
    comparison = stats.compare_to_leader({"only": first_correct(20, 10)})
    assert comparison.leader == "only"
    assert comparison.tests == {}
    assert comparison.tied == []


def test_results_on_different_test_sets_are_refused():
    with pytest.raises(ValueError):
        stats.compare_to_leader({"a": first_correct(10, 5), "b": first_correct(12, 5)})


# tie_sentence


@pytest.mark.parametrize(("tied", "others", "sentence"), [
    (["ResNet50", "VGG19"], 3, "VGG16 leads; ResNet50 and VGG19 are not significantly worse (p ≥ 0.05)."),
    ([], 2, "VGG16 leads; every other backbone is significantly worse (p < 0.05)."),
    ([], 0, "VGG16 leads; it is the only backbone with a test result."),
    (["A", "B", "C"], 3, "VGG16 leads; A, B and C are not significantly worse (p ≥ 0.05)."),
    (["Xception"], 4, "VGG16 leads; Xception is not significantly worse (p ≥ 0.05)."),
])
def test_tie_sentence_wordings(tied, others, sentence):
    assert stats.tie_sentence("VGG16", tied, others) == sentence


# pack_correct / unpack_correct


def test_pack_and_unpack_round_trip_with_a_partial_last_byte():
    correct = np.array([True, False, True, True, False, False, True, False, True, True, False, True, True])
    data = stats.pack_correct(correct)
    assert len(data) == 2
    assert np.array_equal(stats.unpack_correct(data, 13), correct)
    assert stats.unpack_correct(data, 13).dtype == bool


def test_unpack_refuses_data_of_the_wrong_length():
    with pytest.raises(ValueError):
        stats.unpack_correct(b"\x00\x00", 17)


def _calibration_table() -> None:
    """Print the coverage and false-alarm rates that docs/statistics.md quotes."""
    print("interval coverage (2,000 benchmarks, n = 200, accuracy 0.8)")
    for repeats, image_sd, run_sd in [(1, 0.0, 0.0), (3, 1.5, 0.0), (3, 1.5, 0.2), (3, 1.5, 0.3), (2, 1.5, 0.3),
                                      (5, 1.5, 0.3), (10, 1.5, 0.3)]:
        correct = simulate_benchmarks(2000, repeats, 200, 0.8, image_sd, run_sd, seed=1)
        run_spread = correct.mean(axis=2).std(axis=1, ddof=1).mean() if repeats > 1 else 0.0
        print(f"  r={repeats:2d} image_sd={image_sd} run_sd={run_sd} (runs spread {run_spread:.3f}): "
              f"{coverage(correct, 0.8):.3f}")
    print("paired bootstrap false alarms at 0.05 (1,000 equally good pairs, n = 200)")
    for repeats, run_sd in [(3, 0.0), (3, 0.15), (3, 0.3), (5, 0.15), (2, 0.15)]:
        a, _ = simulate_pairs(1000, repeats, 200, 0.8, run_sd, seed=12)
        run_spread = a.mean(axis=2).std(axis=1, ddof=1).mean()
        print(f"  r={repeats} run_sd={run_sd} (runs spread {run_spread:.3f}): "
              f"{false_alarm_rate(repeats, run_sd, count=1000, seed=12):.3f}")
    a, b = simulate_pairs(1000, 1, 200, 0.8, 0.15, seed=13)
    mcnemar = np.mean([stats.mcnemar_exact(x[0], y[0]) < stats.ALPHA for x, y in zip(a, b)])
    print(f"  exact McNemar, r=1 run_sd=0.15: {mcnemar:.3f}")
    exact = scipy_stats.binomtest(160, 200).proportion_ci(method="exact")
    counts = np.arange(201)
    # The exact (Clopper–Pearson) bounds as beta quantiles, for every count at once.
    low = np.where(counts > 0, scipy_stats.beta.ppf(0.025, np.maximum(counts, 1), 201 - counts), 0.0)
    high = np.where(counts < 200, scipy_stats.beta.ppf(0.975, counts + 1, np.maximum(200 - counts, 1)), 1.0)
    covered = scipy_stats.binom.pmf(counts, 200, 0.8)[(low <= 0.8) & (0.8 <= high)].sum()
    print(f"exact binomial interval for 160 of 200: [{exact.low:.3f}, {exact.high:.3f}]; "
          f"its coverage at n = 200, p = 0.8: {covered:.3f}")


if __name__ == "__main__":
    _calibration_table()
