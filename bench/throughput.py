"""Images per second of the job code's two heavy loops, next to the ceilings in docs/performance.md:
a frozen base extracting features (uint8 in, preprocessing inside the model, the job's default
precision) and the whole network fine-tuning. Random weights and random pixels: speed only."""
from __future__ import annotations

import time

import numpy as np

from jobs.backbones import get_backbone
from jobs.features import feature_batch_size, feature_extractor
from jobs.model import build_base, build_classifier, compile_classifier, precision_policy, unfreeze_top_layers
from jobs.spec import JobSpec

# docs/performance.md, "Ceilings on one H200" (Keras 3 on JAX): images per second.
FEATURE_CEILING_UINT8 = {"VGG16": 37_416, "ResNet50": 27_215}
FEATURE_CEILING_BF16 = {"VGG16": 18_334, "VGG19": 13_673, "InceptionV3": 20_692, "Xception": 25_424, "ResNet50": 16_639}
FINE_TUNE_CEILING_BF16 = {"VGG16": 7_476, "VGG19": 6_897, "InceptionV3": 1_827, "Xception": 3_279, "ResNet50": 2_411}
FINE_TUNE_BATCH_SIZE = 64
CLASSES = 5


def _classifier(backbone: str, size: int):
    """The job's classifier with random weights, under the job's default precision policy."""
    import keras

    keras.backend.clear_session()
    keras.config.set_dtype_policy(precision_policy(None))
    entry = get_backbone(backbone)
    spec = JobSpec(backbone=backbone, image_size=size, epochs=1, batch_size=FINE_TUNE_BATCH_SIZE,
                   learning_rate=1e-4, patience=1, weights="none")
    base = build_base(entry, size, "none")
    return build_classifier(base, entry, spec, CLASSES), base


def _pixels(count: int, size: int) -> np.ndarray:
    """Random uint8 images."""
    return np.random.default_rng(0).integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)


def feature_images_per_second(backbone: str, size: int, count: int) -> float:
    """Steady images/s of the pass that feature caching makes once per base (compile excluded)."""
    classifier, _ = _classifier(backbone, size)
    extractor, batch_size, images = feature_extractor(classifier), feature_batch_size(), _pixels(count, size)
    extractor.predict(images[: 2 * batch_size], batch_size=batch_size, verbose=0)  # compile
    started = time.perf_counter()
    extractor.predict(images, batch_size=batch_size, verbose=0)
    return count / (time.perf_counter() - started)


def fine_tune_images_per_second(backbone: str, size: int, count: int) -> float:
    """Steady images/s of training every layer but BatchNormalization (compile excluded)."""
    classifier, base = _classifier(backbone, size)
    unfreeze_top_layers(base, len(base.layers))
    compile_classifier(classifier, 1e-4)
    images = _pixels(count, size)
    labels = np.eye(CLASSES, dtype=np.float32)[np.arange(count) % CLASSES]
    classifier.fit(images[: 2 * FINE_TUNE_BATCH_SIZE], labels[: 2 * FINE_TUNE_BATCH_SIZE],
                   batch_size=FINE_TUNE_BATCH_SIZE, epochs=1, verbose=0)  # compile
    started = time.perf_counter()
    classifier.fit(images, labels, batch_size=FINE_TUNE_BATCH_SIZE, epochs=1, verbose=0)
    return count / (time.perf_counter() - started)


def throughput_report(backbone: str, size: int, count: int) -> dict:
    """Both figures for one backbone with the share of the ceilings (docs/performance.md) they reach (target 80 %)."""
    features, fine_tune = feature_images_per_second(backbone, size, count), fine_tune_images_per_second(backbone, size, count)
    feature_ceiling = FEATURE_CEILING_UINT8.get(backbone, FEATURE_CEILING_BF16[backbone])
    return {
        "backbone": backbone, "image_size": size, "images": count,
        "features_images_per_second": features, "features_ceiling": feature_ceiling,
        "features_share_of_ceiling": features / feature_ceiling,
        "fine_tune_images_per_second": fine_tune, "fine_tune_ceiling": FINE_TUNE_CEILING_BF16[backbone],
        "fine_tune_share_of_ceiling": fine_tune / FINE_TUNE_CEILING_BF16[backbone],
    }
