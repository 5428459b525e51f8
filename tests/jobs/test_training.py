import csv
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest

from jobs.datasets import scan_dataset
from jobs.model import accelerator_visible
from jobs.spec import JobSpec
from jobs.training import HISTORY_COLUMNS, run_job
from testsupport.images import make_image_folder

ARTIFACTS = ("model.keras", "model.json", "model.weights.h5", "history.csv", "labels.json", "summary.json")
SUMMARY_KEYS = {
    "learning_rates",
    "repeats",
    "chosen_learning_rate",
    "mean_best_val_accuracy_by_rate",
    "selected_trial",
    "trials_run",
    "test",
    "splits",
    "n_test",
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
    "evaluation",
    "reproducibility",
    "cached",
}


def tiny_spec(**changes) -> JobSpec:
    """Two epochs of VGG16 from random weights on 32 px images."""
    settings = dict(
        backbone="VGG16", image_size=32, epochs=2, batch_size=8, learning_rate=1e-3, patience=5, weights="none"
    )
    return JobSpec(**{**settings, **changes})


# bfloat16 keeps 8 bits of mantissa (a relative step of 2**-8): two runs of one model whose ops a GPU
# schedules differently may differ by a few such steps, where float32 ones agree to about 1e-7.
SAME_PREDICTION_ATOL = {"float32": 1e-6, "mixed_bfloat16": 1e-2}


@dataclass
class FinishedJob:
    """A job run once for the tests that only read its results."""

    summary: dict
    reporter: object
    artifact_dir: Path
    wall_seconds: float


DEFAULT_PRECISION, MIXED_PRECISION = None, True
PRECISION_IDS = {DEFAULT_PRECISION: "default-precision", MIXED_PRECISION: "mixed-precision"}


@pytest.fixture(scope="module", params=list(PRECISION_IDS), ids=PRECISION_IDS.get)
def finished_job(request, small_dataset, tmp_path_factory, make_reporter):
    """One plain two-epoch job at the device's default precision, and once more with mixed precision forced on
    through the spec's own switch: the results must hold on a GPU host too, where mixed precision is the default."""
    artifact_dir = tmp_path_factory.mktemp("artifacts")
    reporter = make_reporter()
    policy_before = keras.config.dtype_policy()
    started = time.perf_counter()
    summary = run_job(tiny_spec(mixed_precision=request.param), small_dataset, artifact_dir,
                      tmp_path_factory.mktemp("cache"), reporter)
    wall_seconds = time.perf_counter() - started
    # run_job sets Keras' global dtype policy (for the worker process); later tests build models of their own.
    keras.config.set_dtype_policy(policy_before)
    return FinishedJob(summary, reporter, artifact_dir, wall_seconds)


def test_reports_every_epoch_and_phase(finished_job):
    reporter = finished_job.reporter
    assert [epoch for epoch, _ in reporter.epochs] == [1, 2]
    assert set(reporter.epochs[0][1]) == set(HISTORY_COLUMNS) - {"epoch"}
    assert reporter.messages[:4] == ["decoding images", "building model", "computing features", "training"]


def test_writes_every_artifact(finished_job, small_dataset):
    summary, artifact_dir = finished_job.summary, finished_job.artifact_dir
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
    summary, reporter, artifact_dir = finished_job.summary, finished_job.reporter, finished_job.artifact_dir
    assert set(summary) == SUMMARY_KEYS
    best = max(reporter.epochs, key=lambda epoch: epoch[1]["val_accuracy"])
    assert summary["best_epoch"] == best[0] and summary["best_val_loss"] == best[1]["val_loss"]
    assert summary["best_val_accuracy"] == best[1]["val_accuracy"]
    assert summary["epochs_run"] == 2 and not summary["stopped_early"] and not summary["cancelled"]
    assert summary["n_train"] + summary["n_validation"] + summary["n_test"] == len(small_dataset.files)
    assert summary["model_bytes"] == (artifact_dir / "model.keras").stat().st_size
    assert 0 < summary["params_trainable"] < summary["params_total"]
    assert summary["latency_ms_per_image"] > 0


def test_saved_model_loads_safely_and_predicts_probabilities(finished_job, small_dataset):
    artifact_dir = finished_job.artifact_dir
    image = np.random.default_rng(0).integers(0, 256, size=(1, 32, 32, 3), dtype=np.uint8)
    model = keras.saving.load_model(artifact_dir / "model.keras")
    probabilities = keras.ops.convert_to_numpy(model.predict_on_batch(image))
    assert probabilities.shape == (1, len(small_dataset.classes)) and probabilities.dtype == np.float32
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    rebuilt = keras.models.model_from_json((artifact_dir / "model.json").read_text())
    rebuilt.load_weights(artifact_dir / "model.weights.h5")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rebuilt.predict_on_batch(image)), probabilities,
                               atol=SAME_PREDICTION_ATOL[finished_job.summary["precision"]])


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


