"""A small client of the JSON API, used by `tlbench datasets` and `tlbench submit`."""
from __future__ import annotations

import io
import os
import socket
import zipfile
from collections.abc import Iterator
from http.client import RemoteDisconnected
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from config.settings import TOKEN_ENV

DEFAULT_URL = "http://127.0.0.1:8000"
CONNECT_TIMEOUT_SECONDS = 10
TIMEOUT_SECONDS = 600
# Tries after the first, waiting 0, 1, 2, 4 then 8 s: a server restarting, or one that closed a kept-alive
# connection just as a request went out on it, is given about 15 s.
RETRIES = 5
RETRY_BACKOFF_SECONDS = 0.5
# How long a request that can't connect keeps trying (urllib3 waits nothing before the second try).
RETRYING_SECONDS = sum(RETRY_BACKOFF_SECONDS * 2 ** attempt for attempt in range(1, RETRIES))


class ApiError(RuntimeError):
    """The server refused a request; the message is its JSON error."""


class ApiClient:
    """Calls /api/v1 on one tlbench server."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None):
        """`token` defaults to $TLBENCH_TOKEN; when there is one, every call sends it as a bearer token."""
        self.base_url = base_url.rstrip("/")
        self.session = retrying_session()
        token = os.environ.get(TOKEN_ENV) if token is None else token
        if token:
            # A header, never the URL: URLs end up in access logs and shell histories.
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send a request; its answer, or ApiError with the server's message."""
        try:
            response = self.session.request(method, f"{self.base_url}/api/v1{path}",
                                            timeout=(CONNECT_TIMEOUT_SECONDS, TIMEOUT_SECONDS), **kwargs)
        except requests.RequestException as error:
            raise ApiError(describe_failure(error, self.base_url)) from None
        if response.status_code >= 400:
            body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
            hint = f" (set {TOKEN_ENV} to the server's token)" if response.status_code == 401 else ""
            raise ApiError(f"{response.status_code}: {body.get('error', response.text[:200])}{hint}")
        return response

    def _call(self, method: str, path: str, **kwargs) -> dict:
        """Send a request and return its JSON, raising ApiError with the server's message."""
        response = self._request(method, path, **kwargs)
        return response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}

    def add_dataset(self, source: Path, name: str | None = None, by_path: bool = False) -> dict:
        """Register a folder in place (by_path), or upload a zip or a folder zipped on the fly."""
        if by_path:
            return self._call("POST", "/datasets", json={"path": str(source.resolve()), "name": name})
        if source.is_dir():
            payload, filename = zip_folder(source), f"{source.resolve().name}.zip"
        else:
            payload, filename = source.read_bytes(), source.name
        form = {"name": name} if name else {}
        return self._call("POST", "/datasets", files={"file": (filename, payload, "application/zip")}, data=form)

    def list_datasets(self) -> list[dict]:
        """Every registered dataset."""
        return self._call("GET", "/datasets")["datasets"]

    def submit(self, request: dict) -> dict:
        """Submit a benchmark request."""
        return self._call("POST", "/benchmarks", json=request)

    def benchmark(self, benchmark_id: int) -> dict:
        """One benchmark with its jobs."""
        return self._call("GET", f"/benchmarks/{benchmark_id}")

    def report(self, benchmark_id: int, kind: str) -> bytes:
        """A benchmark's report: "html" (one self-contained file), "csv" (a row per trial) or "md" (a summary)."""
        suffix = "" if kind == "html" else f".{kind}"
        return self._request("GET", f"/benchmarks/{benchmark_id}/report{suffix}").content


def retrying_session() -> requests.Session:
    """A session that tries a request again when it could not connect (any method: nothing reached the
    server), and an idempotent one (GET...) when its answer was lost: reset, closed or timed out."""
    retry = Retry(total=RETRIES, connect=RETRIES, read=RETRIES, status=0, other=0,
                  allowed_methods=Retry.DEFAULT_ALLOWED_METHODS, backoff_factor=RETRY_BACKOFF_SECONDS)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def describe_failure(error: requests.RequestException, url: str) -> str:
    """What went wrong between us and the server, in words: timed out, refused, reset, closed, no such host."""
    causes = list(_causes(error))

    def was(*kinds: type) -> bool:
        return any(isinstance(cause, kinds) for cause in causes)

    if was(ReadTimeoutError):
        return f"the server at {url} took the request but sent no answer within {TIMEOUT_SECONDS:g} s"
    if was(ConnectTimeoutError) and not was(NewConnectionError):  # urllib3's "cannot connect" is a timeout too
        return f"the server at {url} did not accept a connection within {CONNECT_TIMEOUT_SECONDS:g} s"
    if was(ConnectionRefusedError):
        return (f"nothing listens at {url} (connection refused, for {RETRYING_SECONDS:g} s): start the server "
                "with `tlbench up`, or give its address with --url or $TLBENCH_URL")
    if was(RemoteDisconnected, ConnectionAbortedError):  # before resets: RemoteDisconnected is one in Python
        return f"the server at {url} closed the connection without answering"
    if was(ConnectionResetError):
        return f"the server at {url} reset the connection (connection reset by peer)"
    if was(socket.gaierror):
        return f"cannot find the host of {url} (name resolution failed)"
    return f"cannot talk to the server at {url}: {causes[-1]}"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and every error inside it: requests wraps urllib3's, which wraps the socket's."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend([getattr(current, "reason", None), current.__cause__, current.__context__, *current.args])


def zip_folder(folder: Path) -> bytes:
    """A folder's files as an in-memory zip (paths relative to the folder; links not followed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()
