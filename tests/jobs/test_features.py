"""Feature caching gives the seed recipe's result, computes each base's features once, and keys them right."""

import numpy as np
import pytest

from jobs.features import feature_cache_path, uses_feature_cache
from jobs.spec import JobSpec
from jobs.training import run_job


def spec(**changes) -> JobSpec:
    """Three epochs of VGG16 from random weights on 32 px images."""
    settings = dict(backbone="VGG16", image_size=32, epochs=3, batch_size=8, learning_rate=1e-3, patience=10,
                    weights="none", seed=3)
    return JobSpec(**{**settings, **changes})


def predictions(artifact_dir, images: np.ndarray) -> np.ndarray:
    """What the saved model.keras predicts for the images."""
    import keras

    return np.asarray(keras.saving.load_model(artifact_dir / "model.keras").predict(images, verbose=0))


def train_both_ways(dataset, tmp_path_factory, make_reporter, **changes) -> dict:
    """{feature_cache: (summary, reporter, artifacts)} of one job trained on cached features and end to end."""
    results = {}
    for feature_cache in (True, False):
        artifacts = tmp_path_factory.mktemp(f"artifacts-{feature_cache}")
        reporter = make_reporter()
        summary = run_job(spec(feature_cache=feature_cache, **changes), dataset, artifacts,
                          tmp_path_factory.mktemp("cache"), reporter)
        results[feature_cache] = (summary, reporter, artifacts)
    return results


@pytest.fixture(scope="module")
def both_ways(small_dataset, tmp_path_factory, make_reporter):
    """The same job trained on cached features and through the seed's end-to-end loop."""
    return train_both_ways(small_dataset, tmp_path_factory, make_reporter)


def test_feature_caching_reaches_the_seed_recipes_metrics(both_ways):
    (cached, cached_reporter, _), (seed_loop, seed_reporter, _) = both_ways[True], both_ways[False]
    assert cached["feature_cache"] and not seed_loop["feature_cache"]
    assert cached["best_val_accuracy"] == pytest.approx(seed_loop["best_val_accuracy"])  # float64 vs float32
    assert cached["best_epoch"] == seed_loop["best_epoch"]
    for (_, fast), (_, slow) in zip(cached_reporter.epochs, seed_reporter.epochs, strict=True):
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert fast[metric] == pytest.approx(slow[metric], rel=1e-4, abs=1e-5), metric


def test_same_weights_same_split_give_the_same_predictions(both_ways, small_dataset):
    from jobs.images import decode_image

    images = np.stack([decode_image(small_dataset.root / f.path, 32) for f in small_dataset.files])
    cached = predictions(both_ways[True][2], images)
    seed_loop = predictions(both_ways[False][2], images)
    np.testing.assert_allclose(cached, seed_loop, rtol=1e-4, atol=1e-5)


def test_features_are_computed_once_per_base_and_reused(small_dataset, tmp_path, make_reporter):
    cache = tmp_path / "cache"
    run_job(spec(epochs=1), small_dataset, tmp_path / "first", cache, make_reporter())
    features = feature_cache_path(cache, small_dataset.sha256, spec())
    written = features.stat().st_mtime_ns
    reporter = make_reporter()
    run_job(spec(epochs=1, learning_rate=3e-4), small_dataset, tmp_path / "second", cache, reporter)
    assert features.stat().st_mtime_ns == written  # only caches are reused, not results
    assert list((cache / "features").glob("*.npy")) == [features]


@pytest.fixture(scope="module")
def trials_both_ways(small_dataset, tmp_path_factory, make_reporter):
    """Two learning rates x two repeats with a test set, on cached features (stacked heads) and end to end."""
    return train_both_ways(small_dataset, tmp_path_factory, make_reporter, learning_rate=(1e-3, 1e-2), repeats=2,
                           epochs=2, validation_split=0.15, test_split=0.25)


def test_every_trial_trains_alike_on_cached_features_and_end_to_end(trials_both_ways):
    (cached, fast, _), (seed_loop, slow, _) = trials_both_ways[True], trials_both_ways[False]
    assert sorted(fast.trial_epochs) == sorted(slow.trial_epochs) == [0, 1, 2, 3]
    for number in range(4):
        for (_, quick), (_, plain) in zip(fast.trial_epochs[number], slow.trial_epochs[number], strict=True):
            for metric in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
                assert quick[metric] == pytest.approx(plain[metric], rel=1e-4, abs=1e-5), (number, metric)
    assert (cached["chosen_learning_rate"], cached["selected_trial"]) == (seed_loop["chosen_learning_rate"],
                                                                         seed_loop["selected_trial"])
    assert cached["best_val_accuracy"] == pytest.approx(seed_loop["best_val_accuracy"])
    assert cached["test"] == seed_loop["test"]  # the same test predictions give the same interval


def test_every_trial_gives_the_same_test_predictions_both_ways(trials_both_ways):
    for number in range(4):
        saved = [np.load(trials_both_ways[way][2] / "trials" / f"{number:02d}" / "predictions.npz") for way in (True, False)]
        np.testing.assert_array_equal(saved[0]["index"], saved[1]["index"])
        np.testing.assert_array_equal(saved[0]["predicted"], saved[1]["predicted"])
        np.testing.assert_allclose(saved[0]["probabilities"], saved[1]["probabilities"], atol=2e-3)


def test_cache_key_follows_what_decides_the_features(tmp_path):
    weights = tmp_path / "base.weights.h5"
    weights.write_bytes(b"some weights")
    key = lambda **changes: feature_cache_path(tmp_path, "abc", spec(**changes)).name  # noqa: E731
    assert key(seed=1) != key(seed=2)  # a random base depends on its seed
    assert key(weights="imagenet", seed=1) == key(weights="imagenet", seed=2)
    assert key(learning_rate=0.1) == key(learning_rate=0.2) and key(epochs=1) == key(epochs=9)
    assert key(image_size=40) != key(image_size=32) and key(backbone="VGG19") != key()
    first = key(weights=str(weights))
    weights.write_bytes(b"other weights")
    assert key(weights=str(weights)) != first  # a file is known by its content, not its name


@pytest.mark.parametrize("changes, cached", [
    ({}, True), ({"fine_tune_layers": 2}, False), ({"augment": True}, False), ({"feature_cache": False}, False),
])
def test_only_a_frozen_base_without_augmentation_uses_the_cache(changes, cached):
    assert uses_feature_cache(spec(**changes)) is cached
