"""Train the heads of every trial of a job at once, on the cached features of its one frozen base.

Each trial's head is a slice of stacked weights (trials x features x units). One fit trains them all:
each trial sees its own batch order (its seed), its own learning rate (a per-trial Adam step) and its
loss alone reaches its slice, so a trial reaches the weights it would reach trained on its own, and
the 45 trials of a 5 x 9 grid pay one fit's overhead instead of 45. Each trial stops early on its own
validation accuracy exactly as Keras' EarlyStopping would stop it, and keeps its best epoch's weights.

Keras is imported inside the functions so that importing this module never loads TensorFlow.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from jobs.checkpoint import write_json_whole
from jobs.model import initial_head_weights
from jobs.spec import Trial

# A head step is a few small matrix products, so per-step overhead dominates: run up to this many
# steps per call (docs/performance.md).
STEPS_PER_EXECUTION = 32
EVALUATION_BATCH_SIZE = 256
# Keras clips probabilities to [EPSILON, 1 - EPSILON] before taking the log in its cross-entropy.
EPSILON = 1e-7
STATE_FILE = "state.json"


@dataclass
class TrialProgress:
    """One trial's epochs and its early-stopping state, as Keras' EarlyStopping keeps it."""

    rows: list[dict] = field(default_factory=list)
    best: float | None = None
    best_epoch: int = 0  # 0-based, as Keras counts
    wait: int = 0
    stopped: bool = False

    def update(self, epoch: int, val_accuracy: float, patience: int) -> bool:
        """Apply one epoch's result (EarlyStopping's rule, min_delta 0); True when it is the new best."""
        self.wait += 1
        if self.best is None or val_accuracy > self.best:
            self.best, self.best_epoch, self.wait = val_accuracy, epoch, 0
            return True
        if self.wait >= patience and epoch > 0:
            self.stopped = True
        return False


def _layers():
    """The stacked Dense layer and the per-trial Adam, defined once Keras is imported."""
    import keras

    class StackedDense(keras.layers.Layer):
        """A Dense layer per trial: (batch, trials, features) or shared (batch, features) in, (batch, trials, units) out."""

        def __init__(self, trials: int, units: int, activation=None, **options):
            super().__init__(**options)
            self.trials, self.units = trials, units
            self.activation = keras.activations.get(activation)

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(self.trials, input_shape[-1], self.units), initializer="zeros",
                                          name="kernel")
            self.bias = self.add_weight(shape=(self.trials, self.units), initializer="zeros", name="bias")

        def call(self, inputs):
            pattern = "bf,tfu->btu" if len(inputs.shape) == 2 else "btf,tfu->btu"
            return self.activation(keras.ops.einsum(pattern, inputs, self.kernel) + self.bias)

    class PerTrialAdam(keras.optimizers.Adam):
        """Adam whose step for trial t's slice of each stacked variable uses rates[t]."""

        def __init__(self, rates: np.ndarray, **options):
            super().__init__(learning_rate=1.0, **options)
            self.rates = np.asarray(rates, dtype=np.float32)

        def update_step(self, gradient, variable, learning_rate):
            shape = (len(self.rates),) + (1,) * (len(variable.shape) - 1)
            super().update_step(gradient, variable, learning_rate * self.rates.reshape(shape))

    return StackedDense, PerTrialAdam


def _trial_metric(function, trial: int, name: str):
    """A running-mean metric of `function` on one trial's slice of the stacked outputs."""
    import keras

    return keras.metrics.MeanMetricWrapper(lambda y_true, y_pred: function(y_true[:, trial], y_pred[:, trial]),
                                           name=name)


