"""The per-class evaluation of a job's test: every figure against scikit-learn (or, for the calibration error,
which scikit-learn does not compute, against a hand-computed case) on fixed predictions."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from jobs.evaluation import calibration, evaluate, summary_part, top_confused

CLASSES = ["ant", "bee", "cat", "dog"]


def fixed_predictions():
    """40 test images of 4 classes, with seeded probabilities that get about half of them right."""
    rng = np.random.default_rng(7)
    truth = np.repeat(np.arange(4), [13, 11, 9, 7])
    logits = rng.normal(size=(truth.size, 4))
    logits[np.arange(truth.size), truth] += 1.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return truth, probabilities


def test_every_figure_matches_scikit_learn_on_fixed_predictions():
    truth, probabilities = fixed_predictions()
    predicted = probabilities.argmax(axis=1)
    result = evaluate(truth, probabilities, CLASSES)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, zero_division=0)
    assert 0.3 < result["accuracy"] < 0.9  # a case with mistakes in every direction to count
    assert result["confusion_matrix"] == confusion_matrix(truth, predicted).tolist()
    assert result["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert result["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, predicted))
    assert [row["class"] for row in result["per_class"]] == CLASSES
    assert [row["precision"] for row in result["per_class"]] == pytest.approx(precision)
    assert [row["recall"] for row in result["per_class"]] == pytest.approx(recall)
    assert [row["f1"] for row in result["per_class"]] == pytest.approx(f1)
    assert [row["support"] for row in result["per_class"]] == support.tolist()
    assert result["images"] == 40 and result["classes"] == CLASSES


def test_a_class_without_test_images_scores_zero_and_stays_out_of_the_balanced_accuracy():
    truth = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.1, 0.7], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1]])
    result = evaluate(truth, probabilities, ["a", "b", "c"])
    assert [(row["precision"], row["recall"], row["f1"], row["support"]) for row in result["per_class"]] == [
        (1.0, 0.5, pytest.approx(2 / 3), 2), (1.0, 1.0, 1.0, 2), (0.0, 0.0, 0.0, 0)]
    assert result["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)  # class c has no test image
    assert result["top_confused"] == [{"true": "a", "predicted": "c", "images": 1}]


def test_the_calibration_error_of_a_hand_computed_case():
    # Confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.5 (wrong); bins of width 1/15, closed on the right:
    # (13/15, 14/15] holds the two 0.9s: |0.5 - 0.9| x 2/4 = 0.2; (8/15, 9/15] the 0.6: |1 - 0.6| x 1/4 = 0.1;
    # (7/15, 8/15] the 0.5: |0 - 0.5| x 1/4 = 0.125. Sum 0.425.
    truth = np.array([0, 1, 2, 0])
    probabilities = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6], [0.3, 0.5, 0.2]])
    error, bins = calibration(truth, probabilities)
    assert error == pytest.approx(0.425)
    assert [(row["low"], row["high"], row["images"], row["accuracy"]) for row in bins] == [
        (pytest.approx(7 / 15), pytest.approx(8 / 15), 1, 0.0), (pytest.approx(8 / 15), pytest.approx(9 / 15), 1, 1.0),
        (pytest.approx(13 / 15), pytest.approx(14 / 15), 2, 0.5)]


def test_a_confident_model_that_is_always_right_is_perfectly_calibrated():
    truth = np.array([0, 1, 2])
    assert calibration(truth, np.eye(3))[0] == 0.0


def test_the_top_confused_pairs_are_the_largest_mistakes_first():
    matrix = np.array([[5, 3, 0], [1, 4, 6], [3, 0, 2]])
    assert top_confused(matrix, ["a", "b", "c"], limit=3) == [
        {"true": "b", "predicted": "c", "images": 6}, {"true": "a", "predicted": "b", "images": 3},
        {"true": "c", "predicted": "a", "images": 3}]


def test_the_summary_keeps_all_but_the_matrix_and_the_bins():
    truth, probabilities = fixed_predictions()
    result = evaluate(truth, probabilities, CLASSES)
    assert set(result) - set(summary_part(result)) == {"confusion_matrix", "calibration_bins"}
