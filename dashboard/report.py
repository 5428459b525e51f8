"""A benchmark as files to hand on: one self-contained HTML page (the chart library inline, thumbnails embedded,
so it opens from disk with no server and no network), one CSV row per trial, and a short markdown summary.

Everything comes from what the API serves (benchmark_json, the epoch series, trials and test predictions),
gathered once by `gather`; the three renderings only format it.
"""
from __future__ import annotations

import base64
import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from db import operations as ops
from db.models import Benchmark
from dashboard.gallery import ImageUnavailable, dataset_image_path, jpeg_thumbnail, trial_predictions
from dashboard.presenters import benchmark_json, dataset_json, epoch_series_json, trials_json
from jobs.datasets import ImageFile
from jobs.environment import installed_version
from jobs.wording import accuracy_interval_text, percent, rank_key, standing_text

# The most confident mistakes of each backbone, embedded as small JPEGs.
ERRORS_PER_BACKBONE = 20
THUMBNAIL_PX = 96
CSV_COLUMNS = ("benchmark_id", "job_id", "backbone", "job_status", "trial", "learning_rate", "repeat", "seed",
               "trial_status", "epochs_done", "best_val_accuracy", "best_epoch", "epochs_run", "test_accuracy",
               "selected", "chosen_learning_rate", "job_test_accuracy_mean", "job_test_ci_low", "job_test_ci_high",
               "tied_with_leader", "worker")


@dataclass
class Report:
    """What every rendering of one benchmark's report shows."""

    benchmark: dict
    dataset: dict
    series: list[dict]
    trials: dict[int, list[dict]]
    predictions: dict[int, list[dict]]
    errors: dict[int, list[dict]] = field(default_factory=dict)  # per job: mistakes with their thumbnail
    generated_at: str = ""
    version: str | None = None

    @property
    def jobs(self) -> list[dict]:
        """The jobs in the comparison's order: the leader first, then by accuracy, jobs without a result last."""
        return sorted(self.benchmark["jobs"], key=lambda job: rank_key(job, self.benchmark))


def gather(session, settings, benchmark_id: int) -> Report:
    """Everything the report shows, read in one transaction; thumbnails are read from the dataset's folder."""
    benchmark = ops.get_existing(session, Benchmark, benchmark_id)
    job_ids = [job.id for job in benchmark.jobs]
    done, trials = ops.epochs_done(session, job_ids), ops.job_trials(session, job_ids, with_correctness=True)
    dataset = benchmark.dataset
    labels = [ImageFile(*entry).label for entry in dataset.manifest]
    predictions = {job.id: shown for job in benchmark.jobs if job.summary and "selected_trial" in job.summary
                   and (shown := trial_predictions(settings.storage(), job.id, job.summary["selected_trial"],
                                                   labels)) is not None}
    report = Report(
        benchmark=benchmark_json(benchmark, done, trials, detail=True),
        dataset=dataset_json(dataset),
        series=[epoch_series_json(job, epochs) for job, epochs in ops.benchmark_epochs(session, benchmark_id)],
        trials={job.id: trials_json(job, trials[job.id], ops.trial_epochs_done(session, job.id))["trials"]
                for job in benchmark.jobs},
        predictions=predictions,
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        version=installed_version("tlbench"),
    )
    report.errors = {job_id: _embedded_errors(Path(dataset.root), list(dataset.manifest), shown)
                     for job_id, shown in predictions.items()}
    return report


