import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from jobs.backbones import BACKBONES, get_backbone
from jobs.model import WeightsUnavailable, add_preprocessing, build_base, unfreeze_top_layers

ONE_FAMILY_PER_MODE = {backbone.preprocessing: backbone.family for backbone in BACKBONES.values()}


@pytest.mark.parametrize("mode", sorted(ONE_FAMILY_PER_MODE))
def test_preprocessing_layers_match_the_familys_preprocess_input(mode):
    family = ONE_FAMILY_PER_MODE[mode]
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    preprocessing = keras.Model(inputs, add_preprocessing(inputs, mode))
    expected = getattr(keras.applications, family).preprocess_input(pixels.astype("float32"))
    np.testing.assert_allclose(preprocessing.predict_on_batch(pixels), expected, rtol=1e-5, atol=1e-4)


def test_weights_load_from_a_file(tmp_path):
    original = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    original.save_weights(tmp_path / "vgg16.weights.h5")
    loaded = build_base(get_backbone("VGG16"), 32, str(tmp_path / "vgg16.weights.h5"))
    for mine, theirs in zip(loaded.get_weights(), original.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_missing_weights_file_is_weights_unavailable(tmp_path):
    with pytest.raises(WeightsUnavailable, match="weights file not found"):
        build_base(get_backbone("VGG16"), 32, str(tmp_path / "missing.weights.h5"))


def test_failed_imagenet_download_names_the_file_and_keras_home(tmp_path):
    # KERAS_HOME is read when Keras is imported, hence a fresh process; the dead proxy makes the
    # download fail at once whether or not this machine reaches the internet.
    script = textwrap.dedent(
        """
        from jobs.backbones import get_backbone
        from jobs.model import WeightsUnavailable, build_base
        try:
            build_base(get_backbone("VGG16"), 32, "imagenet")
        except WeightsUnavailable as error:
            print(error)
        """
    )
    dead_proxy = "http://127.0.0.1:9"
    environment = {**os.environ, "KERAS_HOME": str(tmp_path), "https_proxy": dead_proxy, "HTTPS_PROXY": dead_proxy}
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120
    )
    message = result.stdout.strip().splitlines()[-1]
    assert message.startswith("could not download ImageNet weights vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert f"into {tmp_path / 'models'} (KERAS_HOME)" in message


def test_unfreezing_skips_batch_normalization():
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    base.trainable = False
    unfreeze_top_layers(base, 6)
    trainable = [layer for layer in base.layers if layer.trainable]
    assert trainable and all(layer in base.layers[-6:] for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in base.layers[-6:])
