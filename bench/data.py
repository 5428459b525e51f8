"""The benchmark's dataset: small noisy PNGs, one colour per class, so random-weight backbones learn it.

    python -m bench.data FOLDER [--images-per-class 180]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from testsupport.images import CLASS_COLOURS, coloured_image

# The test helper's six colours and four more, all at least 60 apart in some channel (noise is ±30).
COLOURS = {
    **CLASS_COLOURS,
    "orange": (240, 140, 20),
    "pink": (240, 130, 190),
    "grey": (128, 128, 128),
    "brown": (110, 70, 20),
}
CLASSES = 10
IMAGES_PER_CLASS = 180
IMAGE_SIZE = 32


def write_dataset(root: Path, per_class: int = IMAGES_PER_CLASS, size: int = IMAGE_SIZE) -> Path:
    """Write `per_class` PNGs of `size` px into root/<colour>/ for each of the ten colours."""
    generator = np.random.default_rng(0)
    for name, colour in list(COLOURS.items())[:CLASSES]:
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            coloured_image(colour, size, generator).save(folder / f"{index:04d}.png")
    return root


def main() -> int:
    """Write the dataset into a new folder (for running bench/seed_recipe.py alone)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--images-per-class", type=int, default=IMAGES_PER_CLASS)
    args = parser.parse_args()
    write_dataset(args.folder, args.images_per_class)
    return 0


if __name__ == "__main__":
    sys.exit(main())
