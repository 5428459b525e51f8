"""Feature caching: with a frozen base and no augmentation, every epoch would push the same images
through the same base again. The pooled features are computed once (per dataset, backbone, size and
weights, shared by every job of the host) and the head trains on them.

The head that trains is the classifier's head (same layers, built by the same function) on a
features input: it starts from the classifier's initial head weights and hands its trained weights
back, so the saved model is the seed recipe's model, with the weights it would have had. The
compiled head is kept by the process and reused by the next job of the same shapes.
"""

import hashlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from jobs.cache import cached_array
from jobs.model import (
    HEAD_HIDDEN_LAYER,
    POOLED_LAYER,
    PROBABILITIES_LAYER,
    accelerator_visible,
    add_head,
    compile_classifier,
)
from jobs.spec import JobSpec

# The single pass through the base keeps no gradients, so batches can be large: on an accelerator
# 256 keeps it busy; on a CPU, 64 is as fast and keeps the activations' peak memory low (Xception at
# 71 px peaked 420 MiB higher with 256).
FEATURE_BATCH_SIZE_ACCELERATOR = 256
FEATURE_BATCH_SIZE_CPU = 64
HASH_CHUNK_BYTES = 2**20
# Features live in this sub-folder of the cache, beside the decoded images.
FEATURES_FOLDER = "features"
HEAD_LAYERS = (HEAD_HIDDEN_LAYER, PROBABILITIES_LAYER)
# Compiled heads this process keeps, by backend, feature count, class count and precision (least
# recently used first); a head is a few MB.
COMPILED_HEADS_KEPT = 4
_compiled_heads: OrderedDict = OrderedDict()
# A head step is a few small matrix products, so per-step overhead dominates: run up to this many
# steps per call (on 2 CPU cores: 10 epochs of a 2,048-feature head 2.3 -> 1.6 s; XLA would save
# 0.3 s more but cost 80 MiB of peak memory).
HEAD_STEPS_PER_EXECUTION = 32


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


def compiled_head(feature_count: int, class_count: int):
    """A compiled head (features in, probabilities out) for these shapes, kept by this process.

    A warm worker reuses it from job to job: building a new Keras model and tracing its training
    step cost about a second a job on a CPU, more than ten epochs of the head itself.
    """
    import keras

    key = (keras.backend.backend(), feature_count, class_count, keras.config.dtype_policy().name)
    head = _compiled_heads.pop(key, None)
    if head is None:
        features = keras.Input(shape=(feature_count,), name="features")
        # Every job overwrites these weights with its own; a constant initializer draws no random seed.
        head = keras.Model(features, add_head(features, class_count, kernel_initializer="zeros"), name="head")
        compile_classifier(head, learning_rate=0.001, steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    _compiled_heads[key] = head
    while len(_compiled_heads) > COMPILED_HEADS_KEPT:
        _compiled_heads.popitem(last=False)
    return head


def forget_compiled_heads() -> None:
    """Drop the heads this process keeps (the next job builds and compiles its own)."""
    _compiled_heads.clear()


def copy_head_weights(source, destination) -> None:
    """Give destination's head layers the weights of source's (a classifier or a compiled head)."""
    for name in HEAD_LAYERS:
        destination.get_layer(name).set_weights(source.get_layer(name).get_weights())


def reset_optimizer(optimizer, learning_rate: float) -> None:
    """Make a used optimizer new again (step count and moments zero) with another learning rate."""
    import keras

    for variable in optimizer.variables:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    optimizer.learning_rate = learning_rate


def head_for(classifier, feature_count: int, learning_rate: float):
    """A compiled head that starts from the classifier's head weights with a fresh Adam at learning_rate."""
    head = compiled_head(feature_count, classifier.output_shape[-1])
    copy_head_weights(classifier, head)
    reset_optimizer(head.optimizer, learning_rate)
    return head
