"""Run one job: decode and split the images, train the seed recipe once per trial (a learning-rate grid x
repeats), choose the learning rate on validation, test once per trial, save artifacts, summarise.

Keras is imported inside the functions so that importing this module never loads TensorFlow.
"""

import csv
import functools
import importlib.util
import json
import math
import shutil
import statistics
import time
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from jobs.backbones import get_backbone
from jobs.checkpoint import CHECKPOINT_FOLDER, FINE_TUNE_PHASE, HEAD_PHASE, Checkpoint, write_json_whole
from jobs.datasets import ScannedDataset
from jobs.environment import reproducibility_record
from jobs.evaluation import EVALUATION_FILE, evaluate, summary_part
from jobs.features import feature_cache_path, pooled_features, uses_feature_cache
from jobs.images import decoded_images_path, load_uint8_images
from jobs.memory import peak_memory_bytes, reset_peak_memory
from jobs.model import (
    POOLED_LAYER,
    WeightsUnavailable,
    build_base,
    build_classifier,
    compile_classifier,
    head_weights,
    initial_head_weights,
    precision_policy,
    set_head_weights,
    unfreeze_top_layers,
)
from jobs.spec import JobSpec, Trial, plan_trials
from jobs.splits import Split, split_hashes, split_indices
from jobs.stacked import StackedCheckpoint, StackedTrainer
from jobs.stats import accuracy_interval, pack_correct

__all__ = ["ArtifactWriteError", "AttemptSuperseded", "Reporter", "TrainsAlone", "WeightsUnavailable", "run_job",
           "run_trials"]

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

    def resume_from(self, rows: dict[Trial, list[dict]]) -> None:
        """The job's trials start after these epoch rows (none for a fresh start): forget any others."""

    def record_epochs(self, epoch: int, rows: dict[int, dict]) -> None:
        """Store the metrics of one finished epoch (1-based) of each trial named."""

    def record_trials(self, results: list[dict]) -> None:
        """Store each finished trial's result (trial_result's fields), once training is over."""

    def progress(self, message: str) -> None:
        """Show which phase the job is in."""

    def should_stop(self) -> bool:
        """True once the job has been cancelled."""

    def offer_trials(self, count: int) -> None:
        """Ask idle workers to train up to `count` of the job's trials alongside this one (run_trials)."""

    def claim_trial(self, trial: Trial) -> bool:
        """Take the trial to train it now; False when it has finished or another live worker holds it."""

    def restart_trial(self, trial: Trial, rows: list[dict]) -> None:
        """The trial just claimed goes on after these epoch rows (its checkpoint's): forget its later ones."""


class TrainsAlone:
    """The trial-sharing part of a Reporter for a job one process trains by itself: every trial is its own."""

    def offer_trials(self, count: int) -> None:
        """There is nobody to offer them to."""

    def claim_trial(self, trial: Trial) -> bool:
        """Nobody else holds a trial."""
        return True

    def restart_trial(self, trial: Trial, rows: list[dict]) -> None:
        """resume_from already kept exactly the checkpoint's epochs: nobody else recorded any since."""


