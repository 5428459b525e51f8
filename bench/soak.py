"""`make soak`: many small jobs through two workers while workers are killed; every job must still succeed.

    python -m bench.soak [--jobs 50] [--kills 5] [--epochs 5] [--backbones VGG16,...] [--seed N] [--out FILE]

Starts `tlbench up --workers 2` on a temporary home and a free port (TLBENCH_JOB_LOST_AFTER=15),
uploads a small generated dataset and submits the jobs as several benchmarks (one job per backbone,
32 px, weights none, augmentation on so every epoch runs the whole model). While they run it sends
SIGKILL, `--kills` times, to a training worker that is in the middle of a job: at random either the
worker's main process (`tlbench up` restarts it) or its pool child (Celery hands the job back). The
kills are spread over the run (kill k once k/(kills+1) of the jobs have finished) and land only on
jobs that have finished at least one epoch, so each one exercises a resume.

At the end every job must have ended `succeeded` with exactly one epoch row per epoch (1..epochs), and
every job hit by a kill must have run again (attempt + 1) from at least the epoch it had reached.
Prints the figures, writes them as JSON, and exits 1 on any failure.
"""

import argparse
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

from bench import data
from bench.run import RESULTS, machine, output_to, say
from bench.through_api import FINISHED, BenchStack, benchmark_request
from testsupport.stack import running_stack, wait_until
from worker.queues import TRAIN_QUEUE

DEFAULT_BACKBONES = "VGG16,VGG19,MobileNet,MobileNetV2,ResNet50"
IMAGES_PER_CLASS = 16
LEARNING_RATE = 1e-3
# A silent job comes back after this many seconds (the default, 60, would make the soak slow).
JOB_LOST_AFTER_SECONDS = 15
POLL_SECONDS = 0.5
# Between two kills, at least this long: the killed worker restarts and takes a job again.
MIN_KILL_GAP_SECONDS = 20
# A kill waits up to this long after its job is chosen, so it lands at a random point of an epoch.
KILL_JITTER_SECONDS = 1.5
WORKERS_ONLINE_SECONDS = 120


def parse_arguments() -> argparse.Namespace:
    """Options; the defaults are the soak the reliability doc reports."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="CPU training workers")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--backbones", default=DEFAULT_BACKBONES, help="one benchmark runs these, one job each")
    parser.add_argument("--images-per-class", type=int, default=IMAGES_PER_CLASS,
                        help=f"images per class ({data.CLASSES} classes of {data.IMAGE_SIZE} px PNGs)")
    parser.add_argument("--seed", type=int, help="seed of the kills' random choices (default: from the clock)")
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json", help="the figures as JSON")
    parser.add_argument("--stack-log", type=Path, default=RESULTS / "soak-stack.log",
                        help="where the stack's own output goes")
    return parser.parse_args()


# The process tree of `tlbench up`, read from /proc.

def child_pids(pid: int) -> list[int]:
    """The children of a process (of every thread of it: billiard starts pool children from a thread)."""
    children = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children += [int(child) for child in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return children


def command_line(pid: int) -> list[str]:
    """A process's arguments (empty once it has gone)."""
    try:
        return [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part]
    except (FileNotFoundError, ProcessLookupError):
        return []


def option(argv: list[str], name: str) -> str | None:
    """The value following `name` on a command line."""
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def training_worker_pids(stack_pid: int) -> dict[str, int]:
    """Each training worker's main process under `tlbench up`, by the name it registers ("cpu1", ...)."""
    workers = {}
    for pid in child_pids(stack_pid):
        argv = command_line(pid)
        if "celery" in argv and option(argv, "--queues") == TRAIN_QUEUE:
            workers[option(argv, "--hostname").split("@")[0]] = pid
    return workers


