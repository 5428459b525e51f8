"""Feature caching: with a frozen base and no augmentation, every epoch would push the same images
through the same base again. The pooled features are computed once (per dataset, backbone, size and
weights, shared by every job of the host) and the head trains on them.

Every trial of the job then trains its head on them at once (jobs/stacked.py), and the selected
trial's head weights go back into the seed recipe's model, so the saved model is the one the seed's
loop would have trained.
"""

import hashlib
from pathlib import Path

import numpy as np

from jobs.cache import cached_array
from jobs.model import POOLED_LAYER, accelerator_visible
from jobs.spec import JobSpec

# The single pass through the base keeps no gradients, so batches can be large on an accelerator; on a
# CPU a larger batch only raises the activations' peak memory (figures: docs/performance.md, "Feature
# batch size on a CPU").
FEATURE_BATCH_SIZE_ACCELERATOR = 256
FEATURE_BATCH_SIZE_CPU = 64
HASH_CHUNK_BYTES = 2**20
# Features live in this sub-folder of the cache, beside the decoded images.
FEATURES_FOLDER = "features"


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
    return Path(cache_dir) / FEATURES_FOLDER / name


def cache_root_of(features_path: Path) -> Path:
    """The cache folder a feature_cache_path lies in (the cap counts every entry under it)."""
    return Path(features_path).parent.parent


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

    return cached_array(cache_path, compute, root=cache_root_of(cache_path))
