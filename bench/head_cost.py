"""What ten epochs of the head cost on cached features, against the arithmetic they need.

    python -m bench.head_cost [--samples 1440] [--epochs 10]

For 512 pooled features (VGG) and 2,048 (InceptionV3, Xception, ResNet50), 10 classes, batch 32:
(1) the way a job trains the head (jobs.stacked: the stacked heads of one trial, the seeded
batches, 32 steps a call), first fit and a second one on the same model; (2) the same forward and backward
passes and plain gradient steps in NumPy, a lower bound for the arithmetic on this CPU. This is
the floor under (c) in `make bench`: the head's compute is not cached, only the base's.
"""

import argparse
import json
import math
import sys
import time

import numpy as np

CLASSES = 10
BATCH_SIZE = 32
FEATURE_COUNTS = (512, 2048)


def keras_seconds(features: np.ndarray, labels: np.ndarray, epochs: int) -> list[float]:
    """Seconds of `epochs` epochs through the job's head trainer: the first call, then a warm one."""
    from jobs.spec import Trial
    from jobs.stacked import build_stacked_heads, trial_batches

    head, _ = build_stacked_heads([Trial(0, 1e-3, 0, 0)], features.shape[1], CLASSES)
    timings = []
    for _ in range(2):
        batches = trial_batches(features, labels, [0], BATCH_SIZE)
        started = time.perf_counter()
        head.fit(batches, shuffle=False, epochs=epochs, callbacks=[batches.callback()], verbose=0)
        timings.append(time.perf_counter() - started)
    return timings


def numpy_seconds(features: np.ndarray, labels: np.ndarray, epochs: int) -> float:
    """Seconds of the same passes (Dense 512 relu, softmax) with plain gradient steps in NumPy."""
    generator = np.random.default_rng(0)
    hidden_weights = generator.standard_normal((features.shape[1], 512), dtype=np.float32) * 0.01
    output_weights = generator.standard_normal((512, CLASSES), dtype=np.float32) * 0.01
    started = time.perf_counter()
    for epoch in range(epochs):
        order = np.random.default_rng([0, epoch]).permutation(len(features))
        for step in range(math.ceil(len(features) / BATCH_SIZE)):
            chosen = order[step * BATCH_SIZE:(step + 1) * BATCH_SIZE]
            x, y = features[chosen], labels[chosen]
            hidden = np.maximum(x @ hidden_weights, 0)
            logits = hidden @ output_weights
            probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            output_gradient = (probabilities - y) / len(chosen)
            hidden_gradient = (output_gradient @ output_weights.T) * (hidden > 0)
            output_weights -= 1e-3 * hidden.T @ output_gradient
            hidden_weights -= 1e-3 * x.T @ hidden_gradient
    return time.perf_counter() - started


def main() -> int:
    """Measure both ways for each feature count and print them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1440, help="training samples (make bench has 1,440)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    generator = np.random.default_rng(0)
    results = []
    for feature_count in FEATURE_COUNTS:
        features = generator.standard_normal((args.samples, feature_count), dtype=np.float32)
        labels = np.eye(CLASSES, dtype=np.float32)[generator.integers(0, CLASSES, args.samples)]
        first, warm = keras_seconds(features, labels, args.epochs)
        results.append({"features": feature_count, "keras_first_s": round(first, 3), "keras_warm_s": round(warm, 3),
                        "numpy_floor_s": round(numpy_seconds(features, labels, args.epochs), 3)})
    print(json.dumps({"samples": args.samples, "epochs": args.epochs, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
