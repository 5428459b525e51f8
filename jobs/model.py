"""Build the classifier of the seed recipe around a keras.applications base.

Keras is imported inside the functions so that importing this module never loads TensorFlow.
"""

import os
import re
from pathlib import Path

import numpy as np

from jobs.backbones import Backbone
from jobs.spec import JobSpec

HEAD_UNITS = 512
# Names the feature cache uses to split the classifier into base and head.
POOLED_LAYER = "pooled"
HEAD_HIDDEN_LAYER = "head_hidden"
PROBABILITIES_LAYER = "probabilities"
AUGMENTATION_FACTOR = 0.1
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB_UNIT = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB_UNIT = (0.229, 0.224, 0.225)
# Per-channel (scale, offset) that reproduce each family's preprocess_input on 0..255 pixels
# (for "caffe", on pixels already in BGR order).
PREPROCESSING_SCALE_OFFSET = {
    "caffe": ((1.0, 1.0, 1.0), tuple(-mean for mean in IMAGENET_MEAN_BGR)),
    "tf": ((1 / 127.5,) * 3, (-1.0,) * 3),
    "torch": (
        tuple(1 / (255 * std) for std in IMAGENET_STD_RGB_UNIT),
        tuple(-mean / std for mean, std in zip(IMAGENET_MEAN_RGB_UNIT, IMAGENET_STD_RGB_UNIT)),
    ),
    "raw": ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
}
# keras.utils.get_file reports a failed download as "URL fetch failure on <url>: <code> -- <reason>".
DOWNLOAD_FAILURE = re.compile(r"URL fetch failure on (?P<url>\S+): .*?-- (?P<reason>.*)", re.DOTALL)


def accelerator_visible() -> bool:
    """Whether Keras' backend sees a GPU or TPU."""
    import keras

    return any("gpu" in str(device).lower() or "tpu" in str(device).lower()
               for device in keras.distribution.list_devices())


def precision_policy(mixed_precision: bool | None) -> str:
    """The Keras dtype policy: mixed bfloat16 when asked, or by default on an accelerator."""
    if mixed_precision is None:
        mixed_precision = accelerator_visible()
    return "mixed_bfloat16" if mixed_precision else "float32"


class WeightsUnavailable(RuntimeError):
    """The requested pretrained weights could not be downloaded or found."""


def _keras_models_dir() -> Path:
    """Where keras.applications caches downloaded weights: $KERAS_HOME/models, ~/.keras by default."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def _keras_weights(weights: str) -> str | None:
    """Translate the spec's weights into keras.applications' `weights` argument."""
    if weights == "none":
        return None
    if weights != "imagenet" and not Path(weights).is_file():
        raise WeightsUnavailable(f"weights file not found: {weights}")
    return weights


def _download_failure(error: Exception) -> WeightsUnavailable | None:
    """A clear WeightsUnavailable for a failed ImageNet download, or None for any other error."""
    match = DOWNLOAD_FAILURE.match(str(error))
    if not match:
        return None
    file_name = match["url"].rsplit("/", 1)[-1]
    return WeightsUnavailable(
        f"could not download ImageNet weights {file_name} into {_keras_models_dir()} (KERAS_HOME) "
        f"from {match['url']}: {match['reason']}"
    )


def build_base(backbone: Backbone, image_size: int, weights: str):
    """The headless keras.applications model for square RGB images of image_size."""
    import keras

    constructor = getattr(keras.applications, backbone.name)
    try:
        return constructor(include_top=False, weights=_keras_weights(weights), input_shape=(image_size, image_size, 3))
    except Exception as error:
        unavailable = _download_failure(error) if weights == "imagenet" else None
        if unavailable is None:
            raise
        raise unavailable from error


def _rgb_to_bgr(pixels):
    """Reverse the channel order with a fixed, frozen 3x3 permutation matrix (it promotes uint8 to float32)."""
    import keras

    # Its weights are set just below; a non-random initializer draws no seed, so the head's random
    # initialisation is the one a plain model built from the same seed gets.
    rgb_to_bgr = keras.layers.Dense(3, use_bias=False, trainable=False, kernel_initializer="zeros", name="rgb_to_bgr")
    reordered = rgb_to_bgr(pixels)
    rgb_to_bgr.set_weights([np.eye(3, dtype="float32")[::-1]])
    return reordered


def add_preprocessing(pixels, mode: str):
    """Apply the family's preprocessing with built-in layers, so model.keras loads in safe mode."""
    import keras

    if mode == "caffe":
        # Caffe-trained bases expect BGR. Swapping before the mean is subtracted keeps the matrix
        # product exact even at TF32 or bf16 precision: whole numbers up to 255 survive both.
        pixels = _rgb_to_bgr(pixels)
    scale, offset = PREPROCESSING_SCALE_OFFSET[mode]
    # Rescaling also casts uint8 input to float32.
    return keras.layers.Rescaling(scale=list(scale), offset=list(offset), name=f"preprocess_{mode}")(pixels)