class SoakStack(BenchStack):
    """The running stack as the soak sees it: every job, the workers, and the processes to kill."""

    def __init__(self, url: str, stack_pid: int, randomness: random.Random):
        super().__init__(url)
        self.stack_pid = stack_pid
        self.random = randomness

    def jobs(self) -> dict[int, dict]:
        """Every job of every benchmark, by id, in one request."""
        return {job["id"]: job for benchmark in self._get("/benchmarks")["benchmarks"] for job in benchmark["jobs"]}

    def job(self, job_id: int) -> dict:
        """One job as the API shows it."""
        return self._get(f"/jobs/{job_id}")

    def epochs_of(self, job_id: int) -> list[int]:
        """The epoch numbers of a job's rows, in order."""
        return [row["epoch"] for row in self._get(f"/jobs/{job_id}/epochs")["epochs"]]

    def wait_for_training_workers(self, count: int) -> None:
        """Wait until `count` training workers are online."""
        wait_until(lambda: len(self.training_workers()) >= count, WORKERS_ONLINE_SECONDS, f"{count} training workers", interval=POLL_SECONDS)

    def kill_worker_of(self, job: dict) -> dict | None:
        """SIGKILL the main process or the pool child (at random) of the worker running `job`."""
        main = training_worker_pids(self.stack_pid).get(job["worker"].split("@")[0])
        if main is None:
            return None
        children = child_pids(main)
        role, pid = ("pool child", children[0]) if children and self.random.random() < 0.5 else ("worker main", main)
        os.kill(pid, signal.SIGKILL)
        return {"process": role, "pid": pid, "worker": job["worker"]}


def submit_all(stack: SoakStack, dataset_id: int, args: argparse.Namespace) -> list[int]:
    """Submit the jobs as benchmarks of the given backbones (the last one may have fewer)."""
    backbones = args.backbones.split(",")
    job_ids: list[int] = []
    number = 0
    while len(job_ids) < args.jobs:
        number += 1
        chosen = backbones[:args.jobs - len(job_ids)]
        request = {**benchmark_request(dataset_id, chosen, args.epochs, LEARNING_RATE, f"make soak #{number}"),
                   "augment": True}
        job_ids += [job["id"] for job in stack.client.submit(request)["jobs"]]
    return job_ids


class Soak:
    """Watch the jobs, kill workers on schedule, time each affected job's recovery."""

    def __init__(self, stack: SoakStack, job_ids: list[int], args: argparse.Namespace):
        self.stack, self.job_ids, self.args = stack, job_ids, args
        self.started = time.monotonic()
        self.kills: list[dict] = []
        self.last_kill = -MIN_KILL_GAP_SECONDS

    def elapsed(self) -> float:
        """Seconds since the jobs were submitted."""
        return time.monotonic() - self.started

    def kill_due(self, jobs: dict[int, dict]) -> bool:
        """Kill number k is due once k/(kills+1) of the jobs have finished, and the last kill is far enough back."""
        if len(self.kills) >= self.args.kills or self.elapsed() - self.last_kill < MIN_KILL_GAP_SECONDS:
            return False
        finished = sum(job["status"] in FINISHED for job in jobs.values())
        return finished >= (len(self.kills) + 1) * len(self.job_ids) / (self.args.kills + 1)

    def mid_job(self, jobs: dict[int, dict]) -> list[dict]:
        """Running jobs with at least one epoch done and one to go.

        Of the jobs a worker is shown running, only its latest is: after a pool child is killed, its
        job stays `running` on that worker until it is re-queued, while the worker already runs another.
        """
        latest: dict[str, dict] = {}
        for job in jobs.values():
            if job["status"] == "running" and job["worker"] and job["started_at"] and (
                    job["worker"] not in latest or job["started_at"] > latest[job["worker"]]["started_at"]):
                latest[job["worker"]] = job
        return [job for job in latest.values() if 1 <= job["epochs_done"] < job["epochs"]]

    def try_kill(self, jobs: dict[int, dict]) -> None:
        """Kill the worker of a random job in the middle of its training, if there is one."""
        candidates = self.mid_job(jobs)
        killed_before = {kill["job_id"] for kill in self.kills}
        # A job not hit yet where there is one: more resumes seen.
        candidates = [job for job in candidates if job["id"] not in killed_before] or candidates
        if not candidates:
            return
        chosen = self.stack.random.choice(candidates)
        time.sleep(self.stack.random.uniform(0, KILL_JITTER_SECONDS))
        job = self.stack.job(chosen["id"])
        if job["status"] != "running" or job["epochs_done"] >= job["epochs"] or job["worker"] != chosen["worker"]:
            return  # it moved on meanwhile; try again at the next poll
        killed = self.stack.kill_worker_of(job)
        if killed is None:
            return
        self.last_kill = self.elapsed()
        record = {"number": len(self.kills) + 1, "at_seconds": round(self.last_kill, 1),
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **killed,
                  "job_id": job["id"], "backbone": job["backbone"], "epochs_done_at_kill": job["epochs_done"],
                  "attempt_at_kill": job["attempt"], "requeued_after_seconds": None, "recovered_after_seconds": None}
        self.kills.append(record)
        say(f"kill {record['number']}: SIGKILL {killed['process']} {killed['pid']} of {killed['worker']} "
            f"(job {job['id']} {job['backbone']}, epoch {job['epochs_done']}/{job['epochs']}, "
            f"attempt {job['attempt']})")

    def note_recoveries(self, jobs: dict[int, dict]) -> None:
        """When a killed job was seen back in the queue, and when a later attempt of it ran."""
        for kill in self.kills:
            job = jobs[kill["job_id"]]
            rerun = job["attempt"] > kill["attempt_at_kill"]
            if kill["requeued_after_seconds"] is None and (job["status"] == "queued" or rerun):
                kill["requeued_after_seconds"] = round(self.elapsed() - kill["at_seconds"], 1)
            if kill["recovered_after_seconds"] is None and rerun:
                kill["recovered_after_seconds"] = round(self.elapsed() - kill["at_seconds"], 1)
                say(f"job {job['id']} runs again: attempt {job['attempt']}, "
                    f"{kill['recovered_after_seconds']} s after kill {kill['number']}")

    def run(self) -> dict[int, dict]:
        """Poll until every job has finished (or the timeout); the jobs as last seen."""
        finished_before = -1
        while True:
            jobs = {job_id: job for job_id, job in self.stack.jobs().items() if job_id in self.job_ids}
            self.note_recoveries(jobs)
            finished = sum(job["status"] in FINISHED for job in jobs.values())
            if finished != finished_before:
                say(f"{finished}/{len(self.job_ids)} jobs finished")
                finished_before = finished
            if finished == len(self.job_ids) or self.elapsed() > self.args.timeout:
                return jobs
            if self.kill_due(jobs):
                self.try_kill(jobs)
            time.sleep(POLL_SECONDS)


