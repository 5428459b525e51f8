"""Plain functions of the tests (no pytest fixtures) that the benchmark reuses; tests/ is not a package."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from imagegen import CLASS_COLOURS, coloured_image, make_image_folder  # noqa: E402
from stackutil import running_stack, wait_until  # noqa: E402

__all__ = ["CLASS_COLOURS", "coloured_image", "make_image_folder", "running_stack", "wait_until"]
