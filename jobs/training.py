"""Run one job: decode and split the images, train the seed recipe, save artifacts, summarise.

Keras is imported inside the functions so that importing this module never loads TensorFlow.
"""

import csv
import importlib.util
import json
import math
import shutil
import statistics
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from jobs.backbones import get_backbone
from jobs.checkpoint import CHECKPOINT_FOLDER, FINE_TUNE_PHASE, HEAD_PHASE, Checkpoint
from jobs.datasets import ScannedDataset
from jobs.features import copy_head_weights, feature_cache_path, head_for, pooled_features, uses_feature_cache
from jobs.images import load_uint8_images
from jobs.memory import peak_memory_bytes, reset_peak_memory
from jobs.model import (
    WeightsUnavailable,
    precision_policy,
    build_base,
    build_classifier,
    compile_classifier,
    unfreeze_top_layers,
)
from jobs.spec import JobSpec
from jobs.splits import split_indices

__all__ = ["ArtifactWriteError", "AttemptSuperseded", "Reporter", "WeightsUnavailable", "run_job"]

HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
    "images_per_second",
)
FIT_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
FINE_TUNE_LEARNING_RATE_DIVISOR = 10
LATENCY_WARM_UP_CALLS = 2
# The weights file inside a .keras archive (Keras' saving format), and the chunk it is copied in.
KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"
COPY_CHUNK_BYTES = 2**22
LATENCY_TIMED_CALLS = 7


class ArtifactWriteError(OSError):
    """The artifacts could not be written (disk full, folder gone, ...)."""


class AttemptSuperseded(RuntimeError):
    """Raised by a reporter when another attempt now owns the job: this one must stop and touch nothing."""


class Reporter(Protocol):
    """What a job tells the outside world while it runs (the worker stores it in the database)."""

    def resume_from(self, rows: list[dict]) -> None:
        """The job starts after these epoch rows (none for a fresh start): forget any later ones."""

    def record_epoch(self, epoch: int, metrics: dict) -> None:
        """Store the metrics of one finished epoch (1-based)."""

    def progress(self, message: str) -> None:
        """Show which phase the job is in."""

    def should_stop(self) -> bool:
        """True once the job has been cancelled."""


