"""`make bench`: tlbench's five-backbone benchmark end to end against the seed recipe in plain Keras.

    python -m bench.run [--images-per-class 180] [--epochs 10] [--backbones VGG16,...] [--out FILE]

On one machine, one after another: (a) the benchmark through a fresh `tlbench up` (upload, submit,
wait); (b) bench/seed_recipe.py in a fresh process on the same images and split; (c) the benchmark
again on the same stack and home with another learning rate (only caches reusable); (d) the same with
a grid of learning rates × repeats (the trials of each backbone train together); (e) (d) again, for the
time left the API gives a repeated benchmark; then the submit → running latency of small jobs sent to the
idle worker. Prints every figure with PASS or
MISS per target and writes them as JSON.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from bench import data, recipe, report
from bench.through_api import BenchStack, benchmark_request
from testsupport.stack import running_stack

RESULTS = Path(__file__).resolve().parent / "results"
RERUN_LEARNING_RATE = 3e-4
LATENCY_PROBES = 3


def parse_arguments() -> argparse.Namespace:
    """Options; the defaults are the benchmark the targets are set for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=data.IMAGES_PER_CLASS,
                        help=f"images per class ({data.CLASSES} classes of {data.IMAGE_SIZE} px PNGs)")
    parser.add_argument("--epochs", type=int, default=recipe.EPOCHS)
    parser.add_argument("--backbones", default=",".join(recipe.DEFAULT_BACKBONES))
    parser.add_argument("--rerun-learning-rate", type=float, default=RERUN_LEARNING_RATE,
                        help="learning rate of (c), the benchmark run again")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="the figures as JSON")
    parser.add_argument("--stack-log", type=Path, default=RESULTS / "stack.log",
                        help="where the stack's own output goes")
    return parser.parse_args()


@contextmanager
def output_to(log_path: Path):
    """Send this process's stdout and stderr to a file meanwhile, so processes started now inherit it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_path.open("wb") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def say(message: str) -> None:
    """Progress on stderr with the time."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def run_seed_recipe(data_root: Path, args: argparse.Namespace, work: Path) -> dict:
    """(b): bench/seed_recipe.py in a fresh process; wall time from start to exit, TensorFlow import included."""
    report_path = work / "seed_recipe.json"
    command = [sys.executable, "-m", "bench.seed_recipe", str(data_root), "--epochs", str(args.epochs),
               "--backbones", args.backbones, "--out", str(report_path)]
    # Same quiet TensorFlow logging as the workers.
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL,
                   cwd=Path(__file__).resolve().parents[1])
    wall_seconds = time.perf_counter() - started
    return {"wall_seconds": wall_seconds, **json.loads(report_path.read_text())}


def run_all(args: argparse.Namespace, work: Path) -> dict:
    """Generate the data, start the stack, and run (a), (b), (c) and the latency probes in turn."""
    backbones = args.backbones.split(",")
    data_root = data.write_dataset(work / "data", args.images_per_class)
    image_count = data.CLASSES * args.images_per_class
    with ExitStack() as stack:
        say(f"starting tlbench up (its output: {args.stack_log})")
        with output_to(args.stack_log):
            running = stack.enter_context(running_stack(work / "home"))
        bench_stack = BenchStack(running["url"])
        dataset_id = bench_stack.upload(data_root)
        say("(a) tlbench benchmark")
        cold = bench_stack.run_benchmark(benchmark_request(dataset_id, backbones, args.epochs, recipe.LEARNING_RATE,
                                                           "make bench (a)"), image_count)
        say(f"(a) {cold['wall_seconds']:.1f} s; (b) seed recipe")
        seed = run_seed_recipe(data_root, args, work)
        say(f"(b) {seed['wall_seconds']:.1f} s; (c) tlbench benchmark again")
        rerun = bench_stack.run_benchmark(benchmark_request(dataset_id, backbones, args.epochs,
                                                            args.rerun_learning_rate, "make bench (c)"), image_count)
        say(f"(c) {rerun['wall_seconds']:.1f} s; (d) {len(recipe.TRIAL_LEARNING_RATES)} learning rates × "
            f"{recipe.TRIAL_REPEATS} repeats")
        trials = bench_stack.run_benchmark(benchmark_request(dataset_id, backbones, args.epochs,
                                                             list(recipe.TRIAL_LEARNING_RATES), "make bench (d)",
                                                             repeats=recipe.TRIAL_REPEATS), image_count)
        say(f"(d) {trials['wall_seconds']:.1f} s; (e) (d) again, for the time left of a repeated grid")
        repeated = bench_stack.run_benchmark(benchmark_request(dataset_id, backbones, args.epochs,
                                                               list(recipe.TRIAL_LEARNING_RATES), "make bench (e)",
                                                               repeats=recipe.TRIAL_REPEATS), image_count)
        say(f"(e) {repeated['wall_seconds']:.1f} s; submit → running latency")
        latencies = [bench_stack.submit_to_running_seconds(dataset_id, backbones[0]) for _ in range(LATENCY_PROBES)]
        say("stopping the stack")
    return {"dataset": {"images": image_count, "classes": data.CLASSES, "image_size": data.IMAGE_SIZE},
            "tlbench_cold": cold, "seed_recipe": seed, "tlbench_rerun": rerun, "tlbench_trials": trials,
            "tlbench_trials_again": repeated,
            "submit_to_running_seconds": latencies}


def machine() -> dict:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "python": platform.python_version(), "platform": platform.platform()}


def main() -> int:
    """Run the benchmark, print the report, write the JSON."""
    args = parse_arguments()
    with tempfile.TemporaryDirectory(prefix="tlbench-bench-") as folder:
        figures = run_all(args, Path(folder))
    figures.update(date=datetime.now(timezone.utc).date().isoformat(), machine=machine(),
                   options={"images_per_class": args.images_per_class, "epochs": args.epochs,
                            "backbones": args.backbones, "rerun_learning_rate": args.rerun_learning_rate})
    figures["targets"] = report.evaluate(figures)
    print(report.render(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    say(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