def _embedded_errors(root: Path, manifest: list, predictions: list[dict]) -> list[dict]:
    """The most confident mistakes, each with its thumbnail as a data URI (none for an image that is gone)."""
    mistakes = sorted((p for p in predictions if p["true"] != p["predicted"]), key=lambda p: -p["confidence"])
    embedded = []
    for prediction in mistakes[:ERRORS_PER_BACKBONE]:
        try:
            jpeg = jpeg_thumbnail(dataset_image_path(root, manifest, prediction["index"]), THUMBNAIL_PX)
        except ImageUnavailable:
            continue
        embedded.append({**prediction, "src": "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()})
    return embedded


def confusion(classes: list[str], predictions: list[dict]) -> list[list[int]]:
    """Counts of (true class, predicted class): rows true, columns predicted."""
    matrix = [[0] * len(classes) for _ in classes]
    for prediction in predictions:
        matrix[prediction["true"]][prediction["predicted"]] += 1
    return matrix


def csv_text(report: Report) -> str:
    """One row per trial of every job, with its job's result beside it."""
    comparison = report.benchmark.get("comparison") or {}
    tied = set(comparison.get("tied_with_leader", []))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for job in report.benchmark["jobs"]:
        summary = job["summary"] or {}
        test = summary.get("test") or {}
        for trial in report.trials[job["id"]]:
            writer.writerow({
                "benchmark_id": report.benchmark["id"], "job_id": job["id"], "backbone": job["backbone"],
                "job_status": job["status"], "trial": trial["number"], "learning_rate": trial["learning_rate"],
                "repeat": trial["repeat"], "seed": trial["seed"], "trial_status": trial["status"],
                "epochs_done": trial["epochs_done"], "best_val_accuracy": trial["best_val_accuracy"],
                "best_epoch": trial["best_epoch"], "epochs_run": trial["epochs_run"],
                "test_accuracy": trial["test_accuracy"], "selected": trial["selected"],
                "chosen_learning_rate": summary.get("chosen_learning_rate"),
                "job_test_accuracy_mean": test.get("accuracy_mean"), "job_test_ci_low": test.get("ci_low"),
                "job_test_ci_high": test.get("ci_high"), "tied_with_leader": job["id"] in tied,
                "worker": trial["worker"],
            })
    return buffer.getvalue()


def _number(value: float | None, template: str, scale: float = 1.0) -> str:
    """A measured value in its unit, or a dash before it is measured."""
    return "–" if value is None else template.format(value / scale)


def leaderboard(report: Report) -> list[dict]:
    """The leaderboard's rows as text, leader first; a job that has not finished shows dashes."""
    frontier = set(report.benchmark["frontier"]["latency_ms_per_image"])
    rows = []
    for job in report.jobs:
        summary = job["summary"] or {}
        verdict = standing_text(job, report.benchmark)
        rows.append({
            "backbone": job["backbone"], "status": job["status"], "test": accuracy_interval_text(job),
            "standing": verdict or "–", "leader": verdict == "leader", "on_frontier": job["id"] in frontier,
            "learning_rate": _number(summary.get("chosen_learning_rate"), "{:g}"),
            "repeats": str(summary.get("repeats", "–")), "best_val": percent(summary.get("best_val_accuracy")),
            "latency": _number(summary.get("latency_ms_per_image"), "{:.2f} ms"),
            "parameters": _number(summary.get("params_total"), "{:.1f} M", 1e6),
            "model_size": _number(summary.get("model_bytes"), "{:.1f} MB", 1e6),
        })
    return rows


def markdown(report: Report) -> str:
    """A short summary that pastes into a pull request or a chat."""
    benchmark, dataset = report.benchmark, report.dataset
    splits = benchmark.get("splits") or {}
    lines = [
        f"## {benchmark['name']}: which backbone to fine-tune on {dataset['name']}",
        "",
        (benchmark.get("comparison") or {}).get("sentence") or "No backbone has a test result yet.",
        "",
        "| Backbone | Test accuracy (95 % CI) | Against the leader | Learning rate | Repeats | Latency / image | Parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in leaderboard(report):
        lines.append(f"| {row['backbone']} | {row['test']} | {row['standing']} | {row['learning_rate']} | "
                     f"{row['repeats']} | {row['latency']} | {row['parameters']} |")
    parts = ", ".join(f"{name} {part['images']}" for name, part in splits.items())
    lines += ["", f"{dataset['images']} images, {len(dataset['classes'])} classes"
              + (f" (split: {parts})" if parts else "") + f"; dataset sha256 `{dataset['sha256'][:12]}`.",
              f"Benchmark {benchmark['id']}, report generated {report.generated_at} by tlbench {report.version}."]
    return "\n".join(lines) + "\n"


PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")
CHART_LAYOUT = {"margin": {"l": 60, "r": 20, "t": 20, "b": 50}, "height": 360, "paper_bgcolor": "white",
                "plot_bgcolor": "white", "legend": {"orientation": "h", "y": 1.12}}


def colours(report: Report) -> dict[int, str]:
    """One colour per job, in the benchmark's order (as the dashboard gives them)."""
    return {job["id"]: PALETTE[index % len(PALETTE)] for index, job in enumerate(report.benchmark["jobs"])}


def translucent(hex_colour: str, alpha: float) -> str:
    """A palette colour made see-through, for a band drawn behind its line."""
    red, green, blue = (int(hex_colour[start:start + 2], 16) for start in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def curves_chart(report: Report) -> dict:
    """Validation accuracy per epoch of each job's selected trial, with the band across its repeats."""
    colour, data = colours(report), []
    for line in report.series:
        epochs = line["epochs"]
        data.append({"type": "scatter", "mode": "lines+markers", "name": line["backbone"],
                     "x": [row["epoch"] for row in epochs], "y": [row["val_accuracy"] for row in epochs],
                     "line": {"color": colour[line["job_id"]]}, "legendgroup": line["backbone"]})
        if line["band"]:
            data += [{"type": "scatter", "mode": "lines", "x": [p["epoch"] for p in line["band"]], "y": values,
                      "line": {"width": 0, "color": colour[line["job_id"]]}, "fill": fill, "showlegend": False,
                      "fillcolor": translucent(colour[line["job_id"]], 0.18), "legendgroup": line["backbone"],
                      "hoverinfo": "skip"}
                     for values, fill in (([p["low"] for p in line["band"]], "none"),
                                          ([p["high"] for p in line["band"]], "tonexty"))]
    layout = {**CHART_LAYOUT, "xaxis": {"title": {"text": "Epoch"}, "dtick": 1},
              "yaxis": {"title": {"text": "Validation accuracy"}, "tickformat": ".0%"}}
    return {"data": data, "layout": layout}


def tradeoff_chart(report: Report) -> dict:
    """Mean test accuracy (with its interval) against latency per image, and the Pareto frontier through it."""
    colour = colours(report)
    measured = [job for job in report.benchmark["jobs"] if (job["summary"] or {}).get("test")
                and job["summary"].get("latency_ms_per_image") is not None]
    by_id = {job["id"]: job for job in measured}
    front = [by_id[job_id] for job_id in report.benchmark["frontier"]["latency_ms_per_image"] if job_id in by_id]
    data = [{"type": "scatter", "mode": "lines", "name": "Pareto frontier", "line": {"dash": "dot", "color": "#57606a"},
             "x": [job["summary"]["latency_ms_per_image"] for job in front],
             "y": [job["summary"]["test"]["accuracy_mean"] for job in front], "hoverinfo": "skip"}]
    for job in measured:
        test = job["summary"]["test"]
        data.append({"type": "scatter", "mode": "markers+text", "name": job["backbone"], "text": [job["backbone"]],
                     "textposition": "top center", "x": [job["summary"]["latency_ms_per_image"]],
                     "y": [test["accuracy_mean"]], "marker": {"size": 12, "color": colour[job["id"]]},
                     "error_y": {"type": "data", "symmetric": False, "array": [test["ci_high"] - test["accuracy_mean"]],
                                 "arrayminus": [test["accuracy_mean"] - test["ci_low"]]}})
    layout = {**CHART_LAYOUT, "showlegend": False,
              "xaxis": {"title": {"text": "Latency per image (ms)"}, "rangemode": "tozero"},
              "yaxis": {"title": {"text": "Mean test accuracy"}, "tickformat": ".0%"}}
    return {"data": data, "layout": layout}


def class_grid(report: Report) -> dict:
    """F1 per class and backbone, with the best of each class marked (all of them when tied)."""
    evaluated = [job for job in report.jobs if (job["summary"] or {}).get("evaluation")]
    if not evaluated:
        return {"classes": [], "rows": []}
    classes = evaluated[0]["summary"]["evaluation"]["classes"]
    best = [max(job["summary"]["evaluation"]["per_class"][column]["f1"] for job in evaluated)
            for column in range(len(classes))]
    rows = [{"backbone": job["backbone"], "evaluation": job["summary"]["evaluation"],
             "cells": [(row["f1"], row["f1"] == best[column])
                       for column, row in enumerate(job["summary"]["evaluation"]["per_class"])]}
            for job in evaluated]
    return {"classes": classes, "rows": rows}


def html_context(report: Report) -> dict:
    """What templates/report.html renders."""
    by_job = {job["id"]: job for job in report.benchmark["jobs"]}
    return {
        "report": report, "jobs": report.jobs, "leaderboard": leaderboard(report), "percent": percent,
        "curves": curves_chart(report), "tradeoff": tradeoff_chart(report), "grid": class_grid(report),
        "confusions": [{"backbone": by_job[job_id]["backbone"], "classes": report.dataset["classes"],
                        "matrix": confusion(report.dataset["classes"], shown)}
                       for job_id, shown in report.predictions.items()],
        "errors": [{"backbone": by_job[job_id]["backbone"], "images": images, "classes": report.dataset["classes"]}
                   for job_id, images in report.errors.items()],
    }