@dataclass
class TrainingData:
    """Every image (uint8, dataset order, memory-mapped), one-hot labels, and the benchmark's split."""

    images: np.ndarray
    labels: np.ndarray
    train_index: np.ndarray
    validation_index: np.ndarray

    def split(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(train inputs, train labels, validation inputs, validation labels) of inputs in dataset order."""
        return (inputs[self.train_index], self.labels[self.train_index],
                inputs[self.validation_index], self.labels[self.validation_index])


class EpochRecorder:
    """Times each epoch, hands its metrics to the reporter and stops training on cancellation."""

    def __init__(self, reporter: Reporter, train_count: int, checkpoint: Checkpoint):
        """Report on the model being fitted (set by _fit), which trains on train_count images per epoch.

        Each epoch is checkpointed before it is reported, so a reported epoch is never lost.
        """
        self.reporter = reporter
        self.model = None
        self.train_count = train_count
        self.checkpoint = checkpoint
        self.rows: list[dict] = list(checkpoint.state.rows)
        self.resumed_after_epoch = len(self.rows) if checkpoint.resumed else None
        self.cancelled = False
        self._epoch_started = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        """Start the epoch's clock."""
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """Record the epoch, then check for cancellation."""
        import keras

        seconds = time.perf_counter() - self._epoch_started
        metrics = {name: float(logs[name]) for name in FIT_METRICS}
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        metrics["seconds"] = seconds
        metrics["images_per_second"] = self.train_count / seconds
        self.rows.append({"epoch": epoch + 1, **metrics})
        self.checkpoint.save_epoch(self.model, self.rows)
        self.reporter.record_epoch(epoch + 1, metrics)
        if self.reporter.should_stop():
            self.cancelled = True
            self.model.stop_training = True

    def callback(self):
        """This recorder as a Keras callback."""
        import keras

        return keras.callbacks.LambdaCallback(on_epoch_begin=self.on_epoch_begin, on_epoch_end=self.on_epoch_end)


def load_training_data(spec: JobSpec, dataset: ScannedDataset, cache_dir: Path) -> TrainingData:
    """Decoded images (from the shared cache) split the same way for every job of a benchmark."""
    images = load_uint8_images(dataset.root, dataset.files, spec.image_size, cache_dir, dataset.sha256)
    train, validation = split_indices(dataset.files, spec.validation_split, spec.seed)
    if not train.size or not validation.size:
        raise ValueError(
            f"the split leaves {train.size} training and {validation.size} validation images; both must be non-empty"
        )
    labels = np.array([image_file.label for image_file in dataset.files])
    one_hot = np.eye(len(dataset.classes), dtype=np.float32)[labels]
    return TrainingData(images, one_hot, train, validation)


def shuffled_batches(inputs: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
    """Training batches in an order fixed by the seed and the epoch number alone.

    Both ways of training (images end to end, or cached features) see the same batches in the same
    order, so they reach the same weights, and a job resumed at epoch n sees what it would have seen.
    Fit with shuffle=False and the dataset's callback(): Keras would otherwise reorder the batches
    with the global random state, and it calls on_epoch_end once more than there are epochs.
    """
    import keras

    class ShuffledBatches(keras.utils.PyDataset):
        """A seeded permutation per epoch, chosen as each epoch begins."""

        def __init__(self):
            super().__init__()
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            self.order = np.random.default_rng([seed, epoch]).permutation(len(inputs))

        def __len__(self) -> int:
            return math.ceil(len(inputs) / batch_size)

        def __getitem__(self, index: int):
            chosen = self.order[index * batch_size:(index + 1) * batch_size]
            return inputs[chosen], labels[chosen]

        def callback(self):
            """The Keras callback that tells this dataset which epoch begins."""
            return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: self.set_epoch(epoch))

    return ShuffledBatches()


def early_stopping(patience: int, resumed: tuple | None = None):
    """Keras' EarlyStopping on val_accuracy, restoring the best weights at the end.

    resumed = (best value, best epoch, epochs waited, best weights) continues a phase interrupted
    by a dead worker exactly where it stood.
    """
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if resumed is not None:
                self.best, self.best_epoch, self.wait, self.best_weights = resumed

    return ResumableEarlyStopping(monitor="val_accuracy", patience=patience, restore_best_weights=True)


def _resume_phase(model, checkpoint: Checkpoint) -> tuple:
    """Load the checkpoint's last epoch into model; early stopping's state, as early_stopping takes it."""
    state = checkpoint.state
    rows = state.phase_rows()
    best_value = max(row["val_accuracy"] for row in rows)
    best_index = next(index for index, row in enumerate(rows) if row["val_accuracy"] == best_value)
    best_weights = checkpoint.weights_of(model, state.best)
    checkpoint.restore_latest(model)
    return best_value, state.phase_start + best_index, len(rows) - 1 - best_index, best_weights


def _callbacks(spec: JobSpec, recorder: EpochRecorder, artifact_dir: Path, resumed: tuple | None) -> list:
    """Reporting, early stopping and, on TensorFlow only, TensorBoard logs."""
    import keras

    callbacks = [recorder.callback(), early_stopping(spec.patience, resumed)]
    # TensorBoard's writer is TensorFlow code that needs the tensorboard package, which TensorFlow no
    # longer installs; without either, no tensorboard/ folder is written.
    if keras.backend.backend() == "tensorflow" and importlib.util.find_spec("tensorboard"):
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(artifact_dir / "tensorboard")))
    return callbacks


def _fit(model, inputs: np.ndarray, spec: JobSpec, data: TrainingData, recorder: EpochRecorder,
         artifact_dir: Path, last_epoch: int, phase: str):
    """Train `model` on `inputs` (images or features, dataset order) up to last_epoch.

    A phase the checkpoint has epochs of continues from its last one.
    """
    train_inputs, train_labels, validation_inputs, validation_labels = data.split(inputs)
    recorder.model = model
    resumed = _resume_phase(model, recorder.checkpoint) if recorder.checkpoint.resumes(phase) else None
    batches = shuffled_batches(train_inputs, train_labels, spec.batch_size, spec.seed)
    model.fit(
        batches,
        shuffle=False,
        validation_data=(validation_inputs, validation_labels),
        validation_batch_size=spec.batch_size,
        initial_epoch=len(recorder.rows),
        epochs=last_epoch,
        callbacks=[batches.callback(), *_callbacks(spec, recorder, artifact_dir, resumed)],
        verbose=0,
    )


def _best_val_accuracy(rows: list[dict]) -> float:
    """Highest validation accuracy among the epoch rows."""
    return max(row["val_accuracy"] for row in rows)


