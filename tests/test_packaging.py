"""The ways to run tlbench besides `make run`: Procfile and docker-compose.yml, as docs/operations.md tells."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from honcho.environ import parse_procfile

from testsupport.polling import slowest_poll_seconds
from testsupport.stack import free_port, healthy, wait_until
from tlbench.stack import web_process

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


def run_procfile_web(*extra: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The Procfile's web command with `extra` options, through a shell as honcho runs it."""
    command = f"{procfile_commands()['web']} {shlex.join(extra)}"
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env})


def test_procfile_web_command_loads_the_app(tmp_path):
    result = run_procfile_web("--check-config", env={"TLBENCH_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]


def dockerfile_command() -> list[str]:
    """The image's default command (the web app), from the Dockerfile's CMD."""
    line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return json.loads(line.removeprefix("CMD "))


def gunicorn_settings(result: subprocess.CompletedProcess) -> dict[str, str]:
    """The settings `gunicorn --print-config` printed, as text."""
    assert result.returncode == 0, result.stderr[-2000:]
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs}


@pytest.mark.parametrize("start", ["tlbench up", "Procfile", "Dockerfile"])
def test_every_start_of_gunicorn_keeps_connections_longer_than_any_poll_and_no_shared_socket(start, tmp_path):
    env = {"TLBENCH_HOME": str(tmp_path)}
    if start == "Procfile":
        result = run_procfile_web("--print-config", env=env)
    else:
        argv = web_process("127.0.0.1", 8000, 2).argv if start == "tlbench up" else \
            [str(BIN / "gunicorn"), *dockerfile_command()[1:]]
        result = subprocess.run([*argv, "--print-config"], capture_output=True, text=True, timeout=120,
                                env={**os.environ, **env})
    settings = gunicorn_settings(result)
    assert int(settings["keepalive"]) > slowest_poll_seconds()
    assert settings["control_socket_disable"] == "True"  # no ~/.gunicorn/gunicorn.ctl shared by every stack


def test_compose_web_runs_the_images_command():
    assert "command" not in compose()["services"]["web"]


def test_the_procfile_web_app_alone_creates_the_sample_its_page_offers(tmp_path):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    env.update(TLBENCH_HOME=str(tmp_path / "home"), TLBENCH_PORT=str(port), PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    honcho = subprocess.Popen([str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "start", "redis", "web"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url) or honcho.poll() is not None, 60, "the Procfile's redis and web to start")
        assert honcho.poll() is None, "honcho exited early"
        assert "Run the sample benchmark" in requests.get(url, timeout=10).text
        created = requests.post(f"{url}/api/v1/benchmarks/sample", timeout=30)
        assert created.status_code == 201, created.text
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGTERM)  # honcho, and the processes it started
        honcho.wait(timeout=60)


@pytest.mark.parametrize("database_url", ["mysql://tlbench:secret@db.example/tlbench",
                                          "postgresql://tlbench:secret@127.0.0.1:{port}/tlbench"])
def test_the_procfile_web_app_says_in_one_line_that_it_cannot_use_the_database(database_url, tmp_path):
    url = database_url.format(port=free_port())
    result = run_procfile_web(env={"TLBENCH_HOME": str(tmp_path), "DATABASE_URL": url, "TLBENCH_PORT": str(free_port())},
                              timeout=60)
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if "cannot use the database" in line]
    assert len(said) == 1 and said[0].startswith("tlbench: cannot use the database "), result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


def compose_command() -> list[str] | None:
    """docker compose (plugin) or docker-compose, whichever validates compose files here."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(compose_command() is None, reason="neither docker compose nor docker-compose is installed")
@pytest.mark.parametrize("profiles", [[], ["--profile", "postgres"], ["--profile", "minio"]])
def test_docker_compose_file_validates(profiles):
    result = subprocess.run([*compose_command(), "-f", str(ROOT / "docker-compose.yml"), *profiles, "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_minio_is_optional_and_its_credentials_come_from_the_shell_only():
    services = compose()["services"]
    assert services["minio"]["profiles"] == services["minio-bucket"]["profiles"] == ["minio"]
    for name in ("TLBENCH_STORAGE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        # No value in the file: passed on from the shell when set there, unset otherwise; no secret is written here.
        assert services["web"]["environment"][name] is None and services["worker"]["environment"][name] is None
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == "${AWS_SECRET_ACCESS_KEY:-}"


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
