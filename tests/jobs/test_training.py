import csv
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from imagegen import make_image_folder

from jobs.datasets import scan_dataset
from jobs.spec import JobSpec
from jobs.training import HISTORY_COLUMNS, run_job

ARTIFACTS = ("model.keras", "model.json", "model.weights.h5", "history.csv", "labels.json", "summary.json")
SUMMARY_KEYS = {
    "best_val_accuracy",
    "best_val_loss",
    "best_epoch",
    "epochs_run",
    "stopped_early",
    "cancelled",
    "train_seconds",
    "params_total",
    "params_trainable",
    "model_bytes",
    "latency_ms_per_image",
    "n_train",
    "n_validation",
    "image_size",
    "classes",
    "feature_cache",
    "peak_memory_bytes",
    "precision",
    "phase_seconds",
    "resumed_after_epoch",
}


def tiny_spec(**changes) -> JobSpec:
    """Two epochs of VGG16 from random weights on 32 px images."""
    settings = dict(
        backbone="VGG16", image_size=32, epochs=2, batch_size=8, learning_rate=1e-3, patience=5, weights="none"
    )
    return JobSpec(**{**settings, **changes})


@pytest.fixture(scope="module")
def finished_job(small_dataset, tmp_path_factory, make_reporter):
    """One plain two-epoch job, shared by the tests that only read its results."""
    artifact_dir = tmp_path_factory.mktemp("artifacts")
    reporter = make_reporter()
    summary = run_job(tiny_spec(), small_dataset, artifact_dir, tmp_path_factory.mktemp("cache"), reporter)
    return summary, reporter, artifact_dir


def test_reports_every_epoch_and_phase(finished_job):
    _, reporter, _ = finished_job
    assert [epoch for epoch, _ in reporter.epochs] == [1, 2]
    assert set(reporter.epochs[0][1]) == set(HISTORY_COLUMNS) - {"epoch"}
    assert reporter.messages[:4] == ["decoding images", "building model", "computing features", "training"]


def test_writes_every_artifact(finished_job, small_dataset):
    summary, reporter, artifact_dir = finished_job
    for name in ARTIFACTS:
        assert (artifact_dir / name).is_file(), name
    tensorboard_expected = keras.backend.backend() == "tensorflow" and importlib.util.find_spec("tensorboard")
    assert (artifact_dir / "tensorboard").is_dir() == bool(tensorboard_expected)
    with (artifact_dir / "history.csv").open() as history:
        rows = list(csv.DictReader(history))
    assert tuple(rows[0]) == HISTORY_COLUMNS and [row["epoch"] for row in rows] == ["1", "2"]
    assert json.loads((artifact_dir / "labels.json").read_text()) == small_dataset.classes
    assert json.loads((artifact_dir / "summary.json").read_text()) == summary


def test_summary_describes_the_best_epoch(finished_job, small_dataset):
    summary, reporter, artifact_dir = finished_job
    assert set(summary) == SUMMARY_KEYS
    best = max(reporter.epochs, key=lambda epoch: epoch[1]["val_accuracy"])
    assert summary["best_epoch"] == best[0] and summary["best_val_loss"] == best[1]["val_loss"]
    assert summary["epochs_run"] == 2 and not summary["stopped_early"] and not summary["cancelled"]
    assert summary["n_train"] + summary["n_validation"] == len(small_dataset.files)
    assert summary["model_bytes"] == (artifact_dir / "model.keras").stat().st_size
    assert 0 < summary["params_trainable"] < summary["params_total"]
    assert summary["latency_ms_per_image"] > 0


