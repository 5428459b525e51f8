"""`make bench-scale`: the same small jobs on one CPU worker, then on two, then on two in separate homes with an
object store; the wall times, the speed-up and what the object store costs.

    python -m bench.scale [--jobs 8] [--epochs 6] [--backbone MobileNetV2] [--images-per-class 40] [--out FILE]

Each round starts `tlbench up --gpus none --workers N` (N = 1, then 2: cpu1, then cpu1 and cpu2, each
with its share of the cores for TensorFlow's threads) on a fresh temporary home and a free port, so
neither round finds the other's caches. Once the round's training workers are online and idle, it
submits the jobs, one benchmark each: the same backbone at 32 px, random weights, augmentation on (so
every job trains end to end and none reuses another's cached features: the jobs are alike), and waits
until all have finished. Wall time: from just before the first submit to the last job's `finished_at`
(the stack runs on this host, on the same clock). Prints both rounds, the speed-up (target: at least
1.7) and which worker ran how many jobs; writes the figures as JSON. It is a measurement, not a test:
it exits 1 only if a job did not succeed.

The third round is the second with no shared folder: `tlbench up --gpus none --workers 1` and a
`tlbench worker --gpus none` on a home of its own, both with TLBENCH_STORAGE on an S3-compatible server
(moto's, in this process), so every dataset is fetched from it and every job's folder goes to it. Only the
storage differs from the second round: the second worker uses the first home's database and broker, and
both have one thread each for TensorFlow, as `--workers 2` gives them. The overhead is its wall time over
the second round's (target: at most 15 %).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

from bench import data
from bench.run import RESULTS, machine, output_to, say
from bench.through_api import FINISHED, POLL_SECONDS, BenchStack
from config.settings import load_settings
from testsupport.s3 import create_bucket, s3_server
from testsupport.stack import running_stack, wait_until

SPEED_UP_TARGET = 1.7
OBJECT_STORE_OVERHEAD_TARGET = 0.15
BUCKET = "tlbench-bench"
# What `--workers 2` gives each of two CPU workers on this machine's cores; the object-store round's two
# separately started workers get the same.
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
WORKERS_ONLINE_SECONDS = 120
ROUND_TIMEOUT_SECONDS = 3600
# Polling is kept light (one request a second) so that it takes little from the workers' CPUs; the wall
# time comes from the jobs' own finished_at, not from when the poll noticed.
FINISHED_POLL_SECONDS = 1.0


def parse_arguments() -> argparse.Namespace:
    """Options; the defaults are the run docs/operations.md reports."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--backbone", default="MobileNetV2")
    parser.add_argument("--images-per-class", type=int, default=40,
                        help=f"images per class ({data.CLASSES} classes of {data.IMAGE_SIZE} px PNGs)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json", help="the figures as JSON")
    parser.add_argument("--stack-log", type=Path, default=RESULTS / "scale-stack.log",
                        help="where the stacks' own output goes (one file per round: .1.log, .2.log)")
    return parser.parse_args()


class ScaleStack(BenchStack):
    """A running stack as a round sees it: its jobs."""

    def submit_jobs(self, dataset_id: int, args: argparse.Namespace) -> list[int]:
        """One single-job benchmark per job, all alike; their job ids."""
        request = {"dataset": dataset_id, "backbones": [args.backbone], "epochs": args.epochs,
                   "patience": args.epochs, "image_size": data.IMAGE_SIZE, "batch_size": 16, "weights": "none",
                   "augment": True, "seed": 0}
        return [self.client.submit({**request, "name": f"bench-scale job {number}"})["jobs"][0]["id"]
                for number in range(1, args.jobs + 1)]

    def finished_jobs(self, job_ids: list[int]) -> list[dict] | None:
        """The jobs as the API shows them once every one has ended; None before (one request a call)."""
        listed = {job["id"]: job for benchmark in self._get("/benchmarks")["benchmarks"] for job in benchmark["jobs"]}
        jobs = [listed[job_id] for job_id in job_ids]
        return jobs if all(job["status"] in FINISHED for job in jobs) else None


def run_round(workers: int, args: argparse.Namespace, work: Path) -> dict:
    """One round on a fresh home: start the workers, submit every job, time them to the last one's end."""
    home = work / f"home-{workers}"
    log = args.stack_log.with_suffix(f".{workers}.log")
    say(f"round with {workers} worker(s): starting tlbench up --gpus none --workers {workers} (output: {log})")
    with ExitStack() as running:
        with output_to(log):  # the stack writes there
            started_stack = running.enter_context(running_stack(home, "--gpus", "none", "--workers", str(workers)))
        figures = timed_jobs(ScaleStack(started_stack["url"]), workers, args, work / f"data-{workers}")
    return {"round": f"{workers} worker(s), one home", **figures}


