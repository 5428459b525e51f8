"""SQLite under load: 4 worker processes and the web app reading and writing at once.

Each writer is a real OS process that claims one job and writes its epoch rows as fast as it can,
one transaction per epoch as a worker does, while a thread of its own beats (job and worker) like
the runner's heartbeat thread. Meanwhile the real Flask app, in two threads, reads the benchmark
and the epochs and writes (benchmarks submitted, jobs cancelled and retried). No "database is
locked", no lost or doubled row, every request answered 2xx.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from db import operations as ops
from db.models import Job, JobStatus
from db.session import Database
from testsupport.images import make_image_folder
from testsupport.stack import wait_until

WRITERS = 4
EPOCHS = 200
BEAT_SECONDS = 0.02
START_SECONDS = 60
WRITERS_SECONDS = 120
METRICS = {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.7, "learning_rate": 1e-3,
           "seconds": 0.01, "images_per_second": 1000.0}


def write_epochs(database_url: str, job_id: str, worker: str, folder: str) -> None:
    """One writer process: register, claim the job, wait for the start, write EPOCHS rows, finish."""
    job_id, folder = int(job_id), Path(folder)
    database = Database(database_url)
    with database.transaction() as session:
        ops.register_worker(session, worker, "localhost", "CPU", None, ["default"])
    with database.transaction() as session:
        attempt = ops.claim_job(session, job_id, worker)
    assert attempt == 1, f"job {job_id} could not be claimed ({attempt})"
    stopped = threading.Event()
    beat_errors: list[BaseException] = []

    def beat() -> None:
        """Like the runner's heartbeat thread, only much more often."""
        try:
            while not stopped.wait(BEAT_SECONDS):
                with database.transaction() as session:
                    assert ops.heartbeat(session, job_id, attempt, phase="training")
                    ops.worker_heartbeat(session, worker)
        except BaseException as error:  # reported by the main thread, so the exit code shows it
            beat_errors.append(error)
            raise

    (folder / f"ready-{job_id}").touch()
    wait_until(lambda: (folder / "go").exists(), START_SECONDS, "the go signal", interval=0.01)
    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    for epoch in range(1, EPOCHS + 1):
        with database.transaction() as session:
            assert ops.record_epochs(session, job_id, attempt, epoch, {0: {**METRICS, "loss": 1 / epoch}})
    stopped.set()
    beater.join()
    assert not beat_errors, beat_errors
    with database.transaction() as session:
        assert ops.finish_job(session, job_id, attempt, JobStatus.SUCCEEDED, summary={"epochs_run": EPOCHS})
    database.dispose()
    print(f"job {job_id}: {EPOCHS} epochs written")


def start_writer(settings, job_id: int, folder: Path) -> tuple[subprocess.Popen, Path]:
    """A writer process, its output (stdout and stderr) in a file."""
    log = folder / f"writer-{job_id}.log"
    code = "import sys, test_sqlite_concurrency as t; t.write_epochs(*sys.argv[1:])"
    tests = Path(__file__).resolve().parent  # this module, and the repository root above it for testsupport
    search = [str(tests), str(tests.parent), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, search))}
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-c", code, settings.database_url, str(job_id),
                                    f"writer{job_id}@localhost", str(folder)],
                                   stdout=output, stderr=subprocess.STDOUT, env=env)
    return process, log


class WebLoad:
    """Requests of the real app in threads, until told to stop; remembers every non-2xx answer."""

    def __init__(self, app):
        self.app = app
        self.stopped = threading.Event()
        self.requests = 0
        self.failures: list[str] = []
        self.progress_seen: set[int] = set()  # epochs_done values read while the writers ran
        self.threads: list[threading.Thread] = []

    def call(self, client, method: str, path: str, **kwargs):
        """One request; a non-2xx answer (or an exception) is a failure."""
        self.requests += 1
        try:
            response = client.open(path, method=method, **kwargs)
        except Exception as error:  # noqa: BLE001 - recorded, asserted on by the test
            self.failures.append(f"{method} {path}: {type(error).__name__}: {error}")
            return None
        if not 200 <= response.status_code < 300:
            self.failures.append(f"{method} {path}: {response.status_code} {response.get_data(as_text=True)[:300]}")
            return None
        return response.json

    def run(self, work) -> None:
        """Start a thread repeating `work(client)` until stop()."""
        def loop() -> None:
            client = self.app.test_client()
            while not self.stopped.is_set():
                work(client)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        """Stop every thread and wait for it."""
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)


