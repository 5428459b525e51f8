"""What the browser tests share besides fixtures: how long their tiny jobs may take, a number rounded as the
pages round it, and the data a chart holds."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from playwright.sync_api import Page

# Jobs take seconds each on one CPU worker, but they queue behind one another and the worker may still be
# warming up.
TRAINING_TIMEOUT_MS = 180_000


def fixed(value: float, places: int) -> str:
    """`value` with `places` decimals, rounded as the page's toFixed rounds (exact ties away from zero)."""
    return str(Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def chart_data(page: Page, chart_id: str) -> list[dict]:
    """The traces Plotly holds for a chart div."""
    return page.evaluate("id => document.getElementById(id).data", chart_id)
