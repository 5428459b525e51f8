import hashlib

import numpy as np
import pytest

from jobs.datasets import ImageFile
from jobs.splits import split_hashes, split_indices, split_problem


def labelled(*class_sizes, subset=None):
    """Files with class_sizes[label] images of each label, interleaved."""
    labels = [label for label, size in enumerate(class_sizes) for _ in range(size)]
    return [ImageFile(f"{subset or 'all'}/{label}/{index}.png", label, subset) for index, label in enumerate(labels)]


def class_counts(files, indices, class_count):
    labels = np.array([image_file.label for image_file in files])
    return tuple(int(count) for count in np.bincount(labels[indices], minlength=class_count))


def test_same_seed_gives_the_same_split_and_another_seed_another():
    files = labelled(20, 20, 20)
    first = split_indices(files, 0.15, seed=7, test_split=0.15)
    again = split_indices(files, 0.15, seed=7, test_split=0.15)
    for name, indices in first.parts().items():
        np.testing.assert_array_equal(indices, again.parts()[name])
    other = split_indices(files, 0.15, seed=8, test_split=0.15)
    assert not np.array_equal(other.test, first.test)
    assert not np.array_equal(other.validation, first.validation)


def test_three_parts_are_stratified_disjoint_and_cover_every_image():
    files = labelled(20, 8, 4)
    split = split_indices(files, 0.15, seed=0, test_split=0.15)
    assert sorted(np.concatenate(list(split.parts().values()))) == list(range(len(files)))
    # round(20 * 0.15) = 3; 8 * 0.15 and 4 * 0.15 round to 1 or 0, and every class gives at least one.
    assert class_counts(files, split.validation, 3) == (3, 1, 1)
    assert class_counts(files, split.test, 3) == (3, 1, 1)
    assert class_counts(files, split.train, 3) == (14, 6, 2)
    assert split_problem(files, ["a", "b", "c"], split) is None


def test_a_class_too_small_for_three_parts_is_named():
    files = labelled(10, 2, 10)
    split = split_indices(files, 0.15, seed=0, test_split=0.15)
    problem = split_problem(files, ["cat", "dog", "owl"], split)
    assert problem.startswith("class 'dog' has 2 images, too few for a train part")


def test_without_a_test_share_there_is_no_test_part_as_before_test_sets():
    files = labelled(2, 3)
    split = split_indices(files, 0.25, seed=0)
    assert split.test.size == 0
    assert class_counts(files, split.validation, 2) == (1, 1)
    assert split_problem(files, ["a", "b"], split, tested=False) is None


def test_the_datasets_own_train_validation_and_test_folders_are_used_as_given():
    files = [ImageFile("train/a/1.png", 0, "train"), ImageFile("train/b/2.png", 1, "train"),
             ImageFile("validation/a/3.png", 0, "validation"), ImageFile("validation/b/4.png", 1, "validation"),
             ImageFile("test/a/5.png", 0, "test"), ImageFile("test/b/6.png", 1, "test")]
    split = split_indices(files, 0.5, seed=0, test_split=0.5)
    assert (list(split.train), list(split.validation), list(split.test)) == ([0, 1], [2, 3], [4, 5])


def test_a_part_without_its_folder_is_carved_out_of_train_stratified():
    files = labelled(10, 10, subset="train") + labelled(2, 2, subset="validation")
    split = split_indices(files, 0.15, seed=0, test_split=0.2)
    assert list(split.validation) == list(range(20, 24))
    assert class_counts(files, split.test, 2) == (2, 2)
    assert class_counts(files, split.train, 2) == (8, 8)


def test_split_hashes_are_the_sha256_of_each_parts_sorted_file_list():
    files = labelled(6, 6)
    split = split_indices(files, 0.2, seed=1, test_split=0.2)
    hashes = split_hashes(files, split)
    expected = hashlib.sha256("\n".join(sorted(files[i].path for i in split.test)).encode()).hexdigest()
    assert hashes["test"] == {"images": int(split.test.size), "sha256": expected}
    assert len({part["sha256"] for part in hashes.values()}) == 3
    assert split_hashes(files, split_indices(files, 0.2, seed=1, test_split=0.2)) == hashes
