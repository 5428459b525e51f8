"""The built-in sample dataset: circles, squares and triangles on noisy backgrounds.

Each shape also leans to its own colour, so that even backbones with random weights (the sample
runs offline, without ImageNet weights) learn it within a few epochs, and the comparison shows.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SAMPLE_CLASSES = ("circle", "square", "triangle")
SAMPLE_COLOURS = {"circle": (230, 90, 70), "square": (80, 200, 90), "triangle": (80, 120, 230)}
COLOUR_JITTER = 40
SAMPLE_IMAGES_PER_CLASS = 40
SAMPLE_IMAGE_SIZE = 64


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour: tuple) -> None:
    """Draw one filled shape inside box."""
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], fill=colour)


def sample_image(shape: str, generator: np.random.Generator, size: int = SAMPLE_IMAGE_SIZE) -> Image.Image:
    """One image of `shape`: random colour, size and place, on a noisy grey background."""
    background = generator.integers(60, 140, size=(size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background, "RGB")
    extent = int(generator.integers(size // 3, size * 3 // 4))
    left, top = (int(value) for value in generator.integers(0, size - extent, size=2))
    jitter = generator.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    colour = tuple(int(value) for value in np.clip(np.array(SAMPLE_COLOURS[shape]) + jitter, 0, 255))
    _draw_shape(ImageDraw.Draw(image), shape, (left, top, left + extent, top + extent), colour)
    return image


def write_sample_dataset(root: Path, per_class: int = SAMPLE_IMAGES_PER_CLASS, seed: int = 0) -> Path:
    """Write root/<shape>/<n>.png for every shape (the same images for the same seed); returns root."""
    generator = np.random.default_rng(seed)
    for shape in SAMPLE_CLASSES:
        folder = Path(root) / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            sample_image(shape, generator).save(folder / f"{shape}-{index:03d}.png")
    return Path(root)
