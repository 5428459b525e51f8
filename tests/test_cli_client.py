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
from testsupport.images import class_names, make_image_folder
from testsupport.stack import free_port
from testsupport.webapp import serving
from tlbench.cli import build_parser, main
from tlbench.progress import comparison_table
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


def answer(handler: BaseHTTPRequestHandler, document: dict | None = None) -> None:
    """A JSON answer like the API's."""
    body = json.dumps(document or {"datasets": [], "id": 1, "jobs": []}).encode()
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
            self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
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


# --- `tlbench submit` with trials: the options it sends, and the comparison it prints ---

def taking_requests(bodies: list, document: dict):
    """A server behaviour that keeps each request's JSON body and answers `document`."""
    def behave(handler: BaseHTTPRequestHandler) -> None:
        bodies.append(json.loads(handler.body) if handler.body else None)
        answer(handler, document)
    return behave


def job(job_id: int, backbone: str, status: str = "succeeded", summary: dict | None = None, error=None) -> dict:
    """A job as GET /benchmarks/<id> shows it."""
    return {"id": job_id, "backbone": backbone, "status": status, "epochs": 4, "epochs_done": 4, "error": error,
            "summary": summary, "trials_total": 6, "trials_done": 6 if summary else 0}


def trial_summary(mean: float, low: float, high: float, val: float, chosen: float = 0.001) -> dict:
    """A succeeded job's summary with a test result, chosen from two learning rates with three repeats."""
    return {"best_val_accuracy": val, "chosen_learning_rate": chosen, "learning_rates": [0.001, 0.0003],
            "repeats": 3, "selected_trial": 0, "latency_ms_per_image": 1.5,
            "test": {"accuracy_mean": mean, "ci_low": low, "ci_high": high, "confidence": 0.95,
                     "accuracies": [mean] * 3, "images": 30, "method": "t interval over the repeats"}}


TRIALS_BENCHMARK = {
    "id": 3, "name": "shapes", "status": "failed",
    "config": {"learning_rate": [0.001, 0.0003], "repeats": 3, "validation_split": 0.15, "test_split": 0.15},
    "leader": {"job_id": 7, "backbone": "VGG16", "by": "test_accuracy", "test_accuracy_mean": 0.83,
               "best_val_accuracy": 0.85},
    "comparison": {"alpha": 0.05, "leader_job_id": 7, "tied_with_leader": [9],
                   "sentence": "VGG16 leads; ResNet50 is not significantly worse (p ≥ 0.05).",
                   "tests": {"9": {"p_value": 0.41, "test": "exact McNemar", "difference": 0.02},
                             "11": {"p_value": 0.0031, "test": "exact McNemar", "difference": 0.3}}},
    "jobs": [job(11, "MobileNetV2", summary=trial_summary(0.53, 0.4, 0.66, 0.6, chosen=0.0003)),
             job(12, "Xception", status="failed", error="out of memory"),
             job(9, "ResNet50", summary=trial_summary(0.81, 0.781, 0.839, 0.84)),
             job(7, "VGG16", summary=trial_summary(0.83, 0.781, 0.879, 0.85))],
}


@pytest.mark.parametrize("given, sent", [("1e-3", 0.001), ("1e-3,3e-4", [0.001, 0.0003]), ("1e-3, 3e-4,", [0.001, 0.0003])])
def test_learning_rate_is_a_number_when_one_and_a_list_when_several(given, sent):
    args = build_parser().parse_args(["submit", "--dataset", "1", "--backbones", "VGG16", "--learning-rate", given])
    assert args.learning_rate == sent


@pytest.mark.parametrize("given", ["fast", "1e-3;3e-4", ","])
def test_a_learning_rate_that_is_not_a_number_is_refused_before_anything_is_sent(given, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["submit", "--dataset", "1", "--backbones", "VGG16", "--learning-rate", given])
    assert exited.value.code == 2
    assert "--learning-rate" in capsys.readouterr().err


def test_submit_sends_the_learning_rates_repeats_and_test_split(capsys):
    bodies: list = []
    with server(taking_requests(bodies, {"id": 3, "jobs": [{"id": 7, "backbone": "VGG16"}]})) as (url, seen):
        assert main(["submit", "--url", url, "--dataset", "1", "--backbones", "VGG16, ResNet50",
                     "--learning-rate", "1e-3,3e-4", "--repeats", "3", "--test-split", "0.2"]) == 0
    assert seen == ["POST"]
    assert bodies == [{"dataset": 1, "backbones": ["VGG16", "ResNet50"], "learning_rate": [0.001, 0.0003],
                       "repeats": 3, "test_split": 0.2}]
    assert capsys.readouterr().out == "benchmark 3: job 7 VGG16\n"


def test_submit_with_one_learning_rate_sends_a_number_as_before():
    bodies: list = []
    with server(taking_requests(bodies, {"id": 3, "jobs": []})) as (url, _):
        assert main(["submit", "--url", url, "--dataset", "1", "--backbones", "VGG16", "--learning-rate", "3e-4"]) == 0
    assert bodies[0]["learning_rate"] == 0.0003
    assert "repeats" not in bodies[0] and "test_split" not in bodies[0]  # left to the server's defaults


