"""How often the stack's clients poll it: the CLI's `--wait` and the pages' scripts (the server's keep-alive
must outlast the slowest)."""
from __future__ import annotations

import re
from pathlib import Path

from tlbench.progress import POLL_SECONDS

STATIC = Path(__file__).resolve().parents[1] / "dashboard" / "static"


def slowest_poll_seconds() -> float:
    """The longest wait between two polls of any client: the CLI's `--wait`, or a page's script."""
    page_intervals = [int(ms) / 1000 for script in STATIC.glob("*.js")
                      for ms in re.findall(r"const \w*(?:POLL|REFRESH)\w*_MS = (\d+);", script.read_text())]
    assert page_intervals, "no poll interval found in the pages' scripts"
    return max(POLL_SECONDS, *page_intervals)
