"""The CLI's HTTP client against real sockets that fail the ways a server can: it tries idempotent requests
again, never sends a POST twice, and says what failed (refused, reset, closed, timed out)."""
from __future__ import annotations

import json
import os
import socket
import struct
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import tlbench.client
from stackutil import free_port
from tlbench.client import ApiClient, ApiError


def reset(handler: BaseHTTPRequestHandler) -> None:
    """Drop the connection with a TCP reset (RST), as a server closing an idle one with a request unread does."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # Closed here, at once: the server's own close would first shut it down with a FIN.
    os.close(handler.connection.detach())
    handler.close_connection = True


def close(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection cleanly (FIN) without an answer."""
    handler.close_connection = True


def answer(handler: BaseHTTPRequestHandler) -> None:
    """A JSON answer like the API's."""
    body = json.dumps({"datasets": [], "id": 1, "jobs": []}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def server(*behaviours):
    """A real HTTP server on a free port whose n-th request gets behaviours[n] (the last one after that);
    yields its URL and the list of the requests it read."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def handle_one_request(self):
            """Read one request, then answer it, reset it or close it."""
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline or not self.parse_request():
                self.close_connection = True
                return
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.command)
            behaviours[min(len(seen), len(behaviours)) - 1](self)

        def log_message(self, *args):
            """Quiet."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """The same tries, with short waits between them."""
    monkeypatch.setattr(tlbench.client, "RETRY_BACKOFF_SECONDS", 0.01, raising=False)


@pytest.mark.parametrize("failure", [reset, close], ids=["reset", "closed"])
def test_a_get_whose_connection_is_lost_is_sent_again(failure):
    with server(failure, answer) as (url, seen):
        assert ApiClient(url).benchmark(1)["id"] == 1
    assert seen == ["GET", "GET"]


def test_a_post_whose_answer_is_lost_is_not_sent_twice():
    with server(reset, answer) as (url, seen):
        with pytest.raises(ApiError, match="reset the connection"):
            ApiClient(url).submit({"dataset": 1, "backbones": ["VGG16"]})
    assert seen == ["POST"]  # the server may have created the benchmark: a second POST would make another


@pytest.mark.parametrize("failure, says", [
    (reset, "the server at {url} reset the connection (connection reset by peer)"),
    (close, "the server at {url} closed the connection without answering"),
], ids=["reset", "closed"])
def test_a_server_that_keeps_failing_is_named_with_what_it_did(failure, says):
    with server(failure) as (url, seen):
        with pytest.raises(ApiError) as raised:
            ApiClient(url).list_datasets()
    assert str(raised.value) == says.format(url=url)
    assert len(seen) == 1 + tlbench.client.RETRIES


def test_nothing_listening_is_called_refused_after_the_retries():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiError, match=r"^nothing listens at http://127\.0\.0\.1:\d+ \(connection refused, for"):
        ApiClient(url).list_datasets()


def test_a_server_that_never_answers_is_called_a_timeout(monkeypatch):
    monkeypatch.setattr(tlbench.client, "TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(tlbench.client, "RETRIES", 1)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections queue in its backlog, unanswered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ApiError, match=r"took the request but sent no answer within 0\.3 s"):
            ApiClient(url).list_datasets()
