"""The recipe both sides of `make bench` train: the seed's five backbones at their smallest sizes."""

from jobs.backbones import SEED_BACKBONES, get_backbone

EPOCHS = 10
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
SEED = 0
VALIDATION_SPLIT = 0.2
DEFAULT_BACKBONES = SEED_BACKBONES


def smallest_sizes(backbones: list[str]) -> dict[str, int]:
    """Each backbone's smallest accepted input size (32 px; InceptionV3 75, Xception 71)."""
    return {name: get_backbone(name).min_size for name in backbones}
