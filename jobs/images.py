"""Decode a dataset's images once into a cached uint8 array shared by all jobs."""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from jobs.cache import cached_array
from jobs.datasets import ImageFile

# 65535 / 257 == 255: maps the 16-bit range exactly onto the 8-bit one.
SIXTEEN_TO_EIGHT_BITS = 257
WHITE = (255, 255, 255, 255)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    if image.mode.startswith("I"):
        # 16-bit greyscale (modes I;16* and I): Pillow's convert() clips at 255 instead of scaling.
        pixels = np.asarray(image, dtype=np.float64) / SIXTEEN_TO_EIGHT_BITS
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if image.has_transparency_data:
        # Transparent pixels often hide arbitrary colours; show them as viewers do, on white.
        background = Image.new("RGBA", image.size, WHITE)
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def upright_rgb(path: Path) -> Image.Image:
    """The image file as 8-bit RGB, the right way up."""
    with Image.open(path) as image:
        # Phone photos are stored sideways with an EXIF rotation tag; apply it.
        return _to_rgb(ImageOps.exif_transpose(image))


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """Decode one image to an RGB uint8 array of image_size x image_size."""
    return np.asarray(upright_rgb(path).resize((image_size, image_size), Image.Resampling.BILINEAR))


def _decode_all(partial: Path, dataset_root: Path, files: list[ImageFile], image_size: int) -> None:
    """Decode every file straight into a .npy on disk."""
    # A memory-mapped file keeps memory flat however large the dataset is.
    array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(files), image_size, image_size, 3))
    for index, image_file in enumerate(files):
        array[index] = decode_image(dataset_root / image_file.path, image_size)
    array.flush()
    del array


def decoded_images_path(cache_dir: Path, dataset_sha256: str, image_size: int) -> Path:
    """Where a dataset's images, decoded at one size, are cached."""
    return Path(cache_dir) / f"{dataset_sha256}-{image_size}px.npy"


def load_uint8_images(
    dataset_root: Path, files: list[ImageFile], image_size: int, cache_dir: Path, dataset_sha256: str
) -> np.ndarray:
    """Return the images of `files` in order as (n, size, size, 3) uint8, decoding only on a cache miss.

    `files` must be the full file list of the scanned dataset whose hash is `dataset_sha256`.
    """
    cache_path = decoded_images_path(cache_dir, dataset_sha256, image_size)
    return cached_array(cache_path, lambda partial: _decode_all(partial, Path(dataset_root), files, image_size),
                        root=Path(cache_dir))


def thumbnail(path: Path, largest_side: int) -> Image.Image:
    """The image upright and in RGB, shrunk (never enlarged) to fit largest_side x largest_side, aspect kept."""
    image = upright_rgb(path)
    image.thumbnail((largest_side, largest_side), Image.Resampling.LANCZOS)
    return image
