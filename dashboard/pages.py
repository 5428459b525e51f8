"""HTML pages: templates whose scripts read the same JSON API that external clients use."""
from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, current_app, render_template, send_file

from db import operations as ops

pages = Blueprint("pages", __name__)

# Plotly's bundle ships inside the installed Python package, so the browser never needs a CDN.
PLOTLY_BUNDLE = files("plotly") / "package_data" / "plotly.min.js"
VENDOR_MAX_AGE_SECONDS = 7 * 24 * 3600


@pages.get("/")
def index():
    """Every benchmark, with a way to run the sample one when there is none and the sample dataset exists
    (the gunicorn config writes it; an app started another way offers only the upload)."""
    with current_app.extensions["tlbench.database"].transaction() as session:
        has_sample = ops.sample_dataset(session) is not None
    return render_template("index.html", has_sample=has_sample)


@pages.get("/benchmarks/new")
def new_benchmark():
    """The form that uploads or picks a dataset and submits a benchmark."""
    return render_template("new_benchmark.html")


@pages.get("/benchmarks/<int:benchmark_id>")
def benchmark(benchmark_id: int):
    """One benchmark's live comparison table and charts."""
    return render_template("benchmark.html", benchmark_id=benchmark_id)


@pages.get("/benchmarks/<int:benchmark_id>/predict")
def predict(benchmark_id: int):
    """Classify one uploaded image with every finished model of a benchmark."""
    return render_template("predict.html", benchmark_id=benchmark_id)


@pages.get("/jobs/<int:job_id>")
def job(job_id: int):
    """One job's curves, configuration, artifacts and controls."""
    return render_template("job.html", job_id=job_id)


@pages.get("/workers")
def workers():
    """The worker pool and what each worker is doing."""
    return render_template("workers.html")


@pages.get("/vendor/plotly.min.js")
def plotly_bundle():
    """The chart library, from the installed plotly package."""
    return send_file(PLOTLY_BUNDLE, mimetype="text/javascript", max_age=VENDOR_MAX_AGE_SECONDS)
