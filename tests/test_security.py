"""Exposure and access: loopback by default, TLBENCH_TOKEN for anything else (bearer for scripts, login and
CSRF for pages), no token in logs or URLs, no debugger or traceback in production."""
from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

import requests

from testsupport.images import make_image_folder
from testsupport.stack import free_port, running_stack
from testsupport.webapp import TOKEN, serving
from tlbench import cli
from tlbench.stack import ACCESS_LOG_FORMAT, check_exposure, is_loopback, web_process

BEARER = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[1]
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def secure_app(settings):
    """The web app on the temporary home, started with TLBENCH_TOKEN."""
    from dashboard import create_app

    app = create_app({"TESTING": True, "TLBENCH_SETTINGS": settings, "TLBENCH_TOKEN": TOKEN})
    yield app
    app.extensions["tlbench.database"].dispose()


@pytest.fixture
def secure_client(secure_app):
    """A test client of the token-protected app; it keeps cookies, like a browser."""
    return secure_app.test_client()


@pytest.fixture
def folder(settings) -> str:
    """A two-class dataset folder under the allowed data root, ready to register by path."""
    return str(make_image_folder(settings.data_roots[0] / "pets", classes=2, per_class=2, size=16))


def log_in(client, token: str = TOKEN, next_page: str = "/"):
    """Fill the login form the way a browser does: its CSRF token comes from the form page."""
    form = client.get(f"/login?next={next_page}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)[1]
    return client.post("/login", data={"token": token, "csrf_token": csrf, "next": next_page})


def page_csrf_token(client, page: str = "/") -> str:
    """The CSRF token a page hands its scripts (the meta tag that tlbench.js reads)."""
    return CSRF_META.search(client.get(page).get_data(as_text=True))[1]


def dataset_count(client) -> int:
    """How many datasets the server holds."""
    return len(client.get("/api/v1/datasets", headers=BEARER).json["datasets"])


# --- Exposure: `tlbench up` -------------------------------------------------------------------------------


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain `text`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if text in line:
            found.append(line)
    return found


def test_up_refuses_a_public_address_without_a_token_and_starts_nothing(tmp_path):
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items()
           if key not in ("TLBENCH_TOKEN", "REDIS_URL", "DATABASE_URL", "TLBENCH_HOME")}
    result = subprocess.run([sys.executable, "-m", "tlbench", "up", "--host", "0.0.0.0", "--port", str(free_port()),
                             "--home", str(home)], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0 without TLBENCH_TOKEN" in lines[0], result.stderr
    assert result.stdout == ""
    assert not home.exists(), "nothing should be created before the refusal"
    assert processes_mentioning(str(home)) == []


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("example.org", False),
])
def test_only_loopback_addresses_go_without_a_token_and_allowed_host_names(host, loopback):
    assert is_loopback(host) is loopback
    if loopback:
        check_exposure(host, environ={})
    else:
        with pytest.raises(RuntimeError, match="TLBENCH_TOKEN"):
            check_exposure(host, environ={})
        with pytest.raises(RuntimeError, match="TLBENCH_ALLOWED_HOSTS"):
            check_exposure(host, environ={"TLBENCH_TOKEN": TOKEN, "TLBENCH_ALLOWED_HOSTS": " , "})
    check_exposure(host, environ={"TLBENCH_TOKEN": TOKEN, "TLBENCH_ALLOWED_HOSTS": "bench.example.org"})


