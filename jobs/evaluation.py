"""Where a model goes wrong, class by class, on the test images of a job's selected trial.

scikit-learn computes the confusion matrix and the per-class figures (precision, recall, F1, support),
as it is the reference every reader checks against; the expected calibration error is not in it and is
computed here, in its usual form (equal-width confidence bins). Everything is plain numpy in, JSON-ready
values out.
"""

from __future__ import annotations

import numpy as np

# Equal-width confidence bins of the expected calibration error (15, the usual choice).
CALIBRATION_BINS = 15
TOP_CONFUSED_PAIRS = 5
EVALUATION_FILE = "evaluation.json"


def evaluate(truth: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """Every figure of the test: overall, per class, the confusion matrix, the calibration and the top confusions.

    truth: (images,) class indices; probabilities: (images, classes). The matrix's rows are the true
    class, its columns the predicted one. A class with no test image has recall and F1 0 and support 0,
    and takes no part in the balanced accuracy.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    truth = np.asarray(truth)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.arange(len(classes))
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(truth, predicted, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels,
                                                                     zero_division=0)
    ece, bins = calibration(truth, probabilities)
    return {
        "classes": list(classes),
        "images": int(truth.size),
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        # scikit-learn's balanced_accuracy_score: the mean recall over the classes that have test images.
        "balanced_accuracy": float(recall[support > 0].mean()),
        "expected_calibration_error": ece,
        "per_class": [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for name, p, r, f, s in zip(classes, precision, recall, f1, support)],
        "top_confused": top_confused(matrix, classes),
        "confusion_matrix": matrix.tolist(),
        "calibration_bins": bins,
    }


def summary_part(evaluation: dict) -> dict:
    """What a job's summary keeps of the evaluation: all but the matrix and the bins (evaluation.json has them)."""
    return {key: value for key, value in evaluation.items() if key not in ("confusion_matrix", "calibration_bins")}


def calibration(truth: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> tuple[float, list[dict]]:
    """The expected calibration error and its bins.

    Each image falls in the bin (k/bins, (k+1)/bins] of its top probability (its confidence); the error
    is the mean over images of |bin accuracy - bin mean confidence|, each bin weighted by its images.
    Only bins holding images are listed.
    """
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    listed, error = [], 0.0
    for k in range(bins):
        members = index == k
        count = int(members.sum())
        if not count:
            continue
        accuracy, mean_confidence = float(correct[members].mean()), float(confidence[members].mean())
        error += count / truth.size * abs(accuracy - mean_confidence)
        listed.append({"low": k / bins, "high": (k + 1) / bins, "images": count, "accuracy": accuracy,
                       "confidence": mean_confidence})
    return float(error), listed


def top_confused(matrix: np.ndarray, classes: list[str], limit: int = TOP_CONFUSED_PAIRS) -> list[dict]:
    """The most frequent mistakes (true class taken for another), most first; ties in matrix order."""
    mistakes = np.array(matrix, copy=True)
    np.fill_diagonal(mistakes, 0)
    order = np.argsort(-mistakes, axis=None, kind="stable")[:limit]
    pairs = [np.unravel_index(flat, mistakes.shape) for flat in order]
    return [{"true": classes[row], "predicted": classes[column], "images": int(mistakes[row, column])}
            for row, column in pairs if mistakes[row, column] > 0]
