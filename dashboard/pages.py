"""HTML pages; they read the same JSON API that external clients use."""
from __future__ import annotations

from flask import Blueprint, render_template

pages = Blueprint("pages", __name__)


@pages.get("/")
def index():
    """The benchmarks list, filled in by the page's script from /api/v1/benchmarks."""
    return render_template("index.html")
