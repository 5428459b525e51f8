"""The pretrained image backbones of keras.applications, as plain data (no Keras import)."""

from dataclasses import dataclass

# How each family's `preprocess_input` maps raw 0..255 RGB pixels to the base's input:
#   "caffe": RGB -> BGR, then subtract the ImageNet mean per channel (no scaling).
#   "tf":    x / 127.5 - 1, so pixels land in [-1, 1].
#   "torch": x / 255, then normalise with the ImageNet mean and standard deviation.
#   "raw":   the model already holds its own preprocessing layers (include_preprocessing)
#            and expects raw 0..255 pixels; the family's preprocess_input is a pass-through.
FAMILY_PREPROCESSING = {
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet": "caffe",
    "resnet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "mobilenet_v3": "raw",
    "efficientnet": "raw",
    "efficientnet_v2": "raw",
    "convnext": "raw",
}


@dataclass(frozen=True)
class Backbone:
    """One keras.applications constructor and the facts a job needs about it."""

    name: str
    family: str
    default_size: int
    min_size: int

    @property
    def preprocessing(self) -> str:
        """The preprocessing mode of this backbone's family (see FAMILY_PREPROCESSING)."""
        return FAMILY_PREPROCESSING[self.family]


def _backbones(*entries: tuple[str, str, int, int]) -> dict[str, Backbone]:
    """Index backbones by name."""
    return {name: Backbone(name, family, default, minimum) for name, family, default, minimum in entries}


# Minimum sizes are those keras.applications accepts without the top, checked by building
# each model with weights=None (tests/jobs/test_backbones.py builds a sample of them).
BACKBONES: dict[str, Backbone] = _backbones(
    ("VGG16", "vgg16", 224, 32),
    ("VGG19", "vgg19", 224, 32),
    ("ResNet50", "resnet", 224, 32),
    ("ResNet101", "resnet", 224, 32),
    ("ResNet152", "resnet", 224, 32),
    ("ResNet50V2", "resnet_v2", 224, 32),
    ("ResNet101V2", "resnet_v2", 224, 32),
    ("ResNet152V2", "resnet_v2", 224, 32),
    ("InceptionV3", "inception_v3", 299, 75),
    ("InceptionResNetV2", "inception_resnet_v2", 299, 75),
    ("Xception", "xception", 299, 71),
    ("MobileNet", "mobilenet", 224, 32),
    ("MobileNetV2", "mobilenet_v2", 224, 32),
    ("MobileNetV3Small", "mobilenet_v3", 224, 32),
    ("MobileNetV3Large", "mobilenet_v3", 224, 32),
    ("DenseNet121", "densenet", 224, 32),
    ("DenseNet169", "densenet", 224, 32),
    ("DenseNet201", "densenet", 224, 32),
    ("NASNetMobile", "nasnet", 224, 32),
    ("NASNetLarge", "nasnet", 331, 32),
    ("EfficientNetB0", "efficientnet", 224, 32),
    ("EfficientNetB1", "efficientnet", 240, 32),
    ("EfficientNetB2", "efficientnet", 260, 32),
    ("EfficientNetB3", "efficientnet", 300, 32),
    ("EfficientNetB4", "efficientnet", 380, 32),
    ("EfficientNetB5", "efficientnet", 456, 32),
    ("EfficientNetB6", "efficientnet", 528, 32),
    ("EfficientNetB7", "efficientnet", 600, 32),
    ("EfficientNetV2B0", "efficientnet_v2", 224, 32),
    ("EfficientNetV2B1", "efficientnet_v2", 240, 32),
    ("EfficientNetV2B2", "efficientnet_v2", 260, 32),
    ("EfficientNetV2B3", "efficientnet_v2", 300, 32),
    ("EfficientNetV2S", "efficientnet_v2", 384, 32),
    ("EfficientNetV2M", "efficientnet_v2", 480, 32),
    ("EfficientNetV2L", "efficientnet_v2", 480, 32),
    ("ConvNeXtTiny", "convnext", 224, 32),
    ("ConvNeXtSmall", "convnext", 224, 32),
    ("ConvNeXtBase", "convnext", 224, 32),
    ("ConvNeXtLarge", "convnext", 224, 32),
    ("ConvNeXtXLarge", "convnext", 224, 32),
)

# The five backbones of the seed recipe tlbench grew out of; docs/performance.md measures them (ceilings, GPU check,
# make bench).
SEED_BACKBONES = ("VGG16", "VGG19", "InceptionV3", "Xception", "ResNet50")


class UnknownBackbone(KeyError):
    """A backbone name that keras.applications does not provide."""

    def __str__(self) -> str:
        """Show the message plainly (KeyError would quote it)."""
        return str(self.args[0])


def get_backbone(name: str) -> Backbone:
    """Return the backbone called `name`, or raise UnknownBackbone."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise UnknownBackbone(f"unknown backbone {name!r}") from None