def _augment(images):
    """Random flips, rotations and zooms, active only while training."""
    import keras

    images = keras.layers.RandomFlip("horizontal")(images)
    images = keras.layers.RandomRotation(AUGMENTATION_FACTOR)(images)
    return keras.layers.RandomZoom(AUGMENTATION_FACTOR)(images)


def build_classifier(base, backbone: Backbone, spec: JobSpec, class_count: int):
    """Raw uint8 pixels -> preprocessing -> [augmentation] -> frozen base -> pooled dense head."""
    import keras

    base.trainable = False
    pixels = keras.Input(shape=(spec.image_size, spec.image_size, 3), dtype="uint8", name="pixels")
    images = add_preprocessing(pixels, backbone.preprocessing)
    if spec.augment:
        images = _augment(images)
    # training=False keeps BatchNormalization in inference mode, even once layers are unfrozen.
    features = base(images, training=False)
    pooled = keras.layers.GlobalAveragePooling2D(name=POOLED_LAYER)(features)
    return keras.Model(pixels, add_head(pooled, class_count), name=f"{backbone.name}_classifier")


def add_head(pooled, class_count: int, kernel_initializer: str = "glorot_uniform"):
    """The seed's head on pooled features: Dense(512, relu) -> Dense(classes, softmax)."""
    import keras

    hidden = keras.layers.Dense(HEAD_UNITS, activation="relu", kernel_initializer=kernel_initializer,
                                name=HEAD_HIDDEN_LAYER)(pooled)
    # Softmax stays float32 even under a mixed-precision policy.
    return keras.layers.Dense(class_count, activation="softmax", dtype="float32", kernel_initializer=kernel_initializer,
                              name=PROBABILITIES_LAYER)(hidden)


def compile_classifier(model, learning_rate: float, **options) -> None:
    """Compile with Adam and categorical cross-entropy (labels are one-hot); options go to compile."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="categorical_crossentropy",
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        **options,
    )


def unfreeze_top_layers(base, layer_count: int) -> None:
    """Make the last layer_count layers of the base trainable, leaving BatchNormalization frozen."""
    import keras

    # Setting trainable on the base sets it on every layer, so the per-layer choice comes after.
    base.trainable = True
    boundary = len(base.layers) - layer_count
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= boundary and not isinstance(layer, keras.layers.BatchNormalization)


HEAD_INIT_STREAM = 7  # separates the head's random stream from any other use of a trial's seed


def _glorot_uniform(generator: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Keras' default Dense kernel initialisation, drawn from a numpy generator."""
    limit = np.sqrt(6 / (fan_in + fan_out))
    return generator.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)


def initial_head_weights(feature_count: int, class_count: int, seed: int) -> list[np.ndarray]:
    """The head's starting weights for a trial's seed: [hidden kernel, hidden bias, output kernel, output bias].

    Drawn with numpy, so a trial starts from the same head on every backend and on both training paths
    (cached features or end to end), whatever else consumed Keras' random state before.
    """
    generator = np.random.default_rng([seed, HEAD_INIT_STREAM])
    return [_glorot_uniform(generator, feature_count, HEAD_UNITS), np.zeros(HEAD_UNITS, np.float32),
            _glorot_uniform(generator, HEAD_UNITS, class_count), np.zeros(class_count, np.float32)]


def head_weights(model) -> list[np.ndarray]:
    """The classifier's head weights, in initial_head_weights' order."""
    return [np.asarray(weight) for name in (HEAD_HIDDEN_LAYER, PROBABILITIES_LAYER)
            for weight in model.get_layer(name).get_weights()]


def set_head_weights(model, weights: list[np.ndarray]) -> None:
    """Give the classifier's head these weights (initial_head_weights' order)."""
    model.get_layer(HEAD_HIDDEN_LAYER).set_weights(weights[:2])
    model.get_layer(PROBABILITIES_LAYER).set_weights(weights[2:])
