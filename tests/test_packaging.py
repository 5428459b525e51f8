"""The ways to run tlbench besides `make run`: Procfile and docker-compose.yml."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def procfile() -> dict[str, list[str]]:
    """The Procfile's processes as argument lists."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): shlex.split(command) for name, command in (line.split(":", 1) for line in lines if line)}


def test_procfile_runs_redis_web_and_worker_with_real_commands():
    processes = procfile()
    assert set(processes) == {"redis", "web", "worker"}
    for name, argv in processes.items():
        assert (BIN / argv[0]).exists(), f"{name}: {argv[0]} is not installed"


def test_procfile_tlbench_commands_parse():
    from tlbench.cli import build_parser

    for argv in procfile().values():
        if argv[0] == "tlbench":
            build_parser().parse_args(argv[1:])


def test_procfile_web_command_loads_the_app(tmp_path):
    argv = procfile()["web"]
    result = subprocess.run([str(BIN / argv[0]), "--check-config", *argv[1:]], capture_output=True, text=True,
                            env={**os.environ, "TLBENCH_HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def compose_command() -> list[str] | None:
    """docker compose (plugin) or docker-compose, whichever validates compose files here."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(compose_command() is None, reason="neither docker compose nor docker-compose is installed")
def test_docker_compose_file_validates():
    result = subprocess.run([*compose_command(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
