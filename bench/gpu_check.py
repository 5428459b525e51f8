"""GPU check: run the job code (jobs.training.run_job) under KERAS_BACKEND=jax on an accelerator
machine that has no TensorFlow, and report seconds per epoch and images per second per backbone,
and the images per second of feature extraction and fine-tuning against the ceilings in
docs/performance.md.

    KERAS_BACKEND=jax python -m bench.gpu_check --out results.json

The dataset is generated (5 colour classes, 400 PNGs each, 1,600 of them for training), the recipe is
the seed's (frozen base, fp32, batch 32, weights none), as in the first row of the ceilings' table
(docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

from bench.throughput import throughput_report  # noqa: E402
from jobs.backbones import SEED_BACKBONES  # noqa: E402
from jobs.datasets import scan_dataset  # noqa: E402
from jobs.spec import JobSpec  # noqa: E402
from jobs.training import TrainsAlone  # noqa: E402
from testsupport.images import make_image_folder  # noqa: E402  (coloured, learnable classes)

# The seed ran ResNet50 at 197 px and the others at 150 px.
SEED_SIZES = {"ResNet50": 197}
SEED_SIZE = 150


class CollectingReporter(TrainsAlone):
    """Keeps every epoch's metrics in memory; never stops the job."""

    def __init__(self):
        self.epochs: list[dict] = []

    def resume_from(self, rows: dict) -> None:
        """Start from these epochs of the job's one trial (none: a new job)."""
        self.epochs = [dict(row) for trial_rows in rows.values() for row in trial_rows]

    def record_epochs(self, epoch: int, rows: dict[int, dict]) -> None:
        """Keep the epoch."""
        self.epochs.extend({"epoch": epoch, **metrics} for metrics in rows.values())

    def record_trials(self, results: list[dict]) -> None:
        """Results are in the summary; nothing to keep."""

    def progress(self, message: str) -> None:
        """Print the phase with a timestamp."""
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    def should_stop(self) -> bool:
        """Never cancelled."""
        return False


def measure(backbone: str, dataset_root: Path, work: Path, epochs: int, batch_size: int) -> dict:
    """Run one backbone's job and summarise its epoch timings."""
    from jobs.training import run_job

    # The seed's loop in fp32, as the ceilings measured it (docs/performance.md): no feature cache, no mixed precision.
    spec = JobSpec(backbone=backbone, image_size=SEED_SIZES.get(backbone, SEED_SIZE), epochs=epochs,
                   batch_size=batch_size, learning_rate=1e-3, patience=epochs, weights="none", seed=0,
                   validation_split=0.2, feature_cache=False, mixed_precision=False)
    reporter = CollectingReporter()
    started = time.perf_counter()
    summary = run_job(spec, scan_dataset(dataset_root), work / backbone, work / "cache", reporter)
    steady = [row["seconds"] for row in reporter.epochs[1:]]
    return {
        "backbone": backbone, "image_size": spec.image_size, "n_train": summary["n_train"],
        "first_epoch_seconds": reporter.epochs[0]["seconds"],
        "steady_epoch_seconds": statistics.median(steady),
        "steady_images_per_second": summary["n_train"] / statistics.median(steady),
        "seconds_per_1600_images": statistics.median(steady) * 1600 / summary["n_train"],
        "job_wall_seconds": time.perf_counter() - started,
        "best_val_accuracy": summary["best_val_accuracy"],
        "latency_ms_per_image": summary["latency_ms_per_image"],
    }


def accelerator_names() -> list[str]:
    """The devices the JAX backend sees (or the host's processor on other backends)."""
    try:
        import jax
    except ImportError:
        return [platform.processor() or platform.machine()]
    return [f"{device} ({device.device_kind})" for device in jax.devices()]


def main() -> int:
    """Generate the data, run every backbone, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=",".join(SEED_BACKBONES))
    parser.add_argument("--per-class", type=int, default=400, help="images per class (5 classes; 80%% train)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--modes", default="seed,throughput",
                        help="seed: the seed's loop through run_job; throughput: feature extraction and "
                             "fine-tuning images/s against the ceilings in docs/performance.md")
    parser.add_argument("--throughput-images", type=int, default=2048)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import keras

    backbones, modes = args.backbones.split(","), args.modes.split(",")
    report = {"backend": keras.backend.backend(), "keras": keras.__version__, "devices": accelerator_names(),
              "python": platform.python_version()}
    if "seed" in modes:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            dataset_root = make_image_folder(work / "data", classes=5, per_class=args.per_class, size=SEED_SIZE)
            report["results"] = [measure(name, dataset_root, work, args.epochs, args.batch_size) for name in backbones]
    if "throughput" in modes:
        report["throughput"] = [throughput_report(name, SEED_SIZES.get(name, SEED_SIZE), args.throughput_images)
                                for name in backbones]
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