def test_saved_model_loads_safely_and_predicts_probabilities(finished_job, small_dataset):
    _, _, artifact_dir = finished_job
    image = np.random.default_rng(0).integers(0, 256, size=(1, 32, 32, 3), dtype=np.uint8)
    model = keras.saving.load_model(artifact_dir / "model.keras")
    probabilities = model.predict_on_batch(image)
    assert probabilities.shape == (1, len(small_dataset.classes))
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    rebuilt = keras.models.model_from_json((artifact_dir / "model.json").read_text())
    rebuilt.load_weights(artifact_dir / "model.weights.h5")
    np.testing.assert_allclose(rebuilt.predict_on_batch(image), probabilities, atol=1e-6)


def test_cancelling_stops_after_the_current_epoch(small_dataset, tmp_path, make_reporter):
    reporter = make_reporter(stop_after=1)
    summary = run_job(tiny_spec(epochs=3), small_dataset, tmp_path / "artifacts", tmp_path / "cache", reporter)
    assert len(reporter.epochs) == 1
    assert summary["cancelled"] and not summary["stopped_early"] and summary["epochs_run"] == 1
    assert (tmp_path / "artifacts" / "model.keras").is_file()


def test_early_stopping_ends_a_job_that_stops_improving(small_dataset, tmp_path, reporter):
    spec = tiny_spec(epochs=4, patience=1, learning_rate=0.0)
    summary = run_job(spec, small_dataset, tmp_path / "artifacts", tmp_path / "cache", reporter)
    assert summary["epochs_run"] == 2 and summary["stopped_early"] and summary["best_epoch"] == 1


def test_fine_tuning_continues_the_epochs_at_a_tenth_of_the_rate(small_dataset, tmp_path, reporter, make_reporter):
    spec = tiny_spec(epochs=3, fine_tune_layers=2)
    summary = run_job(spec, small_dataset, tmp_path / "artifacts", tmp_path / "cache", reporter)
    assert [epoch for epoch, _ in reporter.epochs] == [1, 2, 3]
    rates = [metrics["learning_rate"] for _, metrics in reporter.epochs]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4])
    head_only = run_job(tiny_spec(epochs=1), small_dataset, tmp_path / "head", tmp_path / "cache", make_reporter())
    assert summary["params_trainable"] > head_only["params_trainable"]


def test_augmentation_runs_and_saves(small_dataset, tmp_path, reporter):
    spec = tiny_spec(backbone="MobileNetV3Small", augment=True)
    run_job(spec, small_dataset, tmp_path / "artifacts", tmp_path / "cache", reporter)
    model = keras.saving.load_model(tmp_path / "artifacts" / "model.keras")
    assert any(isinstance(layer, keras.layers.RandomFlip) for layer in model.layers)


def test_refuses_a_split_without_validation_images(tmp_path, reporter):
    dataset = scan_dataset(make_image_folder(tmp_path / "images", per_class=1))
    with pytest.raises(ValueError, match="0 validation images"):
        run_job(tiny_spec(), dataset, tmp_path / "artifacts", tmp_path / "cache", reporter)


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="jax is not installed")
def test_training_tests_pass_on_the_jax_backend():
    # The backend is chosen when Keras is imported, so the other tests of this module rerun in a fresh process.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "not jax_backend"]
    result = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_mixed_precision_on_request_keeps_probabilities_in_float32(small_dataset, tmp_path, reporter):
    summary = run_job(tiny_spec(epochs=1, mixed_precision=True), small_dataset, tmp_path / "artifacts",
                      tmp_path / "cache", reporter)
    assert summary["precision"] == "mixed_bfloat16"
    model = keras.saving.load_model(tmp_path / "artifacts" / "model.keras")
    assert model.get_layer("probabilities").dtype_policy.compute_dtype == "float32"
    assert summary["best_val_accuracy"] >= 0


def test_summary_times_each_phase(finished_job):
    summary, reporter, _ = finished_job
    assert list(summary["phase_seconds"]) == reporter.messages
    assert all(seconds >= 0 for seconds in summary["phase_seconds"].values())


def test_a_cpu_defaults_to_float32(finished_job):
    summary, _, _ = finished_job
    assert summary["precision"] == "float32"