def _fine_tune(model, base, spec: JobSpec, data: TrainingData, recorder: EpochRecorder, artifact_dir: Path):
    """Unfreeze the top of the base and train on at a tenth of the learning rate, keeping the best weights."""
    checkpoint = recorder.checkpoint
    if checkpoint.in_phase(FINE_TUNE_PHASE):  # resumed during fine-tuning
        head_weights = checkpoint.weights_of(model, checkpoint.state.head_weights)
    else:
        head_weights = model.get_weights()
        checkpoint.start_fine_tuning(model, recorder.rows)
    head_rows = checkpoint.state.phase_start
    unfreeze_top_layers(base, spec.fine_tune_layers)
    compile_classifier(model, spec.learning_rate / FINE_TUNE_LEARNING_RATE_DIVISOR)
    _fit(model, data.images, spec, data, recorder, artifact_dir, last_epoch=spec.epochs, phase=FINE_TUNE_PHASE)
    # EarlyStopping restored the best fine-tuning epoch; the head alone may still have been better.
    if _best_val_accuracy(recorder.rows[head_rows:]) <= _best_val_accuracy(recorder.rows[:head_rows]):
        model.set_weights(head_weights)


def _train_head_on_features(model, spec: JobSpec, data: TrainingData, recorder: EpochRecorder,
                            artifact_dir: Path, features: np.ndarray) -> None:
    """Train only the head, on the base's cached features, then give the classifier the trained weights."""
    head = head_for(model, features.shape[1], spec.learning_rate)
    _fit(head, features, spec, data, recorder, artifact_dir, last_epoch=spec.epochs, phase=HEAD_PHASE)
    copy_head_weights(head, model)


def train(model, base, spec: JobSpec, data: TrainingData, recorder: EpochRecorder, artifact_dir: Path,
          features: np.ndarray | None = None) -> None:
    """Train the head on the frozen base (on `features` when given); with fine_tune_layers, fine-tune after.

    The head phase gets ceil(epochs / 2) epochs (fewer if early stopping ends it) and fine-tuning
    the rest, so the two phases together never exceed spec.epochs and epoch numbers continue.
    """
    if features is not None:
        _train_head_on_features(model, spec, data, recorder, artifact_dir, features)
        return
    head_epochs = math.ceil(spec.epochs / 2) if spec.fine_tune_layers > 0 else spec.epochs
    compile_classifier(model, spec.learning_rate)
    if not recorder.checkpoint.in_phase(FINE_TUNE_PHASE):
        _fit(model, data.images, spec, data, recorder, artifact_dir, last_epoch=head_epochs, phase=HEAD_PHASE)
    if spec.fine_tune_layers > 0 and not recorder.cancelled and len(recorder.rows) < spec.epochs:
        _fine_tune(model, base, spec, data, recorder, artifact_dir)


def latency_ms_per_image(model, image: np.ndarray) -> float:
    """Median milliseconds of a single-image prediction, after warm-up calls that compile it."""
    batch = image[np.newaxis]
    for _ in range(LATENCY_WARM_UP_CALLS):
        model.predict_on_batch(batch)
    timings = []
    for _ in range(LATENCY_TIMED_CALLS):
        started = time.perf_counter()
        model.predict_on_batch(batch)
        timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings)


def _save_model(model, artifact_dir: Path) -> None:
    """The model as one .keras file, and as architecture JSON plus .h5 weights like the seed.

    The .keras archive holds the weights as the very .weights.h5 file save_weights writes, so that
    file is copied out rather than serialised a second time (up to 0.5 s a job on a CPU).
    """
    _write_artifact(artifact_dir / "model.keras", model.save)
    _write_artifact(artifact_dir / "model.json", lambda path: path.write_text(model.to_json()))
    _write_artifact(artifact_dir / "model.weights.h5", lambda path: _copy_weights_out(artifact_dir / "model.keras", path))


def _copy_weights_out(keras_file: Path, destination: Path) -> None:
    """Copy the weights file a .keras archive holds."""
    with zipfile.ZipFile(keras_file) as archive, archive.open(KERAS_ARCHIVE_WEIGHTS) as weights:
        with destination.open("wb") as copy:
            shutil.copyfileobj(weights, copy, COPY_CHUNK_BYTES)


def _write_artifact(path: Path, write) -> None:
    """write(path); a failure (a full disk, say) becomes an error naming the file and the reason."""
    try:
        write(path)
    except OSError as error:
        raise ArtifactWriteError(f"could not write {path}: {error.strerror or error}") from error