def run_object_store_round(args: argparse.Namespace, work: Path) -> dict:
    """Two workers in homes of their own, datasets and artifacts in an S3-compatible store."""
    log = args.stack_log.with_suffix(".object-store.log")
    say(f"round with 2 workers in separate homes on an object store (output: {log})")
    home_a, home_b = work / "home-store-a", work / "home-store-b"
    with s3_server() as server, ExitStack() as running:
        create_bucket(server.environment, BUCKET)
        environment = {**server.environment, **ONE_THREAD, "TLBENCH_STORAGE": f"s3://{BUCKET}/bench-scale"}
        with output_to(log):  # the stack and the second worker write there
            started_stack = running.enter_context(running_stack(home_a, "--gpus", "none", "--workers", "1",
                                                                environment=environment))
            first_home = load_settings({"TLBENCH_HOME": str(home_a)})
            second = subprocess.Popen(
                [sys.executable, "-m", "tlbench", "worker", "--home", str(home_b), "--gpus", "none"],
                env={**os.environ, **environment, "TLBENCH_HOME": str(home_b),
                     "DATABASE_URL": first_home.database_url, "REDIS_URL": first_home.redis_url})
        running.callback(_stop, second)
        figures = timed_jobs(ScaleStack(started_stack["url"]), 2, args, work / "data-store")
    return {"round": "2 workers, separate homes, object store", **figures}


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM a worker and wait for it."""
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)


def timed_jobs(stack: "ScaleStack", workers: int, args: argparse.Namespace, data_folder: Path) -> dict:
    """Once `workers` training workers are idle: upload the data, submit every job, time them to the last one's
    end."""
    data_root = data.write_dataset(data_folder, args.images_per_class)
    names = wait_until(lambda: len(found := stack.training_workers(idle=True)) == workers and found,
                       WORKERS_ONLINE_SECONDS, f"{workers} idle training workers", interval=POLL_SECONDS)
    dataset_id = stack.upload(data_root)
    started = datetime.now(timezone.utc)
    job_ids = stack.submit_jobs(dataset_id, args)
    say(f"submitted {len(job_ids)} jobs to {', '.join(names)}")
    jobs = wait_until(lambda: stack.finished_jobs(job_ids), ROUND_TIMEOUT_SECONDS, "every job to finish",
                      interval=FINISHED_POLL_SECONDS)
    # The stack runs on this host: its clock is this process's.
    wall_seconds = (max(datetime.fromisoformat(job["finished_at"]) for job in jobs) - started).total_seconds()
    say(f"{wall_seconds:.1f} s; stopping")
    return {"workers": names, "wall_seconds": round(wall_seconds, 1), "jobs": [job_figures(job) for job in jobs]}


def job_figures(job: dict) -> dict:
    """What a round keeps of each job."""
    seconds = (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds() \
        if job["started_at"] and job["finished_at"] else None
    return {"id": job["id"], "status": job["status"], "worker": job["worker"], "error": job["error"],
            "started_at": job["started_at"], "finished_at": job["finished_at"],
            "seconds": round(seconds, 1) if seconds is not None else None}


def render(figures: dict) -> str:
    """The figures as a short report."""
    lines = [f"bench-scale: {figures['options']['jobs']} jobs ({figures['options']['backbone']}, "
             f"{figures['options']['epochs']} epochs end to end, 32 px, {figures['options']['images']} images)"]
    for round_ in figures["rounds"]:
        per_worker = {name: sum(job["worker"] == name for job in round_["jobs"]) for name in round_["workers"]}
        seconds = [job["seconds"] for job in round_["jobs"] if job["seconds"] is not None]
        lines.append(f"  {round_['round']}: {round_['wall_seconds']:.1f} s wall; jobs per worker "
                     f"{per_worker}; a job took {min(seconds):.1f}–{max(seconds):.1f} s")
    verdict = "PASS" if figures["speed_up"] >= SPEED_UP_TARGET else "MISS"
    lines.append(f"  speed-up: {figures['speed_up']:.2f}x (target ≥ {SPEED_UP_TARGET}x: {verdict})")
    overhead = figures["object_store_overhead"]
    verdict = "PASS" if overhead <= OBJECT_STORE_OVERHEAD_TARGET else "MISS"
    lines.append(f"  object store: {overhead:+.1%} wall time against one home (target ≤ "
                 f"{OBJECT_STORE_OVERHEAD_TARGET:.0%}: {verdict})")
    return "\n".join(lines)


def main() -> int:
    """Run both rounds, print the report, write the JSON; 1 if a job did not succeed."""
    args = parse_arguments()
    with tempfile.TemporaryDirectory(prefix="tlbench-scale-") as folder:
        rounds = [*(run_round(workers, args, Path(folder)) for workers in (1, 2)),
                  run_object_store_round(args, Path(folder))]
    figures = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.scale", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).date().isoformat(), "machine": machine(),
        "options": {"jobs": args.jobs, "epochs": args.epochs, "backbone": args.backbone,
                    "images": args.images_per_class * data.CLASSES},
        "rounds": rounds, "speed_up": round(rounds[0]["wall_seconds"] / rounds[1]["wall_seconds"], 2),
        "object_store_overhead": round(rounds[2]["wall_seconds"] / rounds[1]["wall_seconds"] - 1, 3),
    }
    print(render(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    say(f"figures written to {args.out}")
    return 0 if all(job["status"] == "succeeded" for round_ in rounds for job in round_["jobs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