def create_jobs(settings, count: int, dataset_id: int) -> tuple[int, list[int]]:
    """A benchmark with `count` queued jobs, written through db.operations."""
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            specs = [{"backbone": f"Backbone{n}", "image_size": 32, "epochs": EPOCHS} for n in range(count)]
            benchmark = ops.create_benchmark(session, name="concurrency", dataset_id=dataset_id, config={},
                                             specs=specs)
            return benchmark.id, [job.id for job in benchmark.jobs]
    finally:
        database.dispose()


@pytest.mark.timeout(180)
def test_four_writer_processes_and_the_web_app_lose_nothing_and_never_lock(app, client, settings, tmp_path):
    folder = make_image_folder(tmp_path / "data" / "shapes", classes=2, per_class=3, size=32)
    dataset_id = client.post("/api/v1/datasets", json={"path": str(folder)}).json["id"]
    benchmark_id, job_ids = create_jobs(settings, WRITERS, dataset_id)
    signals = tmp_path / "signals"
    signals.mkdir()
    writers = [start_writer(settings, job_id, signals) for job_id in job_ids]
    try:
        wait_until(lambda: all((signals / f"ready-{job_id}").exists() for job_id in job_ids)
                   or any(process.poll() is not None for process, _ in writers), START_SECONDS, "the writers")
        assert all(process.poll() is None for process, _ in writers), [log.read_text() for _, log in writers]
        load = WebLoad(app)

        def read(web) -> None:
            """The benchmark page's polling: the benchmark, its chart series, each job's epochs."""
            benchmark = load.call(web, "GET", f"/api/v1/benchmarks/{benchmark_id}")
            if benchmark:
                load.progress_seen.update(job["epochs_done"] for job in benchmark["jobs"])
            load.call(web, "GET", f"/api/v1/benchmarks/{benchmark_id}/epochs")
            for job_id in job_ids:
                epochs = load.call(web, "GET", f"/api/v1/jobs/{job_id}/epochs")
                if epochs:  # a job's own epochs are a read too: how far it had got when read
                    load.progress_seen.add(len(epochs["epochs"]))
            load.call(web, "GET", "/api/v1/workers")

        def write(web) -> None:
            """Users at the same time: submit a benchmark, cancel its job, retry it, cancel it again."""
            created = load.call(web, "POST", "/api/v1/benchmarks", json={
                "dataset": dataset_id, "backbones": ["VGG16"], "epochs": 1, "image_size": 32, "weights": "none"})
            if created:
                other = created["jobs"][0]["id"]
                for action in ("cancel", "retry", "cancel"):
                    load.call(web, "POST", f"/api/v1/jobs/{other}/{action}")

        load.run(read)
        load.run(write)
        (signals / "go").touch()
        started = time.monotonic()
        for process, _ in writers:
            process.wait(timeout=max(1, WRITERS_SECONDS - (time.monotonic() - started)))
        load.stop()
    finally:
        for process, _ in writers:
            if process.poll() is None:
                process.kill()
                process.wait()

    outputs = {job_id: log.read_text() for job_id, (_, log) in zip(job_ids, writers)}
    for (process, _), job_id in zip(writers, job_ids):
        assert process.returncode == 0, outputs[job_id]
        assert "OperationalError" not in outputs[job_id] and "locked" not in outputs[job_id], outputs[job_id]
    assert load.failures == [], load.failures[:10]
    assert load.requests > 50, "the web app made too few requests to overlap with the writers"
    assert any(0 < done < EPOCHS for done in load.progress_seen), "no read happened while the writers wrote"

    for job_id in job_ids:
        epochs = client.get(f"/api/v1/jobs/{job_id}/epochs").json["epochs"]
        assert [row["epoch"] for row in epochs] == list(range(1, EPOCHS + 1)), job_id
        assert [row["loss"] for row in epochs] == pytest.approx([1 / n for n in range(1, EPOCHS + 1)])
    database = Database(settings.database_url)
    try:
        with database.transaction() as session:
            assert {session.get(Job, job_id).status for job_id in job_ids} == {JobStatus.SUCCEEDED}
    finally:
        database.dispose()