def build_stacked_heads(trials: list[Trial], feature_count: int, class_count: int):
    """(training model on (trials, features) batches, evaluation model on shared features), compiled, sharing weights."""
    import keras

    from jobs.model import HEAD_UNITS

    StackedDense, PerTrialAdam = _layers()
    count = len(trials)
    hidden = StackedDense(count, HEAD_UNITS, activation="relu", name="stacked_hidden")
    output = StackedDense(count, class_count, activation="softmax", dtype="float32", name="stacked_probabilities")
    per_trial = keras.Input(shape=(count, feature_count), name="trial_features")
    shared = keras.Input(shape=(feature_count,), name="features")
    training_model = keras.Model(per_trial, output(hidden(per_trial)), name="stacked_heads")
    evaluation_model = keras.Model(shared, output(hidden(shared)), name="stacked_heads_shared_input")

    def summed_trial_losses(y_true, y_pred):
        # Keras averages over batch and trials; times the trial count, each trial's gradient is its own mean loss's.
        return count * keras.losses.categorical_crossentropy(y_true, y_pred)

    metrics = [metric for trial in range(count) for metric in (
        _trial_metric(keras.losses.categorical_crossentropy, trial, f"loss_{trial}"),
        _trial_metric(keras.metrics.categorical_accuracy, trial, f"accuracy_{trial}"))]
    training_model.compile(optimizer=PerTrialAdam([trial.learning_rate for trial in trials]),
                           loss=summed_trial_losses, metrics=metrics, steps_per_execution=STEPS_PER_EXECUTION)
    set_stacked_weights(training_model, [initial_head_weights(feature_count, class_count, trial.seed)
                                         for trial in trials])
    return training_model, evaluation_model


def set_stacked_weights(model, per_trial: list[list[np.ndarray]]) -> None:
    """Set every trial's head weights (each in initial_head_weights' order)."""
    stacked = [np.stack([weights[index] for weights in per_trial]) for index in range(4)]
    model.get_layer("stacked_hidden").set_weights(stacked[:2])
    model.get_layer("stacked_probabilities").set_weights(stacked[2:])


def stacked_weights(model) -> list[np.ndarray]:
    """[hidden kernels, hidden biases, output kernels, output biases], each with the trials first."""
    return [np.asarray(weight) for name in ("stacked_hidden", "stacked_probabilities")
            for weight in model.get_layer(name).get_weights()]


def trial_batches(features: np.ndarray, labels: np.ndarray, seeds: list[int], batch_size: int):
    """Training batches of shape (batch, trials, features): trial t's batches in the order its seed fixes.

    Each trial sees exactly the batches jobs.training.shuffled_batches gives it alone (same seed, same epoch).
    """
    import keras

    class TrialBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            self.orders = np.stack([np.random.default_rng([seed, epoch]).permutation(len(features)) for seed in seeds])

        def __len__(self) -> int:
            return math.ceil(len(features) / batch_size)

        def __getitem__(self, index: int):
            chosen = self.orders[:, index * batch_size:(index + 1) * batch_size]
            return features[chosen].swapaxes(0, 1), labels[chosen].swapaxes(0, 1)

        def callback(self):
            return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs=None: self.set_epoch(epoch))

    return TrialBatches()


def evaluate(evaluation_model, features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-trial (cross-entropy, accuracy) on shared inputs, and the probabilities (images, trials, classes)."""
    probabilities = np.asarray(evaluation_model.predict(features, batch_size=EVALUATION_BATCH_SIZE, verbose=0),
                               dtype=np.float32)
    truth = labels.argmax(axis=1)
    normalised = probabilities / probabilities.sum(axis=2, keepdims=True)
    picked = np.clip(normalised[np.arange(len(truth)), :, truth], EPSILON, 1 - EPSILON)
    losses = -np.log(picked).mean(axis=0)
    accuracies = (probabilities.argmax(axis=2) == truth[:, None]).mean(axis=0)
    return losses, accuracies, probabilities


class StackedCheckpoint:
    """After every epoch: the stacked weights with their optimizer state, each trial's best weights and
    early-stopping state. state.json is written last and names the files that belong together."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            self.state = json.loads((self.folder / STATE_FILE).read_text())
        except FileNotFoundError:
            self.state = None

    def save(self, model, progress: list[TrialProgress], best: list[list[np.ndarray]], epoch: int,
             best_changed: bool) -> None:
        """Save the weights after `epoch` (1-based), and the best weights if any trial improved."""
        self.folder.mkdir(parents=True, exist_ok=True)
        latest = f"epoch-{epoch}.weights.h5"
        model.save_weights(self.folder / latest)
        best_file = self.state["best"] if self.state and not best_changed else f"best-{epoch}.npz"
        if best_changed or not self.state:
            with (self.folder / best_file).open("wb") as destination:
                np.savez(destination, *[weight for weights in best for weight in weights])
        state = {"latest": latest, "best": best_file, "epochs": epoch, "trials": [asdict(p) for p in progress]}
        write_json_whole(self.folder / STATE_FILE, state)
        self.state = state
        for path in self.folder.iterdir():
            if path.name not in {STATE_FILE, latest, best_file}:
                path.unlink(missing_ok=True)

    def restore(self, model) -> tuple[list[TrialProgress], list[list[np.ndarray]]]:
        """Load the latest weights into the compiled model; each trial's progress and best weights."""
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.folder / self.state["latest"])
        with np.load(self.folder / self.state["best"]) as saved:
            flat = [saved[f"arr_{index}"] for index in range(len(saved.files))]
        best = [flat[index:index + 4] for index in range(0, len(flat), 4)]
        return [TrialProgress(**trial) for trial in self.state["trials"]], best


