"""The recipe both sides of `make bench` train: the seed's five backbones at their smallest sizes."""

from jobs.backbones import SEED_BACKBONES, get_backbone

EPOCHS = 10
BATCH_SIZE = 32
LEARNING_RATE = 1e-3
SEED = 0
VALIDATION_SPLIT = 0.2
# tlbench holds out a test part too; the seed recipe leaves those images out, so both train on the same ones.
TEST_SPLIT = 0.15
# (d) of `make bench`: the benchmark with a learning-rate grid and repeats, against (c)'s one trial a backbone.
TRIAL_LEARNING_RATES = (1e-3, 3e-4, 1e-4)
TRIAL_REPEATS = 3
DEFAULT_BACKBONES = SEED_BACKBONES


def smallest_sizes(backbones: list[str]) -> dict[str, int]:
    """Each backbone's smallest accepted input size (32 px; InceptionV3 75, Xception 71)."""
    return {name: get_backbone(name).min_size for name in backbones}
