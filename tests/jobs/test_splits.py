import numpy as np
import pytest

from jobs.datasets import ImageFile
from jobs.splits import split_indices


def labelled(*class_sizes):
    """Files with class_sizes[label] images of each label, interleaved."""
    labels = [label for label, size in enumerate(class_sizes) for _ in range(size)]
    return [ImageFile(f"{label}/{index}.png", label, None) for index, label in enumerate(labels)]


def test_same_seed_gives_the_same_split_and_another_seed_another():
    files = labelled(20, 20, 20)
    first_train, first_validation = split_indices(files, 0.25, seed=7)
    again_train, again_validation = split_indices(files, 0.25, seed=7)
    np.testing.assert_array_equal(first_train, again_train)
    np.testing.assert_array_equal(first_validation, again_validation)
    assert not np.array_equal(split_indices(files, 0.25, seed=8)[1], first_validation)


@pytest.mark.parametrize(("class_sizes", "expected_validation"), [((20, 8, 4), (5, 2, 1)), ((2, 3, 1), (1, 1, 0))])
def test_stratified_with_at_least_one_validation_image_per_class(class_sizes, expected_validation):
    files = labelled(*class_sizes)
    train, validation = split_indices(files, 0.25, seed=0)
    assert sorted(np.concatenate([train, validation])) == list(range(len(files)))
    labels = np.array([image_file.label for image_file in files])
    assert tuple(np.bincount(labels[validation], minlength=len(class_sizes))) == expected_validation


def test_uses_the_datasets_own_subsets():
    files = [
        ImageFile("train/a/1.png", 0, "train"),
        ImageFile("train/b/2.png", 1, "train"),
        ImageFile("validation/a/3.png", 0, "validation"),
    ]
    train, validation = split_indices(files, 0.5, seed=0)
    assert list(train) == [0, 1] and list(validation) == [2]
