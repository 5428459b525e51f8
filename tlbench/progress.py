"""The terminal view of a running benchmark: one line per backbone, then the comparison."""
from __future__ import annotations

import sys
import time

from tlbench.client import ApiClient

POLL_SECONDS = 2.0
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


def render_table(benchmark: dict, ranked: bool = False) -> str:
    """A plain-text table of the jobs; ranked puts the best validation accuracy first."""
    jobs = benchmark["jobs"]
    if ranked:
        jobs = sorted(jobs, key=lambda j: -((j.get("summary") or {}).get("best_val_accuracy") or -1))
    rows = [COLUMNS] + [job_row(job) for job in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    return f"benchmark {benchmark['id']} ({benchmark['name']}): {benchmark['status']}\n" + "\n".join(lines)


def watch(client: ApiClient, benchmark_id: int, stream=sys.stdout) -> dict:
    """Print the table whenever it changes until every job has finished; return the last state."""
    last_shown = None
    while True:
        benchmark = client.benchmark(benchmark_id)
        finished = all(job["status"] in ("succeeded", "failed", "cancelled") for job in benchmark["jobs"])
        table = render_table(benchmark, ranked=finished)
        if table != last_shown:
            print(("\nFinal comparison:\n" if finished else "\n") + table, file=stream, flush=True)
            last_shown = table
        if finished:
            return benchmark
        time.sleep(POLL_SECONDS)