def test_the_host_rule_up_help_states_is_the_one_check_exposure_applies(capsys):
    with pytest.raises(SystemExit):
        cli.main(["up", "--help"])
    assert cli.EXPOSURE_RULE in " ".join(capsys.readouterr().out.split())  # the help wraps its lines
    # What the rule names as needing no token: the ends of 127.0.0.0/8, ::1, the name localhost.
    for host in ("127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "localhost"):
        check_exposure(host, environ={})
    # What it names as needing both: 0.0.0.0, a LAN address, a host name.
    for host in ("0.0.0.0", "192.168.1.20", "bench.example.org"):
        with pytest.raises(RuntimeError, match="without TLBENCH_TOKEN"):
            check_exposure(host, environ={})
        with pytest.raises(RuntimeError, match="without TLBENCH_ALLOWED_HOSTS"):
            check_exposure(host, environ={"TLBENCH_TOKEN": TOKEN})
        check_exposure(host, environ={"TLBENCH_TOKEN": TOKEN, "TLBENCH_ALLOWED_HOSTS": "bench.example.org"})


def test_up_refuses_a_public_address_without_allowed_host_names_and_starts_nothing(tmp_path):
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items()
           if key not in ("TLBENCH_ALLOWED_HOSTS", "REDIS_URL", "DATABASE_URL", "TLBENCH_HOME")}
    result = subprocess.run([sys.executable, "-m", "tlbench", "up", "--host", "0.0.0.0", "--port", str(free_port()),
                             "--home", str(home)], env={**env, "TLBENCH_TOKEN": TOKEN}, capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0 without TLBENCH_ALLOWED_HOSTS" in lines[0], lines
    assert not home.exists() and processes_mentioning(str(home)) == []


@pytest.mark.parametrize("host, bind", [("127.0.0.1", "127.0.0.1:8000"), ("::1", "[::1]:8000"), ("[::1]", "[::1]:8000")])
def test_ipv6_addresses_are_bound_in_brackets(host, bind):
    from tlbench.stack import host_and_port

    assert host_and_port(host, 8000) == bind


def test_a_blank_token_is_no_token():
    with pytest.raises(RuntimeError, match="TLBENCH_TOKEN"):
        check_exposure("0.0.0.0", environ={"TLBENCH_TOKEN": "  "})


def test_up_listens_on_loopback_by_default():
    args = cli.build_parser().parse_args(["up"])
    assert args.host == "127.0.0.1"
    argv = web_process(args.host, args.port, 2).argv
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:8000"


# --- Bearer token on the API ------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/benchmarks"), ("GET", "/api/v1/datasets/1"), ("GET", "/api/v1/datasets/1/images/0"),
    ("POST", "/api/v1/benchmarks/sample"),
    ("POST", "/api/v1/jobs/1/cancel"), ("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/no-such-route"),
])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": f"Bearer {TOKEN}x"}], ids=["none", "wrong", "basic", "longer"])
def test_the_api_refuses_requests_without_the_token(secure_client, method, path, headers):
    response = secure_client.open(path, method=method, headers=headers)
    assert response.status_code == 401 and response.json["error"].startswith("unauthorized: ")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_basic_auth_is_told_that_the_server_expects_a_bearer_token(secure_client):
    basic = "Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()
    response = secure_client.get("/api/v1/benchmarks", headers={"Authorization": basic})
    assert response.status_code == 401
    assert response.json["error"] == ("unauthorized: this server expects the header 'Authorization: Bearer "
                                      "<TLBENCH_TOKEN>', not Basic authentication")


def test_the_api_answers_with_the_token(secure_client, folder):
    assert secure_client.get("/api/v1/benchmarks", headers=BEARER).json == {"benchmarks": []}
    assert secure_client.get("/api/v1/openapi.json", headers=BEARER).status_code == 200
    # A bearer request is not a browser's: no CSRF token is needed to change state.
    created = secure_client.post("/api/v1/datasets", json={"path": folder}, headers=BEARER)
    assert created.status_code == 201, created.json


def test_health_stays_open(secure_client):
    assert secure_client.get("/api/v1/health").json["status"] == "ok"


def test_openapi_documents_the_bearer_scheme(secure_client):
    document = secure_client.get("/api/v1/openapi.json", headers=BEARER).json
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/api/v1/health"]["get"]["security"] == []


# --- Login for pages --------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/", "/benchmarks/new", "/benchmarks/1", "/jobs/1", "/workers",
                                  "/vendor/plotly.min.js"])
def test_pages_send_a_visitor_to_the_login_form(secure_client, page):
    response = secure_client.get(page)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next={page}"


def test_the_login_form_asks_for_the_token(secure_client):
    form = secure_client.get("/login").get_data(as_text=True)
    assert 'type="password"' in form and 'name="csrf_token"' in form
    assert secure_client.get("/static/tlbench.css").status_code == 200  # its stylesheet needs no login


