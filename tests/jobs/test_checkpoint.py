"""A job whose process dies resumes after its last finished epoch and ends as if nothing happened."""

import pytest
from jobs.checkpoint import CHECKPOINT_FOLDER
from jobs.spec import JobSpec
from jobs.training import run_job

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


class ProcessKilled(BaseException):
    """Stands for SIGKILL: no `except Exception` sees it, so nothing is cleaned up."""


@pytest.fixture(scope="session")
def dying_reporter(make_reporter):
    """A recording reporter that dies (or fails) while reporting a given epoch, after its checkpoint."""

    class DyingReporter(make_reporter):
        def __init__(self, dies_at: int | None = None, fails_at: int | None = None, in_trial: int = 0):
            super().__init__()
            self.dies_at, self.fails_at, self.in_trial = dies_at, fails_at, in_trial

        def record_epochs(self, epoch: int, rows: dict[int, dict]) -> None:
            if epoch == self.dies_at and self.in_trial in rows:
                raise ProcessKilled
            if epoch == self.fails_at:
                raise RuntimeError("the disk is full")
            super().record_epochs(epoch, rows)

    return DyingReporter


def spec(**changes) -> JobSpec:
    settings = dict(backbone="VGG16", image_size=32, epochs=4, batch_size=8, learning_rate=1e-3, patience=10,
                    weights="none", seed=5)
    return JobSpec(**{**settings, **changes})


TRIALS = {"learning_rate": (1e-3, 1e-2), "repeats": 2, "test_split": 0.25, "validation_split": 0.15}


@pytest.mark.parametrize("changes, dies_at, in_trial", [
    ({}, 2, 0),  # the head on cached features
    ({"feature_cache": False}, 3, 0),  # the seed's end-to-end loop
    ({"fine_tune_layers": 2}, 1, 0),  # in the head phase of a fine-tuning job
    ({"fine_tune_layers": 2}, 3, 0),  # in its fine-tuning phase
    (TRIALS, 2, 3),  # the stacked heads of four trials
    ({**TRIALS, "repeats": 1, "feature_cache": False}, 2, 1),  # in the second of two end-to-end trials
])
def test_a_killed_job_resumes_after_its_last_epoch_with_the_same_result(changes, dies_at, in_trial, small_dataset,
                                                                         tmp_path, make_reporter, dying_reporter):
    cache = tmp_path / "cache"
    uninterrupted = make_reporter()
    expected = run_job(spec(**changes), small_dataset, tmp_path / "whole", cache, uninterrupted)

    artifacts = tmp_path / "interrupted"
    with pytest.raises(ProcessKilled):
        run_job(spec(**changes), small_dataset, artifacts, cache, dying_reporter(dies_at=dies_at, in_trial=in_trial))
    assert list((artifacts / CHECKPOINT_FOLDER).rglob("state.json"))
    resumed = make_reporter()
    summary = run_job(spec(**changes), small_dataset, artifacts, cache, resumed)

    assert summary["resumed_after_epoch"] == dies_at
    assert [row["epoch"] for row in resumed.resumed_from[in_trial]] == list(range(1, dies_at + 1))
    assert sorted(resumed.trial_epochs) == sorted(uninterrupted.trial_epochs)
    for number, whole_epochs in uninterrupted.trial_epochs.items():
        assert [epoch for epoch, _ in resumed.trial_epochs[number]] == [epoch for epoch, _ in whole_epochs] == [1, 2, 3, 4]
        for (_, after_resume), (_, whole) in zip(resumed.trial_epochs[number], whole_epochs, strict=True):
            for metric in METRICS:
                assert after_resume[metric] == pytest.approx(whole[metric], rel=1e-4, abs=1e-5), (number, metric)
    assert summary["best_epoch"] == expected["best_epoch"]
    assert summary["selected_trial"] == expected["selected_trial"]
    assert summary["test"] == expected["test"]
    assert summary["best_val_accuracy"] == pytest.approx(expected["best_val_accuracy"])
    assert not (artifacts / CHECKPOINT_FOLDER).exists()  # the job ended: nothing left to resume


def test_a_job_that_fails_leaves_no_checkpoint_so_a_retry_starts_over(small_dataset, tmp_path, make_reporter,
                                                                         dying_reporter):
    artifacts = tmp_path / "artifacts"
    with pytest.raises(RuntimeError, match="disk is full"):
        run_job(spec(), small_dataset, artifacts, tmp_path / "cache", dying_reporter(fails_at=2))
    assert not (artifacts / CHECKPOINT_FOLDER).exists()
    retried = make_reporter()
    summary = run_job(spec(), small_dataset, artifacts, tmp_path / "cache", retried)
    assert retried.resumed_from == {0: []} and summary["resumed_after_epoch"] is None
    assert [epoch for epoch, _ in retried.epochs] == [1, 2, 3, 4]