def check(stack: SoakStack, jobs: dict[int, dict], soak: Soak, args: argparse.Namespace) -> list[tuple[int | None, str]]:
    """Every job succeeded with epochs 1..epochs once each; every killed job ran again from its epoch.

    Each problem comes with the job it concerns (None for the soak itself).
    """
    problems = []
    expected = list(range(1, args.epochs + 1))
    for job_id in soak.job_ids:
        job = jobs[job_id] = stack.job(job_id)
        if job["status"] != "succeeded":
            problems.append((job_id, f"job {job_id} ({job['backbone']}) ended {job['status']} after attempt "
                                     f"{job['attempt']}: {job['error']}"))
        elif (epochs := stack.epochs_of(job_id)) != expected:
            problems.append((job_id, f"job {job_id} ({job['backbone']}) has epoch rows {epochs}, expected {expected}"))
    if len(soak.kills) < args.kills:
        problems.append((None, f"only {len(soak.kills)} of {args.kills} kills landed (the jobs finished first)"))
    for kill in soak.kills:
        job = jobs[kill["job_id"]]
        kill["final_attempt"] = job["attempt"]
        kill["resumed_after_epoch"] = (job["summary"] or {}).get("resumed_after_epoch")
        if job["attempt"] <= kill["attempt_at_kill"]:
            problems.append((job["id"], f"kill {kill['number']}: job {job['id']} never ran again "
                                        f"(attempt {job['attempt']})"))
        elif job["status"] == "succeeded" and (kill["resumed_after_epoch"] or 0) < kill["epochs_done_at_kill"]:
            problems.append((job["id"], f"kill {kill['number']}: job {job['id']} had {kill['epochs_done_at_kill']} "
                                        f"epochs done but its last attempt resumed after epoch "
                                        f"{kill['resumed_after_epoch']}"))
    return problems


def log_excerpts(stack_log: Path, job_ids: set[int], most: int = 8) -> dict[str, list[str]]:
    """The last lines of the stack's log that name each of these jobs ("job 12: ...", "job 12 failed")."""
    lines = stack_log.read_text(errors="replace").splitlines() if stack_log.exists() else []
    return {str(job_id): [line[-300:] for line in lines if re.search(rf"\bjob {job_id}\b", line)][-most:]
            for job_id in sorted(job_ids)}


