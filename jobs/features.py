"""Feature caching: with a frozen base and no augmentation, every epoch would push the same images
through the same base again. The pooled features are computed once (per dataset, backbone, size and
weights, shared by every job of the host) and the head trains on them.

The head is the classifier's own head layers on a features input, so training it trains the
classifier: the saved model is the seed recipe's model, with the same weights it would have had.
"""

import hashlib
from pathlib import Path

import numpy as np

from jobs.cache import cached_array
from jobs.model import HEAD_HIDDEN_LAYER, POOLED_LAYER, PROBABILITIES_LAYER, accelerator_visible
from jobs.spec import JobSpec

# The single pass through the base keeps no gradients, so batches can be large: on an accelerator
# 256 keeps it busy; on a CPU, 64 is as fast and keeps the activations' peak memory low (Xception at
# 71 px peaked 420 MiB higher with 256).
FEATURE_BATCH_SIZE_ACCELERATOR = 256
FEATURE_BATCH_SIZE_CPU = 64
HASH_CHUNK_BYTES = 2**20


def uses_feature_cache(spec: JobSpec) -> bool:
    """Whether the base's output is the same every epoch, so it can be computed once."""
    return spec.feature_cache and spec.fine_tune_layers == 0 and not spec.augment


def weights_identity(spec: JobSpec) -> str:
    """What determines the base's weights: ImageNet's, a file's content, or the seed of a random init."""
    if spec.weights == "none":
        return f"random-seed{spec.seed}"
    if spec.weights == "imagenet":
        return "imagenet"
    digest = hashlib.sha256()
    with Path(spec.weights).open("rb") as weights_file:
        while chunk := weights_file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return f"file-{digest.hexdigest()[:16]}"


def feature_cache_path(cache_dir: Path, dataset_sha256: str, spec: JobSpec, policy: str = "float32") -> Path:
    """Where the pooled features of this dataset, backbone, size, weights and precision live."""
    name = f"{dataset_sha256}-{spec.backbone}-{spec.image_size}px-{weights_identity(spec)}-{policy}.npy"
    return Path(cache_dir) / "features" / name


def feature_extractor(classifier):
    """The classifier up to its pooling: raw pixels in, pooled features out."""
    import keras

    return keras.Model(classifier.inputs, classifier.get_layer(POOLED_LAYER).output)


def feature_batch_size() -> int:
    """Batch size for the one pass through the base on this machine."""
    return FEATURE_BATCH_SIZE_ACCELERATOR if accelerator_visible() else FEATURE_BATCH_SIZE_CPU


def pooled_features(classifier, images: np.ndarray, cache_path: Path) -> np.ndarray:
    """The classifier's pooled features of every image (float32, dataset order), computed at most once."""
    extractor = feature_extractor(classifier)

    def compute(partial: Path) -> None:
        features = extractor.predict(images, batch_size=feature_batch_size(), verbose=0)
        with partial.open("wb") as destination:
            np.save(destination, np.asarray(features, dtype=np.float32))

    return cached_array(cache_path, compute)


def head_model(classifier, feature_count: int):
    """The classifier's head on a features input, sharing its layers (and so its weights)."""
    import keras

    features = keras.Input(shape=(feature_count,), name="features")
    hidden = classifier.get_layer(HEAD_HIDDEN_LAYER)(features)
    return keras.Model(features, classifier.get_layer(PROBABILITIES_LAYER)(hidden), name="head")
