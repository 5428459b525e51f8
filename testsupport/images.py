"""Small labelled image folders for tests and benchmarks: each class has its own colour, so it is learnable.
Also small PNGs and zip archives of them, to upload."""

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_COLOURS = {
    "blue": (30, 60, 220),
    "green": (40, 200, 60),
    "red": (220, 40, 40),
    "yellow": (230, 220, 40),
    "purple": (140, 40, 200),
    "cyan": (40, 210, 220),
}
# Decodable images in unusual modes that extras=True adds to the first class.
ODD_FORMAT_FILES = ("grey.png", "alpha.png", "cmyk.jpg", "palette.png", "sixteen_bit.png")
# What extras=True adds that a scan must skip, relative to the root, with the reason's start.
SKIPPED_EXTRAS = {
    "README.txt": "file outside a class folder",
    ".DS_Store": "hidden file",
    "__MACOSX": "macOS metadata folder",
    "empty/": "empty class folder",
    "{first}/.hidden.png": "hidden file",
    "{first}/.thumbnails": "hidden folder",
    "{first}/broken.jpg": "not a decodable image",
    "{first}/truncated.png": "not a decodable image",
    "{first}/link.png": "symbolic link",
}


def class_names(classes: int) -> list[str]:
    """Names of the first `classes` colour classes, in sorted (label) order."""
    return sorted(list(CLASS_COLOURS)[:classes])


def coloured_image(colour: tuple[int, int, int], size: int, generator: np.random.Generator) -> Image.Image:
    """A noisy image around `colour`."""
    noise = generator.integers(-30, 31, size=(size, size, 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def small_png(colour: str = "red") -> bytes:
    """One small decodable PNG of a class colour."""
    return png_bytes(coloured_image(CLASS_COLOURS[colour], 16, np.random.default_rng(0)))


def zip_of(entries: dict[str, bytes]) -> bytes:
    """A deflated zip with these entries, names exactly as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(zipfile.ZipInfo(name), content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def two_class_zip(**extra: bytes) -> bytes:
    """A valid two-class dataset (three images a class: one each for training, validation and test), plus `extra`."""
    images = {f"{folder}/{name}.png": small_png(colour) for folder, colour in (("cats", "red"), ("dogs", "blue"))
              for name in "abc"}
    return zip_of({**images, **extra})


def sixteen_bit_grey(size: int) -> Image.Image:
    """A 16-bit greyscale gradient spanning 0..65535 (Pillow mode I;16)."""
    gradient = np.linspace(0, 65535, size * size).reshape(size, size).astype(np.uint16)
    return Image.fromarray(gradient)


def _write_odd_formats(folder: Path, colour: tuple[int, int, int], size: int, generator: np.random.Generator) -> None:
    """Decodable images in greyscale, RGBA, CMYK, palette and 16-bit greyscale modes."""
    image = coloured_image(colour, size, generator)
    image.convert("L").save(folder / "grey.png")
    image.convert("RGBA").save(folder / "alpha.png")
    image.convert("CMYK").save(folder / "cmyk.jpg")
    image.convert("P").save(folder / "palette.png")
    sixteen_bit_grey(size).save(folder / "sixteen_bit.png")


def _write_skipped_extras(root: Path, first: Path, size: int, generator: np.random.Generator) -> None:
    """Files and folders a scan must skip: see SKIPPED_EXTRAS."""
    (root / "README.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "__MACOSX" / first.name).mkdir(parents=True)
    (root / "__MACOSX" / first.name / "._image_0.png").write_bytes(b"\0\5\26\7")
    (root / "empty").mkdir()
    coloured_image((0, 0, 0), size, generator).save(first / ".hidden.png")
    (first / ".thumbnails").mkdir()
    coloured_image((0, 0, 0), size, generator).save(first / ".thumbnails" / "thumb.png")
    (first / "broken.jpg").write_bytes(b"this is not a jpeg")
    valid = png_bytes(coloured_image((0, 0, 0), size, generator))
    (first / "truncated.png").write_bytes(valid[: len(valid) // 2])
    (first / "link.png").symlink_to(first / "image_0.png")


def make_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 32, extras: bool = False) -> Path:
    """Write `per_class` PNGs per colour class under root/<class>/; extras adds odd and bad files."""
    root = Path(root)
    generator = np.random.default_rng(0)
    for name in class_names(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            coloured_image(CLASS_COLOURS[name], size, generator).save(folder / f"image_{index}.png")
    if extras:
        first = root / class_names(classes)[0]
        _write_odd_formats(first, CLASS_COLOURS[first.name], size, generator)
        _write_skipped_extras(root, first, size, generator)
    return root
