"""Confidence intervals and paired tests for the test accuracy of a job's trials.

At the chosen learning rate a job has r repeats (training runs), each evaluated once on the same n test
images, so its result is a bool matrix `correct` of shape (r, n). The accuracy it reports has two sources of
uncertainty: which images happened to be in the test set, and which training runs happened to be drawn.
Backbones of one benchmark share the test images in the same order, so their comparisons are paired.
docs/statistics.md explains the methods and which tests check them; this module needs only numpy and scipy.
"""

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # significance level of the tie test
# Bootstrap resamples: the Monte Carlo error of a bootstrap variance is about sqrt(2 / RESAMPLES) = 3 % of it
# (under 1.5 % of an interval's width), and the smallest paired p-value, 1 / (RESAMPLES + 1), is below 0.001.
RESAMPLES = 2000
# Resamples are drawn in blocks of at most this many indices, so a large test set stays in memory.
_BLOCK_ENTRIES = 1 << 20
# Up to this many rows (one benchmark's per-image means) are resampled by gathering; more by a matrix product.
_GATHER_ROWS = 2


@dataclass(frozen=True)
class Interval:
    """Mean test accuracy over repeats and its confidence interval."""

    mean: float
    low: float
    high: float
    confidence: float
    method: str


@dataclass(frozen=True)
class PairedTest:
    """A two-sided test that two backbones have the same expected accuracy on these test images' population."""

    p_value: float
    test: str  # "exact McNemar" or "paired bootstrap"
    difference: float  # mean accuracy of a minus mean accuracy of b


@dataclass(frozen=True)
class Comparison:
    """Every backbone tested against the leader; `tied` are those not significantly worse at `alpha`."""

    leader: Hashable
    tests: dict[Hashable, PairedTest]
    tied: list[Hashable]
    alpha: float


def _as_matrix(correct: np.ndarray) -> np.ndarray:
    """A (r, n) bool matrix from a 1-D or 2-D array of booleans or 0/1 values; a 1-D array is one repeat."""
    array = np.asarray(correct)
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"correctness must be a non-empty (repeats, images) array, not shape {array.shape}")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise ValueError("correctness must hold booleans or 0/1 values only")
    return array.astype(bool)


def _check_probability(name: str, value: float) -> None:
    """Refuse a confidence or significance level outside (0, 1), which would make every quantile meaningless."""
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, not {value}")


def _check_resamples(resamples: int) -> None:
    """Refuse fewer than two resamples, which leave no bootstrap spread to measure."""
    if resamples < 2:
        raise ValueError(f"the bootstrap needs at least 2 resamples, not {resamples}")


