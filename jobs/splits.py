"""Split a dataset into training and validation images, the same way for every job."""

import numpy as np

from jobs.datasets import ImageFile


def _subset_split(files: list[ImageFile]) -> tuple[np.ndarray, np.ndarray]:
    """Use the dataset's own train/ and validation/ folders."""
    subsets = np.array([image_file.subset for image_file in files])
    return np.flatnonzero(subsets == "train"), np.flatnonzero(subsets == "validation")


def _validation_count(class_size: int, validation_split: float) -> int:
    """Validation images for one class: at least one and at most all but one when it has two or more."""
    if class_size < 2:
        return 0
    return min(max(round(class_size * validation_split), 1), class_size - 1)


def split_indices(files: list[ImageFile], validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (train, validation) indices into `files`: the dataset's subsets, else stratified by class."""
    if any(image_file.subset for image_file in files):
        return _subset_split(files)
    labels = np.array([image_file.label for image_file in files], dtype=np.int64)
    generator = np.random.default_rng(seed)
    validation = []
    for label in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == label))
        validation.extend(members[: _validation_count(len(members), validation_split)])
    validation_mask = np.zeros(len(files), dtype=bool)
    validation_mask[np.asarray(validation, dtype=np.int64)] = True
    return np.flatnonzero(~validation_mask), np.flatnonzero(validation_mask)
