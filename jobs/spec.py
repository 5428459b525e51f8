"""The contract of one training job, stored as JSON in the job's database row."""

from pydantic import BaseModel, ConfigDict


class JobSpec(BaseModel):
    """Everything a worker needs to train one backbone; user input is validated before this."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone: str
    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    weights: str  # "imagenet", "none", or a path to a weights file
    augment: bool = False
    fine_tune_layers: int = 0
    seed: int = 0
    validation_split: float = 0.2
    # With a frozen base and no augmentation, train the head on features computed once (same result,
    # much faster); False forces the seed's end-to-end loop, for comparisons.
    feature_cache: bool = True
    # bfloat16 compute with float32 weights; None = on where a GPU or TPU is visible, off on CPUs.
    mixed_precision: bool | None = None
