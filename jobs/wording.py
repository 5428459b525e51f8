"""How a job's result is said in text, the same words wherever it is shown: the CLI's comparison
(tlbench/progress.py) and the benchmark report's leaderboard (dashboard/report.py). Plain dicts in, as the
API gives jobs and benchmarks."""
from __future__ import annotations


def percent(fraction: float | None) -> str:
    """0.83 -> "83.0 %", None -> "–"."""
    return "–" if fraction is None else f"{100 * fraction:.1f} %"


def accuracy_interval_text(job: dict) -> str:
    """Mean test accuracy and its interval, "83.0 % [78.1, 87.9]"; "no test set" for jobs made before test
    sets (their summary has no "test"), "–" while there is no summary."""
    summary = job.get("summary")
    if not summary:
        return "–"
    test = summary.get("test")
    if not test:
        return "no test set"
    low, high = test.get("ci_low"), test.get("ci_high")
    interval = f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None and high is not None else ""
    return percent(test.get("accuracy_mean")) + interval


def standing_text(job: dict, benchmark: dict) -> str:
    """"leader", "tied (p = 0.41)", "worse (p = 0.003)", or "" when the job was not compared."""
    leader, comparison = benchmark.get("leader"), benchmark.get("comparison") or {}
    if leader and leader.get("job_id") == job["id"]:
        return "leader"
    test = (comparison.get("tests") or {}).get(str(job["id"]))
    if not test:
        return ""
    word = "tied" if job["id"] in comparison.get("tied_with_leader", []) else "worse"
    p = test["p_value"]
    return f"{word} (p < 0.001)" if p < 0.001 else f"{word} (p = {p:.3f})" if p < 0.01 else f"{word} (p = {p:.2f})"


def _configured_rates(benchmark: dict) -> list[float]:
    """The learning rates the benchmark asked for, as a list."""
    rate = (benchmark.get("config") or {}).get("learning_rate")
    return [] if rate is None else list(rate) if isinstance(rate, list) else [rate]


def learning_rate_text(job: dict, benchmark: dict) -> str:
    """The rate the job chose, "0.001 of 2" when it chose among several; its only rate when there was one."""
    summary = job.get("summary") or {}
    rates = summary.get("learning_rates") or _configured_rates(benchmark)
    chosen = summary.get("chosen_learning_rate", rates[0] if len(rates) == 1 else None)
    text = "–" if chosen is None else f"{chosen:g}"
    return f"{text} of {len(rates)}" if len(rates) > 1 else text


def rank_key(job: dict, benchmark: dict) -> tuple:
    """Sort key: the leader first, then by mean test accuracy (best validation accuracy for jobs without a
    test), then jobs without a result."""
    summary = job.get("summary") or {}
    leader = benchmark.get("leader") or {}
    score = (summary.get("test") or {}).get("accuracy_mean", summary.get("best_val_accuracy"))
    return (job["id"] != leader.get("job_id"), score is None, -(score or 0))
