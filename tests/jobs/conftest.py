"""Fixtures for the jobs package: generated image folders and a recording reporter."""

import pytest

from jobs.datasets import scan_dataset
from jobs.training import TrainsAlone
from testsupport.images import make_image_folder


class RecordingReporter(TrainsAlone):
    """A reporter that remembers what the job told it and cancels after `stop_after` epochs."""

    def __init__(self, stop_after: int | None = None):
        """Cancel once stop_after epochs are recorded; never when None."""
        self.stop_after = stop_after
        self.epochs: list[tuple[int, dict]] = []
        self.messages: list[str] = []
        self.resumed_from: dict[int, list[dict]] | None = None
        self.trial_epochs: dict[int, list[tuple[int, dict]]] = {}
        self.trial_results: list[dict] = []

    def resume_from(self, rows: dict) -> None:
        """Keep only the epochs before the job's starting point, as the database does (trial 0's in `epochs`)."""
        self.resumed_from = {trial.number: trial_rows for trial, trial_rows in rows.items()}
        self.trial_epochs = {number: [(row["epoch"], row) for row in trial_rows]
                             for number, trial_rows in self.resumed_from.items()}
        self.epochs = self.trial_epochs.get(0, [])

    def record_epochs(self, epoch: int, rows: dict[int, dict]) -> None:
        """Remember each trial's epoch; `epochs` holds trial 0's, and counts toward stop_after."""
        for number, metrics in rows.items():
            self.trial_epochs.setdefault(number, []).append((epoch, metrics))
        self.epochs = self.trial_epochs.get(0, [])

    def record_trials(self, results: list[dict]) -> None:
        """Remember the trials' results."""
        self.trial_results = results

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
