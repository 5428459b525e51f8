"""Drive a running tlbench stack over its JSON API: upload, benchmarks, submit → running latency."""

import time
from datetime import datetime
from pathlib import Path

import requests

from bench import recipe
from testsupport.stack import wait_until
from tlbench.client import ApiClient
from worker.queues import TRAIN_QUEUE

POLL_SECONDS = 0.25
# Polling a job this often measures its start to within a few hundredths of a second.
LATENCY_POLL_SECONDS = 0.02
LATENCY_TIMEOUT_SECONDS = 60
SMALL_JOB_TIMEOUT_SECONDS = 300
# A worker registers within seconds of starting, and a finished job frees it at once.
IDLE_TIMEOUT_SECONDS = 60
FINISHED = ("succeeded", "failed", "cancelled")
GIB = 2**30


def benchmark_request(dataset_id: int, backbones: list[str], epochs: int, learning_rate: float | list[float],
                      name: str, repeats: int = 1) -> dict:
    """The benchmark's request: frozen base, no augmentation, no early stop, weights none."""
    return {
        "dataset": dataset_id, "backbones": backbones, "name": name, "epochs": epochs,
        "batch_size": recipe.BATCH_SIZE, "image_size": recipe.smallest_sizes(backbones),
        "learning_rate": learning_rate, "repeats": repeats, "patience": epochs, "weights": "none", "augment": False,
        "fine_tune_layers": 0, "seed": recipe.SEED, "validation_split": recipe.VALIDATION_SPLIT,
        "test_split": recipe.TEST_SPLIT,
    }


def memory_bound_bytes(image_count: int, image_size: int, model_bytes: int) -> int:
    """The target: 2 × (uint8 cache + model size) + 1 GiB."""
    return 2 * (image_count * image_size**2 * 3 + model_bytes) + GIB


def job_figures(job: dict, image_count: int) -> dict:
    """One job as the API reports it, with the memory bound its summary's peak is held to."""
    model_bytes = (job["summary"] or {}).get("model_bytes")
    return {
        "job_id": job["id"], "backbone": job["backbone"], "status": job["status"], "error": job["error"],
        "image_size": job["image_size"], "created_at": job["created_at"], "started_at": job["started_at"],
        "finished_at": job["finished_at"], "summary": job["summary"] or {},
        "memory_bound_bytes": memory_bound_bytes(image_count, job["image_size"], model_bytes) if model_bytes else None,
    }


def _seconds_between(earlier: str, later: str) -> float:
    """Seconds from one ISO timestamp of the API to another."""
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


class BenchStack:
    """A running stack, given one benchmark at a time, each only once its training worker is idle."""

    def __init__(self, url: str):
        """Drive the stack at `url`."""
        self.url = url
        self.client = ApiClient(url)

    def _get(self, path: str) -> dict:
        """GET one resource of the API."""
        response = requests.get(f"{self.url}/api/v1{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def upload(self, folder: Path) -> int:
        """Upload a folder as a zip; the new dataset's id."""
        return self.client.add_dataset(folder)["id"]

    def training_workers(self, idle: bool = False) -> list[str]:
        """Names of the online training workers (only those running nothing, if idle), as the API shows them."""
        return sorted(worker["name"] for worker in self._get("/workers")["workers"]
                      if worker["status"] == "online" and TRAIN_QUEUE in worker["pools"]
                      and not (idle and worker["current_job"] is not None))

    def wait_for_idle_worker(self) -> None:
        """Wait until a training worker has registered and runs nothing."""
        wait_until(lambda: self.training_workers(idle=True), IDLE_TIMEOUT_SECONDS, "an idle training worker",
                   interval=0.1)

    def run_benchmark(self, request: dict, image_count: int) -> dict:
        """Submit to the idle worker, poll until every job has finished: wall seconds from submit, and figures."""
        self.wait_for_idle_worker()
        started = time.perf_counter()
        benchmark_id = self.client.submit(request)["id"]
        at_submit = self.client.benchmark(benchmark_id)
        jobs = at_submit["jobs"]
        while not all(job["status"] in FINISHED for job in jobs):
            time.sleep(POLL_SECONDS)
            jobs = self.client.benchmark(benchmark_id)["jobs"]
        wall_seconds = time.perf_counter() - started
        figures = [{**job_figures(job, image_count), "artifact_bytes": self.artifact_bytes(job["id"])} for job in jobs]
        return {"wall_seconds": wall_seconds, "benchmark_id": benchmark_id, "learning_rate": request["learning_rate"],
                "repeats": request["repeats"], "jobs": figures, "eta_at_submit_seconds": at_submit["eta_seconds"],
                "eta_basis": at_submit["eta_basis"]}

    def artifact_bytes(self, job_id: int) -> int:
        """The size of everything in a job's artifact folder, as the API lists it."""
        return sum(artifact["bytes"] for artifact in self._get(f"/jobs/{job_id}/artifacts")["artifacts"])

    def submit_to_running_seconds(self, dataset_id: int, backbone: str) -> float:
        """Submit one small job to the idle worker: started_at - created_at as the API reports them."""
        self.wait_for_idle_worker()
        request = benchmark_request(dataset_id, [backbone], epochs=1, learning_rate=recipe.LEARNING_RATE,
                                    name="make bench: submit → running latency")
        job_id = self.client.submit(request)["jobs"][0]["id"]
        job = wait_until(lambda: (found := self._get(f"/jobs/{job_id}"))["started_at"] and found,
                         LATENCY_TIMEOUT_SECONDS, "the latency job to start", interval=LATENCY_POLL_SECONDS)
        # Let it finish, so the next probe (or the stack's shutdown) finds nothing running.
        wait_until(lambda: self._get(f"/jobs/{job_id}")["status"] in FINISHED, SMALL_JOB_TIMEOUT_SECONDS,
                   "the latency job to finish")
        return _seconds_between(job["created_at"], job["started_at"])
