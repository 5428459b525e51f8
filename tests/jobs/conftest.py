"""Fixtures for the jobs package: generated image folders and a recording reporter."""

import pytest
from imagegen import make_image_folder

from jobs.datasets import scan_dataset


class RecordingReporter:
    """A reporter that remembers what the job told it and cancels after `stop_after` epochs."""

    def __init__(self, stop_after: int | None = None):
        """Cancel once stop_after epochs are recorded; never when None."""
        self.stop_after = stop_after
        self.epochs: list[tuple[int, dict]] = []
        self.messages: list[str] = []
        self.resumed_from: list[dict] | None = None

    def resume_from(self, rows: list[dict]) -> None:
        """Keep only the epochs before the job's starting point, as the database does."""
        self.resumed_from = rows
        self.epochs = [(row["epoch"], row) for row in rows]

    def record_epoch(self, epoch: int, metrics: dict) -> None:
        """Remember the epoch."""
        self.epochs.append((epoch, metrics))

    def progress(self, message: str) -> None:
        """Remember the message."""
        self.messages.append(message)

    def should_stop(self) -> bool:
        """Cancel once enough epochs ran."""
        return self.stop_after is not None and len(self.epochs) >= self.stop_after


@pytest.fixture
def image_folder(tmp_path):
    """Three colour classes of eight 32 px images, plus odd formats and files to skip."""
    return make_image_folder(tmp_path / "images", extras=True)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    """A scanned three-class dataset of 32 px images, shared by the tests of one module."""
    return scan_dataset(make_image_folder(tmp_path_factory.mktemp("dataset") / "images"))


@pytest.fixture(scope="session")
def make_reporter():
    """Make a RecordingReporter: make_reporter(stop_after=1) cancels after the first epoch."""
    return RecordingReporter


@pytest.fixture
def reporter():
    """A reporter that never cancels."""
    return RecordingReporter()