def _write_history(rows: list[dict], path: Path) -> None:
    """One CSV row per epoch."""
    with path.open("w", newline="") as history:
        writer = csv.DictWriter(history, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _summary(spec, dataset, model, data, recorder, train_seconds: float, artifact_dir: Path) -> dict:
    """The job's result: best epoch, cost, size and speed."""
    best = max(recorder.rows, key=lambda row: row["val_accuracy"])
    return {
        "best_val_accuracy": best["val_accuracy"],
        "best_val_loss": best["val_loss"],
        "best_epoch": best["epoch"],
        "epochs_run": len(recorder.rows),
        "stopped_early": not recorder.cancelled and len(recorder.rows) < spec.epochs,
        "cancelled": recorder.cancelled,
        "train_seconds": train_seconds,
        "params_total": int(model.count_params()),
        "params_trainable": int(sum(math.prod(weight.shape) for weight in model.trainable_weights)),
        "model_bytes": (artifact_dir / "model.keras").stat().st_size,
        "latency_ms_per_image": latency_ms_per_image(model, np.asarray(data.images[data.validation_index[0]])),
        "n_train": len(data.train_index),
        "n_validation": len(data.validation_index),
        "feature_cache": uses_feature_cache(spec),
        "precision": model.dtype_policy.name,
        "peak_memory_bytes": peak_memory_bytes(),
        "image_size": spec.image_size,
        "classes": list(dataset.classes),
    }


class PhaseClock:
    """Tells the reporter which phase starts, and times each one (for the summary's phase_seconds)."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        """Report `name` and time the block under it."""
        self.reporter.progress(name)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - started


def run_job(spec: JobSpec, dataset: ScannedDataset, artifact_dir: Path, cache_dir: Path, reporter: Reporter) -> dict:
    """Train spec.backbone on the dataset, write the artifacts into artifact_dir and return the summary."""
    import keras

    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    # A worker process may run several jobs: forget the previous job's models and memory peak.
    keras.backend.clear_session()
    reset_peak_memory()
    keras.utils.set_random_seed(spec.seed)
    policy = precision_policy(spec.mixed_precision)
    keras.config.set_dtype_policy(policy)
    clock = PhaseClock(reporter)
    with clock.phase("decoding images"):
        data = load_training_data(spec, dataset, Path(cache_dir))
    with clock.phase("building model"):
        backbone = get_backbone(spec.backbone)
        base = build_base(backbone, spec.image_size, spec.weights)
        model = build_classifier(base, backbone, spec, len(dataset.classes))
    checkpoint = Checkpoint(artifact_dir / CHECKPOINT_FOLDER)
    reporter.resume_from(checkpoint.state.rows)
    recorder = EpochRecorder(reporter, len(data.train_index), checkpoint)
    try:
        summary = _train_and_save(spec, dataset, data, model, base, recorder, artifact_dir,
                                  feature_cache_path(cache_dir, dataset.sha256, spec, policy), clock)
    except AttemptSuperseded:
        raise  # the checkpoint now belongs to the attempt that owns the job
    except Exception:
        checkpoint.remove()  # the job failed: a retry starts over
        raise
    # Only a worker that dies (no exception reaches here) leaves its checkpoint to resume from.
    checkpoint.remove()
    return summary


def _train_and_save(spec, dataset, data, model, base, recorder, artifact_dir: Path, features_path: Path,
                    clock: PhaseClock) -> dict:
    """Compute or load the features if they are used, train, save every artifact and summarise."""
    features = None
    if uses_feature_cache(spec):
        with clock.phase("computing features"):
            features = pooled_features(model, data.images, features_path)
    with clock.phase("training"):
        train(model, base, spec, data, recorder, artifact_dir, features)
    with clock.phase("saving artifacts"):
        _save_model(model, artifact_dir)
        _write_artifact(artifact_dir / "history.csv", lambda path: _write_history(recorder.rows, path))
        _write_artifact(artifact_dir / "labels.json", lambda path: path.write_text(json.dumps(dataset.classes)))
    train_seconds = clock.seconds["training"] + clock.seconds.get("computing features", 0.0)
    summary = _summary(spec, dataset, model, data, recorder, train_seconds, artifact_dir)
    summary["phase_seconds"] = clock.seconds
    summary["resumed_after_epoch"] = recorder.resumed_after_epoch
    _write_artifact(artifact_dir / "summary.json", lambda path: path.write_text(json.dumps(summary, indent=2)))
    return summary
