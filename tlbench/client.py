"""A small client of the JSON API, used by `tlbench datasets` and `tlbench submit`."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_SECONDS = 600
TOKEN_ENV = "TLBENCH_TOKEN"


class ApiError(RuntimeError):
    """The server refused a request; the message is its JSON error."""


class ApiClient:
    """Calls /api/v1 on one tlbench server."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None):
        """`token` defaults to $TLBENCH_TOKEN; when there is one, every call sends it as a bearer token."""
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        token = os.environ.get(TOKEN_ENV) if token is None else token
        if token:
            # A header, never the URL: URLs end up in access logs and shell histories.
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs) -> dict:
        """Send a request and return its JSON, raising ApiError with the server's message."""
        try:
            response = self.session.request(method, f"{self.base_url}/api/v1{path}", timeout=TIMEOUT_SECONDS,
                                            **kwargs)
        except requests.ConnectionError:
            raise ApiError(f"no tlbench server answers at {self.base_url} (start one with `tlbench up`)") from None
        body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
        if response.status_code >= 400:
            hint = f" (set {TOKEN_ENV} to the server's token)" if response.status_code == 401 else ""
            raise ApiError(f"{response.status_code}: {body.get('error', response.text[:200])}{hint}")
        return body

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


def zip_folder(folder: Path) -> bytes:
    """A folder's files as an in-memory zip (paths relative to the folder; links not followed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()
