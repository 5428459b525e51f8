"""The contract of one training job, stored as JSON in the job's database row, and the trials it runs."""

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict


class JobSpec(BaseModel):
    """Everything a worker needs to train one backbone; user input is validated before this."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone: str
    image_size: int
    epochs: int
    batch_size: int
    # One rate, or the grid the job's trials cover (the job keeps the best by validation accuracy).
    learning_rate: float | tuple[float, ...]
    patience: int
    weights: str  # "imagenet", "none", or a path to a weights file
    augment: bool = False
    fine_tune_layers: int = 0
    seed: int = 0
    # Jobs made before held-out test sets have validation_split 0.2 and test_split 0 (no test set).
    validation_split: float = 0.2
    test_split: float = 0.0
    # Trainings per learning rate, each from its own seed (seed + repeat) on the same split.
    repeats: int = 1
    # With a frozen base and no augmentation, train the head on features computed once (same result,
    # much faster); False forces the seed's end-to-end loop, for comparisons.
    feature_cache: bool = True
    # bfloat16 compute with float32 weights; None = on where a GPU or TPU is visible, off on CPUs.
    mixed_precision: bool | None = None

    @property
    def learning_rates(self) -> tuple[float, ...]:
        """The learning-rate grid, in the order the user gave it."""
        rate = self.learning_rate
        return tuple(rate) if isinstance(rate, tuple) else (rate,)


@dataclass(frozen=True)
class Trial:
    """One (learning rate, repeat) of a job: trial number = rate index x repeats + repeat."""

    number: int
    learning_rate: float
    repeat: int
    seed: int  # the job's seed + repeat: the head's initialisation and the batch order


def plan_trials(spec: JobSpec) -> list[Trial]:
    """Every trial of the job, numbered learning rate by learning rate."""
    return [Trial(index * spec.repeats + repeat, rate, repeat, spec.seed + repeat)
            for index, rate in enumerate(spec.learning_rates) for repeat in range(spec.repeats)]
