"""The ways to run tlbench besides `make run`: Procfile and docker-compose.yml, as docs/operations.md tells."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from honcho.environ import parse_procfile

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def procfile_commands() -> dict[str, str]:
    """The Procfile's processes and their commands, read by honcho's own parser."""
    return dict(parse_procfile((ROOT / "Procfile").read_text()).processes)


def procfile() -> dict[str, list[str]]:
    """The Procfile's processes as argument lists."""
    return {name: shlex.split(command) for name, command in procfile_commands().items()}


def test_honcho_accepts_the_procfile():
    result = subprocess.run([str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "Valid procfile detected (redis, web, worker)" in result.stderr, result.stderr


def test_each_procfile_command_is_the_one_the_docs_give():
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "operations.md").read_text()
    for name, command in procfile_commands().items():
        assert command in docs, f"the Procfile's {name} command is not in README.md or docs/operations.md: {command}"


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


def compose() -> dict:
    """docker-compose.yml as data."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_redis_web_and_scalable_gpu_workers_sharing_state_and_artifacts():
    services, volumes = compose()["services"], compose()["volumes"]
    assert {"redis", "web", "worker", "postgres"} <= set(services)
    worker, web = services["worker"], services["web"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=4` needs both absent
    assert worker["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["command"] == ["tlbench", "worker", "--gpus", "all"]
    for volume in ("state:/var/lib/tlbench", "artifacts:/var/lib/tlbench/artifacts"):
        assert volume in web["volumes"] and volume in worker["volumes"]
    assert {"state", "artifacts"} <= set(volumes)
    assert worker["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_compose_postgres_is_optional_and_its_url_is_documented():
    postgres = compose()["services"]["postgres"]
    assert postgres["profiles"] == ["postgres"]
    user, password, database = (postgres["environment"][key] for key in ("POSTGRES_USER", "POSTGRES_PASSWORD",
                                                                          "POSTGRES_DB"))
    url = f"postgresql+psycopg://{user}:{password}@postgres:5432/{database}"
    assert url == "postgresql+psycopg://postgres:postgres@postgres:5432/tlbench"
    assert url in (ROOT / "docker-compose.yml").read_text() and url in (ROOT / "docs" / "operations.md").read_text()