def cells(table: str, jobs: int) -> tuple[list[dict], list[str]]:
    """The table's `jobs` rows as {column: text}, cut where each heading starts, and the lines after them."""
    from tlbench.progress import COMPARISON_COLUMNS

    title, header, *rest = table.splitlines()
    starts = [header.index(name) for name in COMPARISON_COLUMNS]
    ends = starts[1:] + [None]
    rows = [{name: line[start:end].strip() for name, start, end in zip(COMPARISON_COLUMNS, starts, ends)}
            for line in rest[:jobs]]
    return rows, rest[jobs:]


def test_the_comparison_puts_the_leader_first_with_intervals_ties_and_the_sentence():
    table = comparison_table(TRIALS_BENCHMARK)
    assert table.splitlines()[0] == "Comparison of benchmark 3 (shapes):"
    rows, after = cells(table, jobs=4)
    assert [row["backbone"] for row in rows] == ["VGG16", "ResNet50", "MobileNetV2", "Xception"]
    assert [row["test accuracy (95 % CI)"] for row in rows] == [
        "83.0 % [78.1, 87.9]", "81.0 % [78.1, 83.9]", "53.0 % [40.0, 66.0]", "–"]
    assert [row["vs leader"] for row in rows] == ["leader", "tied (p = 0.41)", "worse (p = 0.003)", ""]
    assert [row["learning rate"] for row in rows] == ["0.001 of 2", "0.001 of 2", "0.0003 of 2", "– of 2"]
    assert [row["repeats"] for row in rows] == ["3", "3", "3", "3"]
    assert [row["best val acc"] for row in rows] == ["85.0 %", "84.0 %", "60.0 %", "–"]
    assert rows[3]["status"] == "failed" and rows[3]["error"] == "out of memory"
    assert after == ["VGG16 leads; ResNet50 is not significantly worse (p ≥ 0.05)."]


def test_jobs_from_before_test_sets_say_so_instead_of_a_test_accuracy():
    old = {"id": 1, "name": "old", "status": "succeeded", "config": {"learning_rate": 0.001},
           "leader": {"job_id": 2, "backbone": "VGG16", "by": "val_accuracy", "best_val_accuracy": 0.9},
           "comparison": None,
           "jobs": [{"id": 2, "backbone": "VGG16", "status": "succeeded", "error": None,
                     "summary": {"best_val_accuracy": 0.9, "latency_ms_per_image": 2.0}}]}
    [row], after = cells(comparison_table(old), jobs=1)
    assert row["test accuracy (95 % CI)"] == "no test set"
    assert (row["vs leader"], row["learning rate"], row["repeats"], row["best val acc"]) == ("leader", "0.001", "1", "90.0 %")
    assert after == ["VGG16 leads by validation accuracy (made before held-out test sets: no test)."]


def test_submit_wait_ends_with_the_comparison(capsys):
    bodies: list = []
    created = {"id": 3, "jobs": [{"id": j["id"], "backbone": j["backbone"]} for j in TRIALS_BENCHMARK["jobs"]]}
    with server(taking_requests(bodies, created), taking_requests(bodies, TRIALS_BENCHMARK)) as (url, seen):
        code = main(["submit", "--url", url, "--dataset", "1", "--backbones", "VGG16,ResNet50,MobileNetV2,Xception",
                     "--learning-rate", "1e-3,3e-4", "--repeats", "3", "--wait"])
    assert code == 1  # one job failed
    assert seen == ["POST", "GET"]
    out = capsys.readouterr().out
    assert out.rstrip().endswith(comparison_table(TRIALS_BENCHMARK))


# --- `tlbench datasets add` against the real web app ---

def test_datasets_add_prints_the_new_datasets_id_first_then_what_it_skipped(app, tmp_path, capsys):
    first = make_image_folder(tmp_path / "first", classes=2, per_class=3, size=16)
    faces = make_image_folder(tmp_path / "faces", classes=2, per_class=3, size=16)
    (faces / class_names(2)[0] / "notes.txt").write_text("not an image")
    with serving(app) as url:
        assert main(["datasets", "add", str(first), "--url", url]) == 0
        assert capsys.readouterr().out == "dataset 1: first (2 classes, 6 images)\n"
        assert main(["datasets", "add", str(faces), "--url", url]) == 0
        registered = ApiClient(url).list_datasets()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dataset 2: faces (2 classes, 6 images; 1 file skipped)"
    assert lines[1].startswith(f"  skipped {class_names(2)[0]}/notes.txt: not a decodable image") and len(lines) == 2
    assert {dataset["id"]: dataset["name"] for dataset in registered} == {1: "first", 2: "faces"}


def test_datasets_add_lists_the_first_ten_skipped_files_and_counts_the_rest(app, tmp_path, capsys):
    faces = make_image_folder(tmp_path / "faces", classes=2, per_class=3, size=16)
    for index in range(12):
        (faces / class_names(2)[1] / f"notes-{index:02d}.txt").write_text("not an image")
    with serving(app) as url:
        assert main(["datasets", "add", str(faces), "--url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dataset 1: faces (2 classes, 6 images; 12 files skipped)"
    assert [line.split(":")[0] for line in lines[1:11]] == [
        f"  skipped {class_names(2)[1]}/notes-{index:02d}.txt" for index in range(10)]
    assert lines[11:] == ["  … and 2 more (GET /api/v1/datasets/1)"]