def _resample_blocks(n: int, resamples: int):
    """Sizes of the blocks of resamples, each at most _BLOCK_ENTRIES indices, adding up to `resamples`."""
    block = max(1, _BLOCK_ENTRIES // n)
    for start in range(0, resamples, block):
        yield min(block, resamples - start)


def _resample_indices(generator: np.random.Generator, size: int, count: int) -> np.ndarray:
    """`count` bootstrap resamples of `size` items, as (count, size) indices drawn with replacement.

    32-bit indices: drawing them is several times faster than 64-bit ones, which matters for large test sets.
    """
    return generator.integers(0, size, (count, size), dtype=np.int32)


def _resample_counts(indices: np.ndarray) -> np.ndarray:
    """How often each item appears in each resample of `indices` (count, size), as float (count, size)."""
    count, size = indices.shape
    flat = indices.astype(np.intp) + np.arange(count, dtype=np.intp)[:, np.newaxis] * size
    return np.bincount(flat.ravel(), minlength=count * size).reshape(count, size).astype(np.float64)


def _resampled_means(rows: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The mean of each row of `rows` (m, n) over each resample of its columns in `indices` (k, n), as (m, k).

    A row or two (one benchmark's per-image means) are gathered directly; more rows (a batch of simulated
    benchmarks, or the repeats of two backbones) share one count matrix and a matrix product, which is far
    cheaper per row than gathering.
    """
    if rows.shape[0] <= _GATHER_ROWS:
        return rows[:, indices].mean(axis=-1)
    return rows @ _resample_counts(indices).T / rows.shape[1]


def _image_bootstrap_means(per_image: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap means over test images of each row of `per_image` (S, n), as (S, resamples).

    The same resampled image indices serve every row, which is what accuracy_interval would draw for each
    benchmark alone with this seed, so a batch of simulated benchmarks exercises exactly the real code.
    """
    n = per_image.shape[-1]
    generator = np.random.default_rng(seed)
    blocks = [_resampled_means(per_image, _resample_indices(generator, n, count))
              for count in _resample_blocks(n, resamples)]
    return np.concatenate(blocks, axis=-1)


def _run_spread(values: np.ndarray, per_image: np.ndarray):
    """Between-run variance of per-run accuracies and the residual (run-by-image) mean square, each (S,).

    The per-run accuracies of runs on the same n images differ by the runs' own spread plus residual noise
    of variance (residual mean square) / n, which the image bootstrap already holds.
    """
    _, repeats, n = values.shape
    per_run = values.mean(axis=2)
    grand = values.mean(axis=(1, 2))[:, np.newaxis, np.newaxis]
    residual = values - per_image[:, np.newaxis, :] - per_run[:, :, np.newaxis] + grand
    residual_mean_square = (residual ** 2).sum(axis=(1, 2)) / ((repeats - 1) * max(n - 1, 1))
    return per_run.var(axis=1, ddof=1), residual_mean_square


def _variance_components(correct: np.ndarray, resamples: int, seed: int):
    """Variance of the mean accuracy of each benchmark in `correct` (S, r, n), and its degrees of freedom.

    Test-set sampling: the bootstrap variance over test images of the mean of the per-image mean correctness
    (the same image indices for every repeat). It holds the image-to-image spread and the run-by-image noise
    averaged over the repeats. Run-to-run spread: the variance of the per-run accuracies, less the residual
    noise it also holds, over r (never negative). The sum estimates the variance of the mean under a crossed
    images x runs model. Degrees of freedom: Satterthwaite's for that sum of mean squares, so that few repeats
    widen the interval when the runs disagree.
    """
    count, repeats, n = correct.shape
    values = correct.astype(np.float64)
    per_image = values.mean(axis=1)
    image_variance = _image_bootstrap_means(per_image, resamples, seed).var(axis=-1, ddof=1)
    if repeats == 1:
        return image_variance, np.full(count, n - 1.0)
    run_variance, residual_mean_square = _run_spread(values, per_image)
    run_component = np.maximum(run_variance - residual_mean_square / n, 0.0) / repeats
    variance = image_variance + run_component
    spread = run_component > 0
    terms = (image_variance ** 2 / max(n - 1, 1)
             + np.where(spread, (run_variance / repeats) ** 2 / (repeats - 1), 0.0)
             + np.where(spread, (residual_mean_square / (repeats * n)) ** 2 / ((repeats - 1) * max(n - 1, 1)), 0.0))
    degrees = np.divide(variance ** 2, terms, out=np.full(count, n - 1.0), where=terms > 0)
    return variance, np.maximum(degrees, 1.0)


def _effective_binomial_interval(mean, variance, degrees, repeats: int, n: int, confidence: float):
    """The exact binomial (Clopper–Pearson) interval at the effective sample size of each mean.

    The effective sample size is the number of independent images with the same variance, mean (1 - mean) /
    variance, shrunk by (z / t)^2 for the degrees of freedom of the variance estimate; it never exceeds the r n
    observations. With every answer right (or every one wrong) there is no spread to estimate, and the interval
    is the exact one for n images, so a perfect score on a small test set still gets an honest lower bound.
    """
    tail = (1 - confidence) / 2
    degenerate = (mean <= 0) | (mean >= 1) | (variance <= 0)
    safe_variance = np.where(degenerate, 1.0, variance)
    effective = np.minimum(mean * (1 - mean) / safe_variance, repeats * n)
    effective = effective * (stats.norm.ppf(1 - tail) / stats.t.ppf(1 - tail, degrees)) ** 2
    edge = (mean <= 0) | (mean >= 1)
    effective = np.where(edge, n, np.where(degenerate, repeats * n, effective))
    successes = mean * effective
    failures = effective - successes
    with np.errstate(invalid="ignore"):
        low = np.where(successes > 0, stats.beta.ppf(tail, np.maximum(successes, 1e-12), failures + 1), 0.0)
        high = np.where(failures > 0, stats.beta.ppf(1 - tail, successes + 1, np.maximum(failures, 1e-12)), 1.0)
    return np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)


def _interval_arrays(correct: np.ndarray, confidence: float, resamples: int, seed: int):
    """Mean accuracy and interval bounds of each benchmark in `correct` (S, r, n), as three (S,) arrays.

    accuracy_interval is this for S = 1; tests call it with thousands of simulated benchmarks at once.
    """
    _check_probability("confidence", confidence)
    _check_resamples(resamples)
    _, repeats, n = correct.shape
    mean = correct.mean(axis=(1, 2))
    variance, degrees = _variance_components(correct, resamples, seed)
    low, high = _effective_binomial_interval(mean, variance, degrees, repeats, n, confidence)
    return mean, np.minimum(low, mean), np.maximum(high, mean)


def accuracy_interval(correct: np.ndarray, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                      seed: int = 0) -> Interval:
    """Mean test accuracy over repeats with an interval for both test-set sampling and run-to-run spread.

    `correct` is (r, n) bool, a 1-D array meaning one repeat. Deterministic for a given seed.
    """
    matrix = _as_matrix(correct)
    mean, low, high = _interval_arrays(matrix[np.newaxis], confidence, resamples, seed)
    method = ("bootstrap over test images" if matrix.shape[0] == 1
              else "bootstrap over test images + spread between repeats")
    return Interval(mean=float(mean[0]), low=float(low[0]), high=float(high[0]), confidence=confidence,
                    method=method)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Exact (binomial) McNemar p-value on per-image correctness of two classifiers; 1 without discordant pairs."""
    a = _as_matrix(a_correct)
    b = _as_matrix(b_correct)
    if a.shape[0] != 1 or b.shape != a.shape:
        raise ValueError(f"McNemar needs two 1-D arrays of the same length, not shapes {a.shape} and {b.shape}")
    only_a = int((a & ~b).sum())
    only_b = int((b & ~a).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)


def _per_run_means(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Each run's accuracy in `values` (S, r, n) under each image resample in `indices` (k, n), as (S, r, k)."""
    count, runs, n = values.shape
    return _resampled_means(values.reshape(count * runs, n), indices).reshape(count, runs, -1)


def _paired_bootstrap_arrays(a: np.ndarray, b: np.ndarray, resamples: int, seed: int):
    """Observed difference of mean accuracies and its two-sided bootstrap p-value, for (S, r_a, n) and (S, r_b, n).

    Each resample draws test images once, for a and b alike (the pairing), and repeats within each backbone.
    The p-value is the share of resampled differences at least as far from the observed one as the observed one
    is from zero (the bootstrap distribution shifted to the null), counting the observed sample: (1 + k) / (B + 1).
    """
    _check_resamples(resamples)
    _, runs_a, n = a.shape
    runs_b = b.shape[1]
    values = np.concatenate([a, b], axis=1).astype(np.float64)
    observed = values[:, :runs_a].mean(axis=(1, 2)) - values[:, runs_a:].mean(axis=(1, 2))
    generator = np.random.default_rng(seed)
    beyond = np.zeros(observed.shape, dtype=np.int64)
    for count in _resample_blocks(n, resamples):
        images = _resample_indices(generator, n, count)
        repeats_a = _resample_counts(_resample_indices(generator, runs_a, count)) / runs_a
        repeats_b = _resample_counts(_resample_indices(generator, runs_b, count)) / runs_b
        runs = _per_run_means(values, images)
        mean_a = np.einsum("srk,kr->sk", runs[:, :runs_a], repeats_a)
        mean_b = np.einsum("srk,kr->sk", runs[:, runs_a:], repeats_b)
        shifted = np.abs(mean_a - mean_b - observed[:, np.newaxis])
        beyond += (shifted >= np.abs(observed)[:, np.newaxis] - 1e-12).sum(axis=1)
    return observed, (1 + beyond) / (resamples + 1)


def compare_paired(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> PairedTest:
    """Two-sided test of equal expected accuracy of a (r_a, n) and b (r_b, n) on the same test images.

    One repeat each: the exact McNemar test, which is exact for the images at hand. Otherwise a paired
    bootstrap, which also lets the repeats of each backbone vary.
    """
    matrix_a = _as_matrix(a)
    matrix_b = _as_matrix(b)
    if matrix_a.shape[1] != matrix_b.shape[1]:
        raise ValueError(f"a and b must cover the same test images, not {matrix_a.shape[1]} and {matrix_b.shape[1]}")
    difference = float(matrix_a.mean() - matrix_b.mean())
    if matrix_a.shape[0] == 1 and matrix_b.shape[0] == 1:
        return PairedTest(p_value=mcnemar_exact(matrix_a[0], matrix_b[0]), test="exact McNemar",
                          difference=difference)
    _, p_value = _paired_bootstrap_arrays(matrix_a[np.newaxis], matrix_b[np.newaxis], resamples, seed)
    return PairedTest(p_value=float(p_value[0]), test="paired bootstrap", difference=difference)


def compare_to_leader(results: dict[Hashable, np.ndarray], alpha: float = ALPHA,
                      seed: int = 0) -> Comparison | None:
    """Test every backbone against the one with the highest mean accuracy; None without results.

    The leader's ties are broken by input order. Each test is compare_paired(leader, other), so its
    `difference` is how far the other backbone is behind (never negative). No correction for the number of
    comparisons is made: each backbone's verdict is read on its own (docs/statistics.md).
    """
    _check_probability("alpha", alpha)
    if not results:
        return None
    matrices = {key: _as_matrix(correct) for key, correct in results.items()}
    widths = {matrix.shape[1] for matrix in matrices.values()}
    if len(widths) > 1:
        raise ValueError(f"every result must cover the same test images, not {sorted(widths)} images")
    means = {key: matrix.mean() for key, matrix in matrices.items()}
    leader = max(means, key=means.__getitem__)  # max keeps the first of equal means
    tests = {key: compare_paired(matrices[leader], matrix, seed=seed)
             for key, matrix in matrices.items() if key != leader}
    tied = [key for key, test in tests.items() if test.p_value >= alpha]
    return Comparison(leader=leader, tests=tests, tied=tied, alpha=alpha)


def _join_names(names: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def tie_sentence(leader_name: str, tied_names: list[str], others_count: int, alpha: float = ALPHA) -> str:
    """One sentence for the dashboard: who leads and which backbones are not significantly worse."""
    if others_count == 0:
        return f"{leader_name} leads; it is the only backbone with a test result."
    if not tied_names:
        return f"{leader_name} leads; every other backbone is significantly worse (p < {alpha:g})."
    verb = "is" if len(tied_names) == 1 else "are"
    return f"{leader_name} leads; {_join_names(list(tied_names))} {verb} not significantly worse (p ≥ {alpha:g})."


def pack_correct(correct_1d: np.ndarray) -> bytes:
    """A trial's per-image correctness as a bitmap, one bit per test image, for the database."""
    array = np.asarray(correct_1d)
    if array.ndim != 1:
        raise ValueError(f"a correctness bitmap packs one repeat (1-D), not shape {array.shape}")
    return np.packbits(array.astype(bool)).tobytes()


def unpack_correct(data: bytes, n: int) -> np.ndarray:
    """The n-image bool correctness packed by pack_correct; refuses data of the wrong length."""
    if len(data) != (n + 7) // 8:
        raise ValueError(f"{len(data)} bytes cannot hold exactly {n} images' correctness")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=n).astype(bool)