def figures_of(jobs: dict[int, dict], soak: Soak, wall_seconds: float, problems: list[tuple[int | None, str]]) -> dict:
    """What the soak measured."""
    attempts = [job["attempt"] for job in jobs.values()]
    killed = {kill["job_id"] for kill in soak.kills}
    return {
        "passed": not problems, "problems": [problem for _, problem in problems], "wall_seconds": round(wall_seconds, 1),
        "jobs": len(jobs), "succeeded": sum(job["status"] == "succeeded" for job in jobs.values()),
        "jobs_with_more_than_one_attempt": sum(attempt > 1 for attempt in attempts),
        "attempts": {str(n): attempts.count(n) for n in sorted(set(attempts))},
        "rerun_without_a_kill": sorted(job_id for job_id, job in jobs.items()
                                       if job["attempt"] > 1 and job_id not in killed),
        "kills": soak.kills,
        "job_attempts": {str(job_id): job["attempt"] for job_id, job in sorted(jobs.items())},
        # What the workers logged about the killed jobs and the jobs that went wrong.
        "log_excerpts": log_excerpts(soak.args.stack_log, killed | {job_id for job_id, _ in problems if job_id}),
    }


def render(figures: dict) -> str:
    """The figures as a short report."""
    lines = [f"soak: {figures['succeeded']}/{figures['jobs']} jobs succeeded in {figures['wall_seconds']} s; "
             f"{figures['jobs_with_more_than_one_attempt']} needed more than one attempt "
             f"(attempts: {figures['attempts']}; re-run without a kill: {figures['rerun_without_a_kill'] or 'none'})"]
    for kill in figures["kills"]:
        lines.append(f"  kill {kill['number']} at {kill['at_seconds']} s ({kill['time']}): {kill['process']} "
                     f"{kill['pid']} of {kill['worker']}; job {kill['job_id']} {kill['backbone']} at epoch "
                     f"{kill['epochs_done_at_kill']}, attempt {kill['attempt_at_kill']} → {kill.get('final_attempt')}, "
                     f"resumed after epoch {kill.get('resumed_after_epoch')}; back in the queue "
                     f"{kill['requeued_after_seconds']} s and running again {kill['recovered_after_seconds']} s "
                     f"after the kill")
    for job_id, excerpt in figures["log_excerpts"].items():
        lines += [f"  log, job {job_id}:", *(f"    {line}" for line in excerpt)]
    lines += [f"  FAIL {problem}" for problem in figures["problems"]]
    lines.append("PASS" if figures["passed"] else "FAIL")
    return "\n".join(lines)


def run_soak(args: argparse.Namespace, work: Path, randomness: random.Random) -> dict:
    """Start the stack, submit, kill, check."""
    data_root = data.write_dataset(work / "data", args.images_per_class)
    os.environ["TLBENCH_JOB_LOST_AFTER"] = str(JOB_LOST_AFTER_SECONDS)  # the stack inherits it
    say(f"starting tlbench up --workers {args.workers} (its output: {args.stack_log})")
    with ExitStack() as stacks:
        with output_to(args.stack_log):
            running = stacks.enter_context(running_stack(work / "home", "--workers", str(args.workers)))
        stack = SoakStack(running["url"], running["process"].pid, randomness)
        dataset_id = stack.upload(data_root)
        stack.wait_for_training_workers(args.workers)
        job_ids = submit_all(stack, dataset_id, args)
        say(f"submitted {len(job_ids)} jobs; {args.kills} kills to come")
        soak = Soak(stack, job_ids, args)
        jobs = soak.run()
        wall_seconds = soak.elapsed()
        problems = check(stack, jobs, soak, args)
        say("stopping the stack")
    return figures_of(jobs, soak, wall_seconds, problems)


def main() -> int:
    """Run the soak, print the report, write the JSON; 1 on any failure."""
    args = parse_arguments()
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    with tempfile.TemporaryDirectory(prefix="tlbench-soak-") as folder:
        figures = run_soak(args, Path(folder), random.Random(seed))
    figures.update(command=" ".join([Path(sys.executable).name, "-m", "bench.soak", *sys.argv[1:]]), seed=seed,
                   date=datetime.now(timezone.utc).date().isoformat(), machine=machine(),
                   options={"jobs": args.jobs, "workers": args.workers, "kills": args.kills, "epochs": args.epochs,
                            "backbones": args.backbones, "images_per_class": args.images_per_class,
                            "job_lost_after_seconds": JOB_LOST_AFTER_SECONDS})
    print(render(figures))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    say(f"figures written to {args.out}")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
