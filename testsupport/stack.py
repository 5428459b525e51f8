"""Running the real stack for tests and benchmarks: `tlbench up` on a free port, waiting for conditions, and
uploading a dataset and reading a benchmark back over its API."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests


STACK_START_SECONDS = 60
# How long the tests give a small job on the stack (a CPU worker) to finish.
JOB_SECONDS = 300


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def healthy(url: str) -> bool:
    """Whether the stack answers its health check."""
    try:
        return requests.get(f"{url}/api/v1/health", timeout=2).status_code == 200
    except requests.RequestException:  # not listening yet, or too busy starting to answer in time
        return False


@contextmanager
def running_stack(home: Path, *extra_args: str, database_url: str | None = None,
                  environment: dict[str, str] | None = None):
    """`tlbench up` on `home` and a free port, yielding {url, home, process}; SIGTERM at the end.

    Its database is DATABASE_URL=`database_url`, or by default the SQLite file in `home`; `environment` adds
    variables (REDIS_URL among them: the embedded Redis otherwise).
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(environment or {})
    process = subprocess.Popen([sys.executable, "-m", "tlbench", "up", "--home", str(home), "--port", str(port),
                                *extra_args],
                               env={**env, "TLBENCH_HOME": str(home)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url) or process.poll() is not None, STACK_START_SECONDS, "the stack to start")
        assert process.poll() is None, "tlbench up exited early"
        yield {"url": url, "home": home, "process": process}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def upload_dataset(url: str, folder: Path) -> dict:
    """Upload a folder as a zip with the CLI's own zipping."""
    from tlbench.client import zip_folder

    response = requests.post(f"{url}/api/v1/datasets", files={"file": ("shapes.zip", zip_folder(folder))})
    assert response.status_code == 201, response.text
    return response.json()


def finished_benchmark(url: str, benchmark_id: int) -> dict | None:
    """The benchmark once none of its jobs is queued or running."""
    benchmark = requests.get(f"{url}/api/v1/benchmarks/{benchmark_id}").json()
    return benchmark if benchmark["status"] not in ("queued", "running") else None
