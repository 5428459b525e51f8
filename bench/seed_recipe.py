"""The seed recipe in plain Keras: the five backbones one after another in one process, frozen base,
the whole model run every epoch (the baseline that tlbench's feature cache is measured against).

    python -m bench.data DATA_FOLDER
    python -m bench.seed_recipe DATA_FOLDER [--epochs 10] [--backbones VGG16,...] [--init-seed 0] [--out seed.json]

Same images, split, sizes and hyper-parameters as `make bench` gives tlbench; prints one JSON report.
--init-seed changes only the initialisation and batch order (the split stays tlbench's), to see how
far the recipe's own accuracies move from one random start to another.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

from bench import recipe
from jobs.backbones import get_backbone
from jobs.datasets import scan_dataset
from jobs.images import decode_image
from jobs.model import initial_head_weights
from jobs.splits import split_indices
from jobs.training import shuffled_batches


def load_split(root: Path, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decoded images and one-hot labels, split exactly as tlbench splits them."""
    dataset = scan_dataset(root)
    images = np.stack([decode_image(root / image_file.path, image_size) for image_file in dataset.files])
    labels = np.eye(len(dataset.classes), dtype="float32")[[image_file.label for image_file in dataset.files]]
    split = split_indices(dataset.files, recipe.VALIDATION_SPLIT, recipe.SEED, recipe.TEST_SPLIT)
    return images[split.train], labels[split.train], images[split.validation], labels[split.validation]


def build_model(name: str, image_size: int, class_count: int, init_seed: int = recipe.SEED):
    """Frozen headless base → GlobalAveragePooling2D → Dense(512, relu) → Dense(n, softmax), as the seed.

    The head starts from the weights tlbench's trial of this seed starts from (numpy-drawn, glorot uniform:
    the seed's own initialiser), so a difference in the result is not the luck of the draw.
    """
    base = getattr(keras.applications, name)(include_top=False, weights=None,
                                             input_shape=(image_size, image_size, 3))
    base.trainable = False
    pooled = keras.layers.GlobalAveragePooling2D()(base.output)
    hidden_layer = keras.layers.Dense(512, activation="relu")
    output_layer = keras.layers.Dense(class_count, activation="softmax")
    probabilities = output_layer(hidden_layer(pooled))
    head = initial_head_weights(int(pooled.shape[-1]), class_count, init_seed)
    hidden_layer.set_weights(head[:2])
    output_layer.set_weights(head[2:])
    model = keras.Model(base.input, probabilities)
    model.compile(optimizer=keras.optimizers.Adam(recipe.LEARNING_RATE), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def train_one(name: str, image_size: int, root: Path, epochs: int, init_seed: int = recipe.SEED) -> dict:
    """Train one backbone the seed's way; its best validation accuracy and its seconds."""
    started = time.perf_counter()
    keras.utils.set_random_seed(init_seed)
    train_images, train_labels, validation_images, validation_labels = load_split(root, image_size)
    preprocess = getattr(keras.applications, get_backbone(name).family).preprocess_input
    model = build_model(name, image_size, train_labels.shape[1], init_seed)
    # The batches come in tlbench's seeded order: with the same initialisation and batches, any
    # difference in the result is what tlbench's shortcuts change, not luck of the draw.
    batches = shuffled_batches(preprocess(train_images.astype("float32")), train_labels, recipe.BATCH_SIZE, init_seed)
    history = model.fit(batches, shuffle=False, callbacks=[batches.callback()],
                        validation_data=(preprocess(validation_images.astype("float32")), validation_labels),
                        validation_batch_size=recipe.BATCH_SIZE, epochs=epochs, verbose=0)
    return {"backbone": name, "image_size": image_size, "best_val_accuracy": max(history.history["val_accuracy"]),
            "val_accuracy": history.history["val_accuracy"], "seconds": time.perf_counter() - started}


def main() -> int:
    """Train every backbone in turn, print the report and optionally save it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder of class sub-folders")
    parser.add_argument("--epochs", type=int, default=recipe.EPOCHS)
    parser.add_argument("--backbones", default=",".join(recipe.DEFAULT_BACKBONES))
    parser.add_argument("--init-seed", type=int, default=recipe.SEED, help="seed of the initialisation and batch order")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = recipe.smallest_sizes(args.backbones.split(","))
    results = []
    for name, size in sizes.items():
        results.append(train_one(name, size, args.data, args.epochs, args.init_seed))
        print(f"seed recipe: {name} done in {results[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    report = json.dumps({"keras": keras.__version__, "backend": keras.backend.backend(), "results": results}, indent=2)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