class StackedTrainer:
    """Fits the stacked heads epoch by epoch, recording each trial's rows and stopping each on its own."""

    def __init__(self, trials: list[Trial], features: np.ndarray, labels: np.ndarray, split, patience: int,
                 reporter, checkpoint: StackedCheckpoint):
        self.trials, self.labels, self.split, self.patience = trials, labels, split, patience
        self.reporter, self.checkpoint = reporter, checkpoint
        self.train_features = features[split.train]
        self.validation_features = features[split.validation]
        self.model, self.evaluation_model = build_stacked_heads(trials, features.shape[1], labels.shape[1])
        initial = [initial_head_weights(features.shape[1], labels.shape[1], trial.seed) for trial in trials]
        self.progress, self.best = [TrialProgress() for _ in trials], initial
        if checkpoint.state:
            self.progress, self.best = checkpoint.restore(self.model)
        self.cancelled = False
        self._started = 0.0

    def fit(self, epochs: int, batch_size: int, loggers: list = ()) -> None:
        """Train until every trial stopped, the epochs ran out, or the job was cancelled.

        `loggers` are callbacks that see each epoch's logs after this trainer added every trial's
        validation metrics to them (val_loss_<n>, val_accuracy_<n>): a TensorBoard callback, say.
        """
        import keras

        done = self.checkpoint.state["epochs"] if self.checkpoint.state else 0
        if done >= epochs or all(progress.stopped for progress in self.progress):
            return
        batches = trial_batches(self.train_features, self.labels[self.split.train],
                                [trial.seed for trial in self.trials], batch_size)
        timer = keras.callbacks.LambdaCallback(on_epoch_begin=self._start_clock, on_epoch_end=self._end_epoch)
        self.model.fit(batches, shuffle=False, initial_epoch=done, epochs=epochs,
                       callbacks=[batches.callback(), timer, *loggers], verbose=0)

    def _start_clock(self, epoch: int, logs=None) -> None:
        self._started = time.perf_counter()

    def _end_epoch(self, epoch: int, logs: dict) -> None:
        """Record every trial still training, update its early stopping, checkpoint, then check for cancellation."""
        seconds = time.perf_counter() - self._started
        losses, accuracies, _ = evaluate(self.evaluation_model, self.validation_features,
                                         self.labels[self.split.validation])
        for index in range(len(self.trials)):  # the loggers after this callback see the same dict
            logs[f"val_loss_{index}"], logs[f"val_accuracy_{index}"] = float(losses[index]), float(accuracies[index])
        weights = stacked_weights(self.model)
        rows, best_changed = {}, False
        for index, (trial, progress) in enumerate(zip(self.trials, self.progress)):
            if progress.stopped:
                continue
            metrics = {"loss": float(logs[f"loss_{index}"]), "accuracy": float(logs[f"accuracy_{index}"]),
                       "val_loss": float(losses[index]), "val_accuracy": float(accuracies[index]),
                       "learning_rate": trial.learning_rate, "seconds": seconds,
                       "images_per_second": len(self.train_features) / seconds}
            progress.rows.append({"epoch": epoch + 1, **metrics})
            rows[trial.number] = metrics
            if progress.update(epoch, metrics["val_accuracy"], self.patience):
                self.best[index] = [weight[index].copy() for weight in weights]
                best_changed = True
        self.checkpoint.save(self.model, self.progress, self.best, epoch + 1, best_changed)
        self.reporter.record_epochs(epoch + 1, rows)
        if self.reporter.should_stop():
            self.cancelled = True
        if self.cancelled or all(progress.stopped for progress in self.progress):
            self.model.stop_training = True

    def best_probabilities(self, features: np.ndarray) -> np.ndarray:
        """Every trial's probabilities (images, trials, classes) with its best weights."""
        set_stacked_weights(self.model, self.best)
        return np.asarray(self.evaluation_model.predict(features, batch_size=EVALUATION_BATCH_SIZE, verbose=0),
                          dtype=np.float32)
