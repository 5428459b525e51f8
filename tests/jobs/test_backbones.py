import keras
import pytest

from jobs.backbones import BACKBONES, FAMILY_PREPROCESSING, SEED_BACKBONES, UnknownBackbone, get_backbone

# Building is quick at the minimum size; these cover every preprocessing mode and odd minimum.
BUILT_BACKBONES = (*SEED_BACKBONES, "MobileNetV3Small", "EfficientNetB0", "ConvNeXtTiny", "DenseNet121")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_entry_matches_keras_applications(name):
    backbone = BACKBONES[name]
    assert backbone.name == name
    assert callable(getattr(keras.applications, name))
    assert callable(getattr(keras.applications, backbone.family).preprocess_input)
    assert backbone.preprocessing in {"caffe", "tf", "torch", "raw"}
    assert backbone.min_size <= backbone.default_size


def test_covers_every_family_and_the_seed_backbones():
    assert {backbone.family for backbone in BACKBONES.values()} == set(FAMILY_PREPROCESSING)
    assert set(SEED_BACKBONES) <= set(BACKBONES)
    assert len(BACKBONES) == 40


@pytest.mark.parametrize("name", BUILT_BACKBONES)
def test_builds_at_its_minimum_size_but_not_below(name):
    backbone = get_backbone(name)
    constructor = getattr(keras.applications, name)
    constructor(include_top=False, weights=None, input_shape=(backbone.min_size,) * 2 + (3,))
    with pytest.raises(ValueError, match="at least"):
        constructor(include_top=False, weights=None, input_shape=(backbone.min_size - 1,) * 2 + (3,))


def test_unknown_backbone_names_the_name():
    with pytest.raises(UnknownBackbone, match="unknown backbone 'Foo'"):
        get_backbone("Foo")
    assert str(UnknownBackbone("unknown backbone 'Foo'")) == "unknown backbone 'Foo'"
