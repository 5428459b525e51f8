"""Split a dataset into training, validation and test images, the same way for every job and trial.

The dataset's own train/, validation/ and test/ folders are used as given; a part without a folder is
carved out of train/, stratified by class, at its fraction of train/'s images. Without folders, every
class is split at the fractions asked. A split depends only on the file list and the seed.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from jobs.datasets import ImageFile

PARTS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    """Sorted indices into the dataset's files of each part (test is empty for jobs without a test set)."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        """Each part's indices by name."""
        return {"train": self.train, "validation": self.validation, "test": self.test}


def _carved_count(class_size: int, fraction: float) -> int:
    """Images one class gives to a carved part: at least one when the fraction asks for any."""
    return max(round(class_size * fraction), 1) if fraction > 0 else 0


def _stratified(indices: np.ndarray, labels: np.ndarray, fractions: dict[str, float],
                generator: np.random.Generator) -> dict[str, list]:
    """Carve parts of `fractions` out of `indices`, class by class; what is left is "train"."""
    carved = {name: [] for name in [*fractions, "train"]}
    for label in np.unique(labels[indices]):
        members = generator.permutation(indices[labels[indices] == label])
        start = 0
        for name, fraction in fractions.items():
            count = _carved_count(len(members), fraction)
            carved[name].extend(members[start:start + count])
            start += count
        carved["train"].extend(members[start:])
    return carved


def split_indices(files: list[ImageFile], validation_split: float, seed: int, test_split: float = 0.0) -> Split:
    """The split of `files`: the dataset's own folders where it has them, else stratified by class."""
    labels = np.array([image_file.label for image_file in files], dtype=np.int64)
    subsets = np.array([image_file.subset or "" for image_file in files])
    given = {name: np.flatnonzero(subsets == name) for name in PARTS}
    if not any(subsets):
        given["train"] = np.arange(len(files))
    missing = {name: fraction for name, fraction in (("validation", validation_split), ("test", test_split))
               if not given[name].size}
    carved = _stratified(given["train"], labels, missing, np.random.default_rng(seed))
    parts = {name: np.sort(np.asarray(carved[name] if name in carved else given[name], dtype=np.int64))
             for name in PARTS}
    return Split(**parts)


def split_problem(files: list[ImageFile], classes: list[str], split: Split, tested: bool = True) -> str | None:
    """Why this split cannot be trained on (and, when `tested`, tested on): a class missing from a part; or None."""
    labels = np.array([image_file.label for image_file in files], dtype=np.int64)
    needed = PARTS if tested else PARTS[:2]
    for label, class_name in enumerate(classes):
        short = [name for name in needed if not np.any(labels[split.parts()[name]] == label)]
        if short:
            total = int(np.sum(labels == label))
            return (f"class {class_name!r} has {total} image{'s' * (total != 1)}, too few for a "
                    f"{', '.join(short)} part; every class needs at least one image in each of {', '.join(needed)}")
    return None


def split_hashes(files: list[ImageFile], split: Split) -> dict[str, dict]:
    """Each part's image count and the sha256 of its sorted file list (one path per line)."""
    return {name: {"images": int(indices.size),
                   "sha256": hashlib.sha256("\n".join(sorted(files[i].path for i in indices)).encode()).hexdigest()}
            for name, indices in split.parts().items()}