def test_refuses_a_split_that_leaves_no_training_images(tmp_path, reporter):
    # One image a class: each goes to validation (every class gives it at least one), none is left to train on.
    dataset = scan_dataset(make_image_folder(tmp_path / "images", per_class=1))
    with pytest.raises(ValueError, match="leaves 0 training and 3 validation images"):
        run_job(tiny_spec(), dataset, tmp_path / "artifacts", tmp_path / "cache", reporter)


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="jax is not installed")
# It runs every other test of this module (about 5 min on two busy cores), not one: more than one test's limit.
@pytest.mark.timeout(900)
def test_training_tests_pass_on_the_jax_backend():
    # The backend is chosen when Keras is imported, so the other tests of this module rerun in a fresh process.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "not jax_backend"]
    result = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": "jax"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("finished_job", [MIXED_PRECISION], indirect=True, ids=PRECISION_IDS.get)
def test_mixed_precision_on_request_computes_in_bfloat16_and_keeps_probabilities_in_float32(finished_job):
    assert finished_job.summary["precision"] == "mixed_bfloat16"
    model = keras.saving.load_model(finished_job.artifact_dir / "model.keras")
    hidden = model.get_layer("head_hidden")
    assert (hidden.dtype_policy.compute_dtype, hidden.kernel.dtype) == ("bfloat16", "float32")
    assert model.get_layer("probabilities").dtype_policy.compute_dtype == "float32"
    image = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    probabilities = keras.ops.convert_to_numpy(model.predict_on_batch(image))
    assert probabilities.dtype == np.float32
    # Summed in float32, a softmax that ran in bfloat16 would miss 1 by up to a few 2**-8 steps.
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_the_selected_trials_test_is_evaluated_class_by_class_into_the_summary_and_evaluation_json(
        small_dataset, tmp_path, reporter):
    from sklearn.metrics import confusion_matrix, f1_score

    summary = run_job(tiny_spec(test_split=0.3, learning_rate=(1e-3, 3e-4)), small_dataset, tmp_path / "job",
                      tmp_path / "cache", reporter)
    saved = np.load(tmp_path / "job" / "trials" / f"{summary['selected_trial']:02d}" / "predictions.npz")
    truth = np.array([small_dataset.files[index].label for index in saved["index"]])
    labels = list(range(len(small_dataset.classes)))
    written = json.loads((tmp_path / "job" / "evaluation.json").read_text())
    assert written["confusion_matrix"] == confusion_matrix(truth, saved["predicted"], labels=labels).tolist()
    assert [row["f1"] for row in written["per_class"]] == pytest.approx(
        f1_score(truth, saved["predicted"], labels=labels, average=None, zero_division=0))
    assert summary["evaluation"] == {key: value for key, value in written.items()
                                     if key not in ("confusion_matrix", "calibration_bins")}
    # One repeat a rate: the chosen rate's one test accuracy is the selected trial's.
    assert summary["evaluation"]["accuracy"] == pytest.approx(summary["test"]["accuracies"][0])
    assert summary["evaluation"]["images"] == summary["n_test"] > 0


def test_the_summary_records_what_ran_the_job_and_on_what(finished_job, small_dataset):
    record = finished_job.summary["reproducibility"]
    assert record["keras"] == keras.__version__ and record["keras_backend"] == keras.backend.backend()
    assert record["numpy"] == np.__version__ and record["python"] == sys.version.split()[0]
    assert record["backend_version"] == importlib.metadata.version(keras.backend.backend())
    assert record["seeds"] == {"benchmark": 0, "trials": [0]}
    assert record["dataset_sha256"] == small_dataset.sha256 and record["splits"] == finished_job.summary["splits"]
    assert record["precision"] == finished_job.summary["precision"]
    assert record["device"]["kind"] == ("GPU" if accelerator_visible() else "CPU") and record["device"]["name"]
    assert record["host"] == os.uname().nodename
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert record["git_commit"].removesuffix("-dirty") == head.stdout.strip()  # the tests run from a checkout


def test_summary_times_each_phase(finished_job):
    summary = finished_job.summary
    phases = summary["phase_seconds"]
    assert list(phases) == finished_job.reporter.messages
    assert all(seconds > 0 for seconds in phases.values())
    assert sum(phases.values()) <= finished_job.wall_seconds  # the phases follow one another within the job
    assert summary["train_seconds"] == pytest.approx(phases["training"] + phases["computing features"])


@pytest.mark.parametrize("finished_job", [DEFAULT_PRECISION], indirect=True, ids=PRECISION_IDS.get)
def test_precision_defaults_to_float32_on_a_cpu_and_to_mixed_on_an_accelerator(finished_job):
    expected = "mixed_bfloat16" if accelerator_visible() else "float32"
    assert finished_job.summary["precision"] == expected
