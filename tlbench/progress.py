"""The terminal view of a running benchmark: one line per backbone, then the comparison."""
from __future__ import annotations

import sys
import time

from db.models import FINISHED_STATUSES
from jobs.wording import accuracy_interval_text, learning_rate_text, percent, rank_key, standing_text
from tlbench.client import ApiClient

POLL_SECONDS = 2.0
# The statuses of the API's jobs after which nothing changes.
FINISHED = frozenset(status.value for status in FINISHED_STATUSES)
COLUMNS = ("backbone", "status", "epoch", "best val acc", "best epoch", "s/epoch", "error")


def job_row(job: dict) -> tuple[str, ...]:
    """The columns shown for one job."""
    summary = job.get("summary") or {}
    best = summary.get("best_val_accuracy")
    train_seconds, epochs_run = summary.get("train_seconds"), summary.get("epochs_run")
    per_epoch = f"{train_seconds / epochs_run:.1f}" if train_seconds and epochs_run else ""
    return (job["backbone"], job["status"], f"{job['epochs_done']}/{job['epochs']}",
            f"{100 * best:.1f} %" if best is not None else "", str(summary.get("best_epoch", "")),
            per_epoch, (job.get("error") or "")[:60])


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of text cells as lines of left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]


def eta_text(seconds: float | None, basis: str | None) -> str:
    """Time left in words, to the minute (so a watched table does not change every poll), and its basis."""
    if seconds is None:
        return f"time left {basis or 'unknown'}"  # the basis says why: "unknown: no earlier job of ..."
    minutes = round(seconds / 60)
    amount = "under a minute" if minutes < 1 else (f"about {minutes} min" if minutes < 60
                                                   else f"about {minutes // 60} h {minutes % 60} min")
    return f"{amount} left ({basis})"


def render_table(benchmark: dict) -> str:
    """A plain-text table of the jobs while they run, under the benchmark's status and time left."""
    lines = aligned([COLUMNS] + [job_row(job) for job in benchmark["jobs"]])
    head = f"benchmark {benchmark['id']} ({benchmark['name']}): {benchmark['status']}"
    if benchmark.get("eta_basis") != "finished":
        head += f" · {eta_text(benchmark.get('eta_seconds'), benchmark.get('eta_basis'))}"
    return head + "\n" + "\n".join(lines)


def watch(client: ApiClient, benchmark_id: int, stream=sys.stdout) -> dict:
    """Print the table whenever it changes until every job has finished; return the last state."""
    last_shown = None
    while True:
        benchmark = client.benchmark(benchmark_id)
        finished = all(job["status"] in FINISHED for job in benchmark["jobs"])
        if finished:
            print("\nFinal comparison:\n" + comparison_table(benchmark), file=stream, flush=True)
            return benchmark
        table = render_table(benchmark)
        if table != last_shown:
            print("\n" + table, file=stream, flush=True)
            last_shown = table
        time.sleep(POLL_SECONDS)


# The benchmark page's comparison, as text: the same columns, in the same words.
COMPARISON_COLUMNS = ("backbone", "status", "test accuracy (95 % CI)", "vs leader", "learning rate", "repeats",
                      "best val acc", "latency", "error")


def comparison_row(job: dict, benchmark: dict) -> tuple[str, ...]:
    """One backbone's line of the comparison."""
    summary = job.get("summary") or {}
    repeats = summary.get("repeats", (benchmark.get("config") or {}).get("repeats", 1))
    latency = summary.get("latency_ms_per_image")
    return (job["backbone"], job["status"], accuracy_interval_text(job), standing_text(job, benchmark),
            learning_rate_text(job, benchmark), str(repeats), percent(summary.get("best_val_accuracy")),
            "–" if latency is None else f"{latency:.2f} ms", (job.get("error") or "")[:60])


def comparison_table(benchmark: dict) -> str:
    """The comparison as aligned text columns, leader first, then the comparison's sentence."""
    jobs = sorted(benchmark["jobs"], key=lambda job: rank_key(job, benchmark))
    lines = aligned([COMPARISON_COLUMNS] + [comparison_row(job, benchmark) for job in jobs])
    sentence = (benchmark.get("comparison") or {}).get("sentence")
    leader = benchmark.get("leader") or {}
    if not sentence and leader.get("by") == "val_accuracy":
        sentence = f"{leader['backbone']} leads by validation accuracy (made before held-out test sets: no test)."
    return "\n".join([f"Comparison of benchmark {benchmark['id']} ({benchmark['name']}):", *lines,
                      *([sentence] if sentence else [])])