@dataclass
class TrainingData:
    """Every image (uint8, dataset order, memory-mapped), one-hot labels, and the benchmark's split."""

    images: np.ndarray
    labels: np.ndarray
    split: Split

    def parts(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(train inputs, train labels, validation inputs, validation labels) of inputs in dataset order."""
        train, validation = self.split.train, self.split.validation
        return inputs[train], self.labels[train], inputs[validation], self.labels[validation]


@dataclass
class TrialOutcome:
    """What one trial ended with: its epochs, head weights and test probabilities (none without a test set)."""

    trial: Trial
    rows: list[dict]
    cancelled: bool
    head: list[np.ndarray]
    test_probabilities: np.ndarray | None

    @property
    def best_row(self) -> dict:
        """The epoch whose weights the trial kept (the first of equal validation accuracies, as early stopping keeps)."""
        return max(self.rows, key=lambda row: row["val_accuracy"])


class EpochRecorder:
    """Times each epoch, hands its metrics to the reporter and stops training on cancellation."""

    def __init__(self, reporter: Reporter, train_count: int, checkpoint: Checkpoint, trial: Trial):
        """Report `trial`'s epochs of the model being fitted (set by _fit), on train_count images per epoch.

        Each epoch is checkpointed before it is reported, so a reported epoch is never lost.
        """
        self.reporter = reporter
        self.model = None
        self.train_count = train_count
        self.checkpoint = checkpoint
        self.trial = trial
        self.rows: list[dict] = list(checkpoint.state.rows)
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
        self.reporter.record_epochs(epoch + 1, {self.trial.number: metrics})
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
    split = split_indices(dataset.files, spec.validation_split, spec.seed, spec.test_split)
    if not split.train.size or not split.validation.size:
        raise ValueError(f"the split leaves {split.train.size} training and {split.validation.size} validation "
                         "images; both must be non-empty")
    labels = np.array([image_file.label for image_file in dataset.files])
    one_hot = np.eye(len(dataset.classes), dtype=np.float32)[labels]
    return TrainingData(images, one_hot, split)


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


def tensorboard_logs(log_dir: Path, write_graph: bool = True) -> list:
    """Keras' TensorBoard callback writing to log_dir, on TensorFlow only; else none.

    TensorBoard's writer is TensorFlow code that needs the tensorboard package, which TensorFlow no
    longer installs; without either, no tensorboard/ folder is written.
    """
    import keras

    if keras.backend.backend() == "tensorflow" and importlib.util.find_spec("tensorboard"):
        return [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=write_graph)]
    return []


def _callbacks(spec: JobSpec, recorder: EpochRecorder, artifact_dir: Path, resumed: tuple | None) -> list:
    """Reporting, early stopping and TensorBoard logs (one run per trial)."""
    return [recorder.callback(), early_stopping(spec.patience, resumed),
            *tensorboard_logs(artifact_dir / TENSORBOARD_FOLDER / f"trial-{recorder.trial.number:02d}")]


def _fit(model, inputs: np.ndarray, spec: JobSpec, data: TrainingData, recorder: EpochRecorder,
         artifact_dir: Path, last_epoch: int, phase: str):
    """Train `model` on `inputs` (images, dataset order) up to last_epoch, in the batch order of the trial's seed.

    A phase the checkpoint has epochs of continues from its last one.
    """
    train_inputs, train_labels, validation_inputs, validation_labels = data.parts(inputs)
    recorder.model = model
    resumed = _resume_phase(model, recorder.checkpoint) if recorder.checkpoint.resumes(phase) else None
    batches = shuffled_batches(train_inputs, train_labels, spec.batch_size, recorder.trial.seed)
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
    compile_classifier(model, recorder.trial.learning_rate / FINE_TUNE_LEARNING_RATE_DIVISOR)
    _fit(model, data.images, spec, data, recorder, artifact_dir, last_epoch=spec.epochs, phase=FINE_TUNE_PHASE)
    # EarlyStopping restored the best fine-tuning epoch; the head alone may still have been better.
    if _best_val_accuracy(recorder.rows[head_rows:]) <= _best_val_accuracy(recorder.rows[:head_rows]):
        model.set_weights(head_weights)


def train(model, base, spec: JobSpec, data: TrainingData, recorder: EpochRecorder, artifact_dir: Path) -> None:
    """Train the recorder's trial end to end: the head on the frozen base; with fine_tune_layers, fine-tune after.

    The head phase gets ceil(epochs / 2) epochs (fewer if early stopping ends it) and fine-tuning
    the rest, so the two phases together never exceed spec.epochs and epoch numbers continue.
    """
    head_epochs = math.ceil(spec.epochs / 2) if spec.fine_tune_layers > 0 else spec.epochs
    compile_classifier(model, recorder.trial.learning_rate)
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



TRIALS_FOLDER = "trials"
TENSORBOARD_FOLDER = "tensorboard"
STACKED_CHECKPOINT = "stacked"
TRIAL_WEIGHTS = "model.weights.h5"  # an end-to-end trial's whole model, until the job chose its trial
TRIAL_OUTCOME = "outcome.json"
PREDICTIONS_FILE = "predictions.npz"  # a trial's test predictions: dataset index, predicted class, probabilities
TRIAL_TEST_PROBABILITIES = "test-probabilities.npy"  # an end-to-end trial's, until the job saved predictions.npz
# How often the job's own worker looks again at trials other workers hold, once it has none left to take.
TRIAL_WAIT_SECONDS = 2.0


def run_job(spec: JobSpec, dataset: ScannedDataset, artifact_dir: Path, cache_dir: Path, reporter: Reporter) -> dict:
    """Train spec.backbone's trials on the dataset, write the artifacts into artifact_dir and return the summary."""
    import keras

    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    # A worker process may run several jobs: forget the previous job's models and memory peak.
    keras.backend.clear_session()
    reset_peak_memory()
    policy = precision_policy(spec.mixed_precision)
    keras.config.set_dtype_policy(policy)
    clock = PhaseClock(reporter)
    features_path = feature_cache_path(cache_dir, dataset.sha256, spec, policy)
    # What the cache already held: the time-left estimates learn what computing each costs from jobs that did.
    cached = {"images": decoded_images_path(cache_dir, dataset.sha256, spec.image_size).exists(),
              "features": uses_feature_cache(spec) and features_path.exists()}
    with clock.phase("decoding images"):
        data = load_training_data(spec, dataset, Path(cache_dir))
    with clock.phase("building model"):
        model, base = build_model(spec, len(dataset.classes))
    try:
        summary = _train_and_save(spec, dataset, data, model, base, reporter, artifact_dir, features_path, clock,
                                  cached)
    except AttemptSuperseded:
        raise  # the checkpoint now belongs to the attempt that owns the job
    except Exception:
        shutil.rmtree(artifact_dir / CHECKPOINT_FOLDER, ignore_errors=True)  # the job failed: a retry starts over
        raise
    # Only a worker that dies (no exception reaches here) leaves its checkpoint to resume from.
    shutil.rmtree(artifact_dir / CHECKPOINT_FOLDER, ignore_errors=True)
    return summary


def build_model(spec: JobSpec, class_count: int):
    """(classifier, base): the base's weights come from the job's seed, the same for every trial."""
    import keras

    keras.utils.set_random_seed(spec.seed)
    backbone = get_backbone(spec.backbone)
    base = build_base(backbone, spec.image_size, spec.weights)
    return build_classifier(base, backbone, spec, class_count), base


def _feature_count(model) -> int:
    """How many pooled features the base gives the head."""
    return int(model.get_layer(POOLED_LAYER).output.shape[-1])


def _train_and_save(spec, dataset, data, model, base, reporter, artifact_dir: Path, features_path: Path,
                    clock: PhaseClock, cached: dict[str, bool]) -> dict:
    """Train every trial (together on cached features, or one by one), choose, save every artifact and summarise."""
    trials = plan_trials(spec)
    if uses_feature_cache(spec):
        with clock.phase("computing features"):
            features = pooled_features(model, data.images, features_path)
        with clock.phase("training"):
            outcomes, resumed_after = _train_stacked(spec, trials, data, features, reporter, artifact_dir)
    else:
        with clock.phase("training"):
            outcomes, resumed_after = _train_end_to_end(spec, trials, data, model, base, reporter, artifact_dir)
    with clock.phase("saving artifacts"):
        selection = choose_trial(outcomes)
        _load_selected(model, selection.outcome, artifact_dir)
        _save_model(model, artifact_dir)
        _write_artifact(artifact_dir / "history.csv", lambda path: _write_history(selection.outcome.rows, path))
        _write_artifact(artifact_dir / "labels.json", lambda path: path.write_text(json.dumps(dataset.classes)))
        results = [_save_trial(outcome, data, artifact_dir, outcome is selection.outcome) for outcome in outcomes]
        evaluation = _evaluate_selected(selection.outcome, data, dataset.classes, artifact_dir)
    reporter.record_trials(results)
    train_seconds = clock.seconds["training"] + clock.seconds.get("computing features", 0.0)
    summary = _summary(spec, dataset, model, data, selection, outcomes, train_seconds, artifact_dir)
    summary["evaluation"] = evaluation and summary_part(evaluation)
    summary["reproducibility"] = reproducibility_record(spec, plan_trials(spec), dataset.sha256, summary["splits"],
                                                        summary["precision"])
    summary["phase_seconds"] = clock.seconds
    summary["cached"] = cached
    summary["resumed_after_epoch"] = resumed_after
    _write_artifact(artifact_dir / "summary.json", lambda path: path.write_text(json.dumps(summary, indent=2)))
    return summary


def _train_stacked(spec, trials, data, features, reporter, artifact_dir: Path) -> tuple[list[TrialOutcome], int | None]:
    """Train every trial's head at once on the cached features; each ends with its best epoch's weights."""
    checkpoint = StackedCheckpoint(artifact_dir / CHECKPOINT_FOLDER / STACKED_CHECKPOINT)
    trainer = StackedTrainer(trials, features, data.labels, data.split, spec.patience, reporter, checkpoint)
    resumed_after = checkpoint.state["epochs"] if checkpoint.state else None
    reporter.resume_from({trial: list(progress.rows) for trial, progress in zip(trials, trainer.progress)})
    # The stacked heads' graph is tlbench's device, not the user's model: only the metrics are logged.
    trainer.fit(spec.epochs, spec.batch_size, tensorboard_logs(artifact_dir / TENSORBOARD_FOLDER, write_graph=False))
    probabilities = trainer.best_probabilities(features[data.split.test]) if data.split.test.size else None
    outcomes = [TrialOutcome(trial, progress.rows, trainer.cancelled, trainer.best[index],
                             None if probabilities is None else probabilities[:, index])
                for index, (trial, progress) in enumerate(zip(trials, trainer.progress)) if progress.rows]
    return outcomes, resumed_after


def _train_end_to_end(spec, trials, data, model, base, reporter, artifact_dir: Path) -> tuple[list[TrialOutcome], int | None]:
    """Train the trials through the whole model, each from the job's base and its own head seed: this worker
    takes them one at a time, and idle workers of its pool take others alongside (run_trials).

    A trial that finished keeps its outcome and weights in its folder, so a resumed job carries on with
    the trials not finished, each from its own checkpoint.
    """
    finished = [_finished_trial(trial, artifact_dir) for trial in trials]
    checkpoints = [_trial_checkpoint(artifact_dir, trial) for trial in trials]
    reporter.resume_from({trial: (done.rows if done else checkpoint.state.rows)
                          for trial, done, checkpoint in zip(trials, finished, checkpoints)})
    resumed_after = next((len(c.state.rows) for c in checkpoints if c.resumed), None)
    reporter.offer_trials(sum(done is None for done in finished) - 1)  # this worker takes one itself
    models = _models_for_trials(spec, data.labels.shape[1], (model, base))
    outcomes = _train_trials_in_turn(spec, trials, lambda: data, models, reporter, artifact_dir, wait_for_others=True)
    return outcomes, resumed_after


def run_trials(spec: JobSpec, dataset: ScannedDataset, artifact_dir: Path, cache_dir: Path, reporter: Reporter) -> None:
    """Help with a job another worker owns: train each of its end-to-end trials that nobody holds, one at a
    time, into the job's trial folders; the owner chooses among them and saves the job's artifacts.

    Keras and the images load only once a trial is claimed: the owner, which trains its first trial
    meanwhile, finds the next one taken instead of taking it too.
    """

    @functools.cache
    def data() -> TrainingData:
        import keras

        keras.backend.clear_session()
        keras.config.set_dtype_policy(precision_policy(spec.mixed_precision))
        return load_training_data(spec, dataset, Path(cache_dir))

    models = _models_for_trials(spec, len(dataset.classes))
    _train_trials_in_turn(spec, plan_trials(spec), data, models, reporter, Path(artifact_dir), wait_for_others=False)


def _models_for_trials(spec: JobSpec, class_count: int, first: tuple | None = None):
    """(model, base) for each trial in turn: `first` if given, then a new one each time, built only when asked for."""
    if first is not None:
        yield first
    while True:
        yield build_model(spec, class_count)


def _train_trials_in_turn(spec, trials, data: Callable[[], TrainingData], models, reporter, artifact_dir: Path,
                          wait_for_others: bool) -> list[TrialOutcome]:
    """Train, one at a time, each trial nobody finished or holds; the outcomes of every finished trial, in order.

    With wait_for_others (the job's own worker), wait for the trials other workers hold, taking over any
    whose worker went silent, until each has finished. Once the job is cancelled no trial starts, except
    that the job's own worker trains one if it has none yet: a cancelled job reports the epochs it ran.
    """
    outcomes: dict[int, TrialOutcome] = {}
    while True:
        held_elsewhere = False
        for trial in trials:
            done = outcomes.get(trial.number) or _finished_trial(trial, artifact_dir)
            if done is None and not reporter.claim_trial(trial):
                held_elsewhere = True
                continue
            if done is None and ((wait_for_others and not outcomes) or not reporter.should_stop()):
                done = _train_claimed(spec, trial, data(), next(models), reporter, artifact_dir)
            if done is not None:
                outcomes[trial.number] = done
        if not (wait_for_others and held_elsewhere):
            return [outcomes[trial.number] for trial in trials if trial.number in outcomes]
        time.sleep(TRIAL_WAIT_SECONDS)


def _train_claimed(spec, trial: Trial, data, model_and_base: tuple, reporter, artifact_dir: Path) -> TrialOutcome:
    """Train a trial this worker holds, from its checkpoint if it has one, and record it as done."""
    checkpoint = _trial_checkpoint(artifact_dir, trial)
    reporter.restart_trial(trial, checkpoint.state.rows)
    done = _train_one(spec, trial, data, *model_and_base, reporter, checkpoint, artifact_dir)
    reporter.record_trials([trial_result(done, data, selected=False)])  # shown done; selection comes last
    return done


def _trial_checkpoint(artifact_dir: Path, trial: Trial) -> Checkpoint:
    """Where an end-to-end trial keeps its latest epoch until it ends."""
    return Checkpoint(artifact_dir / CHECKPOINT_FOLDER / f"trial-{trial.number}")


def _train_one(spec, trial: Trial, data, model, base, reporter, checkpoint: Checkpoint, artifact_dir: Path) -> TrialOutcome:
    """Train one trial end to end from its seed's head, test its best weights and keep them in its folder."""
    import keras

    set_head_weights(model, initial_head_weights(_feature_count(model), data.labels.shape[1], trial.seed))
    keras.utils.set_random_seed(trial.seed)  # augmentation's draws
    recorder = EpochRecorder(reporter, len(data.split.train), checkpoint, trial)
    train(model, base, spec, data, recorder, artifact_dir)
    test = data.split.test
    probabilities = np.asarray(model.predict(data.images[test], batch_size=spec.batch_size, verbose=0),
                               dtype=np.float32) if test.size else None
    outcome = TrialOutcome(trial, recorder.rows, recorder.cancelled, head_weights(model), probabilities)
    folder = _trial_folder(artifact_dir, trial)
    folder.mkdir(parents=True, exist_ok=True)
    _write_artifact(folder / TRIAL_WEIGHTS, model.save_weights)
    _write_artifact(folder / "head.npz", lambda path: _save_arrays(path, outcome.head))
    if probabilities is not None:
        _write_artifact(folder / TRIAL_TEST_PROBABILITIES, lambda path: np.save(path, probabilities))
    # Written last, whole or not at all: once it is there, other workers take the trial as finished.
    _write_artifact(folder / TRIAL_OUTCOME, lambda path: write_json_whole(
        path, {"rows": outcome.rows, "cancelled": outcome.cancelled}))
    checkpoint.remove()
    return outcome


def _finished_trial(trial: Trial, artifact_dir: Path) -> TrialOutcome | None:
    """An end-to-end trial an earlier attempt of this job finished, or None."""
    folder = _trial_folder(artifact_dir, trial)
    try:
        saved = json.loads((folder / TRIAL_OUTCOME).read_text())
    except FileNotFoundError:
        return None
    probabilities_file = folder / TRIAL_TEST_PROBABILITIES
    probabilities = np.load(probabilities_file) if probabilities_file.exists() else None
    return TrialOutcome(trial, saved["rows"], saved["cancelled"], [], probabilities)


def _trial_folder(artifact_dir: Path, trial: Trial) -> Path:
    """Where one trial's own artifacts live."""
    return artifact_dir / TRIALS_FOLDER / f"{trial.number:02d}"


@dataclass
class Selection:
    """The chosen learning rate (best mean best validation accuracy over its repeats) and its best repeat."""

    learning_rate: float
    outcome: TrialOutcome
    repeats: list[TrialOutcome]
    mean_best_val_accuracy: dict[float, float]


def choose_trial(outcomes: list[TrialOutcome]) -> Selection:
    """Choose on validation only: the rate with the best mean, then its repeat with the best validation accuracy.

    Ties go to the rate listed first and the lowest repeat.
    """
    by_rate: dict[float, list[TrialOutcome]] = {}
    for outcome in outcomes:
        by_rate.setdefault(outcome.trial.learning_rate, []).append(outcome)
    means = {rate: statistics.fmean(o.best_row["val_accuracy"] for o in group) for rate, group in by_rate.items()}
    rate = max(means, key=means.get)
    repeats = by_rate[rate]
    selected = max(repeats, key=lambda outcome: outcome.best_row["val_accuracy"])
    return Selection(rate, selected, repeats, means)


def _load_selected(model, outcome: TrialOutcome, artifact_dir: Path) -> None:
    """Give the job's model the selected trial's weights: its head, or its whole end-to-end model."""
    weights_file = _trial_folder(artifact_dir, outcome.trial) / TRIAL_WEIGHTS
    if weights_file.exists():
        model.load_weights(weights_file)
        outcome.head = head_weights(model)
    else:
        set_head_weights(model, outcome.head)


def _save_trial(outcome: TrialOutcome, data: TrainingData, artifact_dir: Path, selected: bool) -> dict:
    """Write the trial's history, head weights and test predictions; its result as the database stores it."""
    folder = _trial_folder(artifact_dir, outcome.trial)
    folder.mkdir(parents=True, exist_ok=True)
    _write_artifact(folder / "history.csv", lambda path: _write_history(outcome.rows, path))
    if not (folder / "head.npz").exists():  # end-to-end trials wrote theirs as they finished
        _write_artifact(folder / "head.npz", lambda path: _save_arrays(path, outcome.head))
    (folder / TRIAL_WEIGHTS).unlink(missing_ok=True)  # only the selected trial keeps a whole model, as model.keras
    (folder / TRIAL_OUTCOME).unlink(missing_ok=True)
    (folder / TRIAL_TEST_PROBABILITIES).unlink(missing_ok=True)
    if outcome.test_probabilities is not None:
        _write_artifact(folder / PREDICTIONS_FILE, lambda path: _save_predictions(path, data.split.test, outcome))
    return trial_result(outcome, data, selected)


def trial_result(outcome: TrialOutcome, data: TrainingData, selected: bool) -> dict:
    """A finished trial's result as the database stores it (Reporter.record_trials)."""
    correct = _test_correct(outcome, data)
    best = outcome.best_row
    return {"number": outcome.trial.number, "cancelled": outcome.cancelled, "selected": selected,
            "best_val_accuracy": best["val_accuracy"], "best_epoch": best["epoch"], "epochs_run": len(outcome.rows),
            "test_accuracy": None if correct is None else float(correct.mean()),
            "test_correct": None if correct is None else pack_correct(correct)}


def _evaluate_selected(outcome: TrialOutcome, data: TrainingData, classes: list[str], artifact_dir: Path) -> dict | None:
    """The selected trial's test, class by class, also written to evaluation.json; None without a test set."""
    if outcome.test_probabilities is None:
        return None
    evaluation = evaluate(data.labels[data.split.test].argmax(axis=1), outcome.test_probabilities, classes)
    _write_artifact(artifact_dir / EVALUATION_FILE, lambda path: path.write_text(json.dumps(evaluation, indent=2)))
    return evaluation


def _test_correct(outcome: TrialOutcome, data: TrainingData) -> np.ndarray | None:
    """Per test image, whether the trial's best weights predicted its class; None without a test set."""
    if outcome.test_probabilities is None:
        return None
    return outcome.test_probabilities.argmax(axis=1) == data.labels[data.split.test].argmax(axis=1)


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    """Arrays in one .npz, in order (arr_0, arr_1, ...)."""
    with path.open("wb") as destination:
        np.savez(destination, *arrays)


def _save_predictions(path: Path, test_index: np.ndarray, outcome: TrialOutcome) -> None:
    """Per test image: its index in the dataset, the predicted class and every class's probability (float16)."""
    probabilities = outcome.test_probabilities
    with path.open("wb") as destination:
        np.savez_compressed(destination, index=test_index.astype(np.int32),
                            predicted=probabilities.argmax(axis=1).astype(np.int16),
                            probabilities=probabilities.astype(np.float16))


def _test_result(selection: Selection, data: TrainingData) -> dict | None:
    """At the chosen rate: each repeat's test accuracy, their mean and its interval; None without a test set."""
    if not data.split.test.size:
        return None
    correct = np.stack([_test_correct(outcome, data) for outcome in selection.repeats])
    interval = accuracy_interval(correct)
    return {"accuracy_mean": interval.mean, "ci_low": interval.low, "ci_high": interval.high,
            "confidence": interval.confidence, "method": interval.method,
            "accuracies": [float(row.mean()) for row in correct], "images": int(data.split.test.size)}


def _summary(spec, dataset, model, data, selection: Selection, outcomes, train_seconds: float, artifact_dir: Path) -> dict:
    """The job's result: the chosen trial and its test interval, cost, size and speed."""
    best = selection.outcome.best_row
    rows = selection.outcome.rows
    cancelled = any(outcome.cancelled for outcome in outcomes)
    return {
        "best_val_accuracy": selection.mean_best_val_accuracy[selection.learning_rate],
        "best_val_loss": best["val_loss"],
        "best_epoch": best["epoch"],
        "epochs_run": len(rows),
        "stopped_early": not cancelled and len(rows) < spec.epochs,
        "cancelled": cancelled,
        "learning_rates": list(spec.learning_rates),
        "repeats": spec.repeats,
        "chosen_learning_rate": selection.learning_rate,
        "mean_best_val_accuracy_by_rate": [{"learning_rate": rate, "mean_best_val_accuracy": mean}
                                           for rate, mean in selection.mean_best_val_accuracy.items()],
        "selected_trial": selection.outcome.trial.number,
        "trials_run": len(outcomes),
        "test": _test_result(selection, data),
        "splits": split_hashes(dataset.files, data.split),
        "train_seconds": train_seconds,
        "params_total": int(model.count_params()),
        "params_trainable": int(sum(math.prod(weight.shape) for weight in model.trainable_weights)),
        "model_bytes": (artifact_dir / "model.keras").stat().st_size,
        "latency_ms_per_image": latency_ms_per_image(model, np.asarray(data.images[data.split.validation[0]])),
        "n_train": len(data.split.train),
        "n_validation": len(data.split.validation),
        "n_test": len(data.split.test),
        "feature_cache": uses_feature_cache(spec),
        "precision": model.dtype_policy.name,
        "peak_memory_bytes": peak_memory_bytes(),
        "image_size": spec.image_size,
        "classes": list(dataset.classes),
    }