def test_a_wrong_token_does_not_log_in(secure_client):
    response = log_in(secure_client, token="wrong")
    assert response.status_code == 401 and "not the server&#39;s token" in response.get_data(as_text=True)
    assert secure_client.get("/").status_code == 302


def test_the_login_form_needs_its_csrf_token(secure_client):
    secure_client.get("/login")
    response = secure_client.post("/login", data={"token": TOKEN})
    assert response.status_code == 400
    assert secure_client.get("/").status_code == 302


def test_the_right_token_logs_in_with_a_strict_cookie_and_goes_back(secure_client):
    response = log_in(secure_client, next_page="/workers")
    assert response.status_code == 302 and response.headers["Location"] == "/workers"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("tlbench_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = secure_client.get("/workers").get_data(as_text=True)
    assert CSRF_META.search(page) and "Log out" in page
    assert secure_client.get("/api/v1/benchmarks").status_code == 200  # the pages' fetch() calls
    assert secure_client.get("/login?next=/workers").headers["Location"] == "/workers"  # no second login


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "evil"])
def test_login_never_sends_the_visitor_to_another_site(secure_client, target):
    response = log_in(secure_client, next_page=target)
    assert response.headers["Location"] == "/"


def test_a_page_session_needs_the_csrf_token_to_change_anything(secure_client, folder):
    log_in(secure_client)
    for headers in ({}, {"X-CSRFToken": "forged"}):
        refused = secure_client.post("/api/v1/datasets", json={"path": folder}, headers=headers)
        assert refused.status_code == 400 and refused.json["error"].startswith("csrf: "), refused.json
    assert dataset_count(secure_client) == 0
    accepted = secure_client.post("/api/v1/datasets", json={"path": folder},
                                    headers={"X-CSRFToken": page_csrf_token(secure_client)})
    assert accepted.status_code == 201, accepted.json


def test_logging_out_ends_the_session(secure_client):
    log_in(secure_client)
    token = page_csrf_token(secure_client)
    assert secure_client.post("/logout").status_code == 400  # logging out is a state change too
    response = secure_client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert secure_client.get("/").status_code == 302
    assert secure_client.get("/api/v1/benchmarks").status_code == 401


def test_the_session_key_is_private_to_the_home_and_changing_the_token_logs_everyone_out(secure_client, settings):
    from dashboard import create_app

    log_in(secure_client)
    secret = settings.home / "session_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    other = create_app({"TESTING": True, "TLBENCH_SETTINGS": settings, "TLBENCH_TOKEN": "another-token"})
    try:
        moved = other.test_client()
        moved.set_cookie("tlbench_session", secure_client.get_cookie("tlbench_session").value)
        assert moved.get("/").status_code == 302
    finally:
        other.extensions["tlbench.database"].dispose()


def test_without_a_token_nothing_asks_for_one(client, folder):
    assert client.get("/").status_code == 200
    assert "csrf-token" not in client.get("/").get_data(as_text=True)
    assert client.post("/api/v1/datasets", json={"path": folder}).status_code == 201
    assert client.get("/login").headers["Location"] == "/"


@pytest.mark.parametrize("headers, refused", [
    ({"Origin": "http://evil.example"}, True),  # a page of another site posting to 127.0.0.1
    ({"Origin": "http://localhost:3000"}, True),  # same host, another port: another origin
    ({"Sec-Fetch-Site": "cross-site"}, True),
    ({"Sec-Fetch-Site": "same-site"}, True),
    ({"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}, False),  # the dashboard's own pages
    ({}, False),  # curl and the CLI send neither header
])
def test_without_a_token_a_browser_write_from_another_site_is_refused(client, folder, headers, refused):
    before = len(client.get("/api/v1/datasets").json["datasets"])
    response = client.post("/api/v1/datasets", json={"path": folder}, headers=headers)
    if refused:
        assert response.status_code == 403 and response.json["error"].startswith("cross-site request refused")
        assert len(client.get("/api/v1/datasets").json["datasets"]) == before
    else:
        assert response.status_code == 201


def test_page_scripts_send_the_csrf_token_with_every_state_change():
    script = (ROOT / "dashboard" / "static" / "tlbench.js").read_text()
    assert 'meta[name="csrf-token"]' in script and '"X-CSRFToken"' in script


# --- The CLI ----------------------------------------------------------------------------------------------


class RecordingMiddleware:
    """WSGI middleware that remembers each request's Authorization header and full URL."""

    def __init__(self, app):
        self.app, self.seen = app, []

    def __call__(self, environ, start_response):
        url = environ["PATH_INFO"] + "?" + environ.get("QUERY_STRING", "")
        self.seen.append({"authorization": environ.get("HTTP_AUTHORIZATION"), "url": url})
        return self.app(environ, start_response)


def test_the_cli_sends_the_token_as_a_bearer_header(secure_app, settings, monkeypatch, capsys, tmp_path):
    recorder = RecordingMiddleware(secure_app)
    source = make_image_folder(tmp_path / "faces", classes=2, per_class=3, size=16)
    with serving(recorder) as url:
        monkeypatch.delenv("TLBENCH_TOKEN", raising=False)
        assert cli.main(["datasets", "add", str(source), "--url", url]) == 1
        assert "401: unauthorized" in capsys.readouterr().err
        monkeypatch.setenv("TLBENCH_TOKEN", TOKEN)
        assert cli.main(["datasets", "add", str(source), "--url", url]) == 0
        assert cli.main(["submit", "--dataset", "1", "--backbones", "VGG16", "--image-size", "32",
                         "--weights", "none", "--url", url]) == 0
    assert "benchmark 1: job 1 VGG16" in capsys.readouterr().out
    assert [call["authorization"] for call in recorder.seen] == [None, f"Bearer {TOKEN}", f"Bearer {TOKEN}"]
    assert not any(TOKEN in call["url"] for call in recorder.seen)


# --- Logs -------------------------------------------------------------------------------------------------


def access_log_line(log_format: str, authorization: str, tmp_path: Path) -> str:
    """What gunicorn's access log writes, in `log_format`, for a request carrying this header."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    log_file = tmp_path / f"access-{len(list(tmp_path.iterdir()))}.log"
    config = Config()
    config.set("accesslog", str(log_file))
    config.set("access_log_format", log_format)
    logger = Logger(config)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/api/v1/benchmarks", "SERVER_PROTOCOL": "HTTP/1.1",
               "REMOTE_ADDR": "127.0.0.1", "HTTP_AUTHORIZATION": authorization}
    response = SimpleNamespace(status="200 OK", headers=[("Content-Type", "application/json")], sent=2)
    logger.access(response, SimpleNamespace(headers=[("AUTHORIZATION", authorization)]), environ,
                  timedelta(milliseconds=3))
    for handler in logger.access_log.handlers:
        handler.flush()
    return log_file.read_text()


def test_the_access_log_never_prints_the_token(tmp_path):
    argv = web_process("127.0.0.1", 8000, 2).argv
    log_format = argv[argv.index("--access-logformat") + 1]
    assert log_format == ACCESS_LOG_FORMAT
    basic = "Basic " + base64.b64encode(f"{TOKEN}:x".encode()).decode()
    for authorization in (f"Bearer {TOKEN}", basic):
        line = access_log_line(log_format, authorization, tmp_path)
        assert "GET /api/v1/benchmarks" in line and TOKEN not in line
    # The check above has teeth: gunicorn's default format prints a Basic header's user name.
    from gunicorn.config import AccessLogFormat

    assert TOKEN in access_log_line(AccessLogFormat.default, basic, tmp_path)


# --- Production: no debugger, no traceback ----------------------------------------------------------------


def test_the_app_gunicorn_serves_for_up_has_debug_off_even_with_flask_debug(tmp_path, settings):
    argv = web_process("127.0.0.1", 8000, 2).argv
    assert argv[-1] == "dashboard.wsgi:app" and "--reload" not in argv
    code = "import dashboard.wsgi as w; print(w.app.debug, w.app.testing, w.app.config['PROPAGATE_EXCEPTIONS'])"
    env = {**os.environ, "FLASK_DEBUG": "1", "TLBENCH_HOME": str(tmp_path / "home"),
           "REDIS_URL": settings.redis_url}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.stdout.split() == ["False", "False", "False"], result.stderr[-2000:]


def test_an_unhandled_error_answers_500_without_a_traceback(settings, monkeypatch):
    from dashboard import create_production_app

    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_production_app(settings)

    def explode():
        raise RuntimeError("internal detail that must stay in the log")

    app.add_url_rule("/api/v1/explode", "explode_api", explode)
    app.add_url_rule("/explode", "explode_page", explode)
    try:
        client = app.test_client()
        answer = client.get("/api/v1/explode")
        assert answer.status_code == 500 and answer.is_json
        assert set(answer.json) == {"error", "field"} and "internal error" in answer.json["error"]
        page = client.get("/explode")
        for response in (answer, page):
            body = response.get_data(as_text=True)
            assert response.status_code == 500 and "Traceback" not in body and "internal detail" not in body
    finally:
        app.extensions["tlbench.database"].dispose()


# --- Host header: DNS rebinding -----------------------------------------------------------------------------

# A page on another site whose name is rebound to 127.0.0.1 reaches the server with its own name as Host.
FOREIGN_HOSTS = ["evil.example:8000", "evil.example", "localhost.evil.example", "127.0.0.1.evil.example:8000",
                 "[::2]:8000", "10.0.0.7", "local host", "localhost:99999"]
LOOPBACK_HOSTS = ["localhost", "localhost:8000", "127.0.0.1", "127.0.0.1:8000", "127.0.0.2:5000", "[::1]",
                  "[::1]:8000", "LocalHost:8000"]
EVERY_KIND_OF_ROUTE = [("GET", "/"), ("GET", "/workers"), ("GET", "/static/tlbench.css"), ("GET", "/login"),
                       ("POST", "/login"), ("GET", "/api/v1/health"), ("GET", "/api/v1/benchmarks"),
                       ("POST", "/api/v1/datasets"), ("POST", "/api/v1/benchmarks/sample"),
                       ("GET", "/api/v1/no-such-route"), ("GET", "/api/v1/jobs/1/cancel")]


def assert_foreign_host_refused(response, host: str) -> None:
    """400 in the API's error shape, naming the Host header."""
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.is_json and set(response.json) == {"error", "field"}, response.get_data(as_text=True)[:300]
    assert response.json["field"] == "Host" and response.json["error"].startswith("Host: "), response.json
    assert "TLBENCH_ALLOWED_HOSTS" in response.json["error"]


@pytest.mark.parametrize("method, path", EVERY_KIND_OF_ROUTE)
@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_a_foreign_host_header_is_refused_on_every_route(client, method, path, host):
    assert_foreign_host_refused(client.open(path, method=method, headers={"Host": host}), host)


@pytest.mark.parametrize("method, path", EVERY_KIND_OF_ROUTE)
def test_a_foreign_host_header_is_refused_before_login_is_asked_for(secure_client, method, path):
    assert_foreign_host_refused(secure_client.open(path, method=method, headers={"Host": "evil.example:8000"}),
                                "evil.example:8000")


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_names_and_addresses_are_answered_on_any_port(client, host):
    assert client.get("/api/v1/benchmarks", headers={"Host": host}).status_code == 200
    assert client.get("/", headers={"Host": host}).status_code == 200


def test_allowed_hosts_add_names_and_addresses_for_a_public_address(settings):
    from dashboard import create_app

    app = create_app({"TESTING": True, "TLBENCH_SETTINGS": settings,
                      "TLBENCH_ALLOWED_HOSTS": " bench.example.org, 192.168.1.20 ,[fd00::7],.lab.example"})
    try:
        client = app.test_client()
        for host in ("bench.example.org", "bench.example.org:8000", "192.168.1.20:8000", "[fd00::7]:8000",
                     "gpu.lab.example", "localhost:8000"):
            assert client.get("/api/v1/benchmarks", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "bench.example.org.evil.example", "192.168.1.21", "[fd00::8]", "lab.example.com"):
            assert_foreign_host_refused(client.get("/api/v1/benchmarks", headers={"Host": host}), host)
    finally:
        app.extensions["tlbench.database"].dispose()


def test_allowed_hosts_come_from_the_environment(settings, monkeypatch):
    from dashboard import create_app

    monkeypatch.setenv("TLBENCH_ALLOWED_HOSTS", "bench.example.org")
    app = create_app({"TESTING": True, "TLBENCH_SETTINGS": settings})
    try:
        assert app.test_client().get("/api/v1/benchmarks", headers={"Host": "bench.example.org"}).status_code == 200
    finally:
        app.extensions["tlbench.database"].dispose()


def raw_http(url: str, method: str, path: str, host: str) -> tuple[int, bytes]:
    """Send one request with exactly this Host header over a plain socket; (status, body)."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n"
                           "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_running_stack_refuses_a_rebound_host_on_get_and_post(tmp_path):
    with running_stack(tmp_path / "home") as stack:
        url = stack["url"]
        port = url.rsplit(":", 1)[1]
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        for method, path in [("GET", "/api/v1/benchmarks"), ("GET", "/api/v1/datasets"), ("GET", "/"),
                             ("POST", "/api/v1/benchmarks/sample"), ("POST", "/api/v1/jobs/1/cancel")]:
            response = requests.request(method, url + path, headers=rebound, timeout=30)
            assert response.status_code == 400, (method, path, response.text[:300])
            assert response.json()["field"] == "Host", response.text[:300]
        assert requests.get(f"{url}/api/v1/benchmarks", timeout=30).json() == {"benchmarks": []}  # nothing was run
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            assert raw_http(url, "GET", "/api/v1/datasets", host)[0] == 200, host
        status, body = raw_http(url, "POST", "/api/v1/jobs/1/cancel", f"evil.example:{port}")
        assert status == 400 and b'"field":"Host"' in body.replace(b" ", b"")


# --- Login attempts ---------------------------------------------------------------------------------------


def wrong_login(client, address: str = "192.0.2.1"):
    """One failed login from `address`, the way a browser posts the form."""
    client.environ_base["REMOTE_ADDR"] = address
    form = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)[1]
    return client.post("/login", data={"token": "wrong", "csrf_token": csrf})


def test_login_attempts_are_limited_per_client_address(secure_client, secure_app):
    from dashboard.auth import LOGIN_ATTEMPTS_PER_MINUTE

    for _ in range(LOGIN_ATTEMPTS_PER_MINUTE):
        assert wrong_login(secure_client).status_code == 401
    refused = wrong_login(secure_client)
    assert refused.status_code == 429
    assert "Too many login attempts from your address" in refused.get_data(as_text=True)
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert log_in(secure_client).status_code == 429  # even the right token waits: no guess is checked
    # Another address is not affected, and logs in.
    assert wrong_login(secure_client, "192.0.2.2").status_code == 401
    secure_client.environ_base["REMOTE_ADDR"] = "192.0.2.2"
    assert log_in(secure_client).status_code == 302


def test_login_still_works_when_the_broker_that_counts_attempts_is_down(settings, caplog):
    import dataclasses

    from dashboard import create_app

    unreachable = dataclasses.replace(settings, redis_url="redis://127.0.0.1:9/0")
    app = create_app({"TESTING": True, "TLBENCH_SETTINGS": unreachable, "TLBENCH_TOKEN": TOKEN})
    try:
        client = app.test_client()
        assert wrong_login(client).status_code == 401
        assert log_in(client).status_code == 302
        assert "Failed to rate limit" in caplog.text  # said in the log, not to the visitor
    finally:
        app.extensions["tlbench.database"].dispose()


def test_the_login_limit_is_shared_by_every_web_process_of_a_broker(secure_client, settings):
    """Two gunicorn workers are two apps: they count attempts together, in the broker's Redis."""
    from dashboard import create_app
    from dashboard.auth import LOGIN_ATTEMPTS_PER_MINUTE

    other = create_app({"TESTING": True, "TLBENCH_SETTINGS": settings, "TLBENCH_TOKEN": TOKEN})
    try:
        other_client = other.test_client()
        for attempt in range(LOGIN_ATTEMPTS_PER_MINUTE):
            assert wrong_login(secure_client if attempt % 2 else other_client).status_code == 401
        assert wrong_login(other_client).status_code == 429
        assert wrong_login(secure_client).status_code == 429
    finally:
        other.extensions["tlbench.database"].dispose()
