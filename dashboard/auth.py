"""Access control: a state change a browser says comes from another site is always refused; with TLBENCH_TOKEN
set, every route but the public ones also needs a bearer token or the session that /login sets, and a state
change on that session needs its CSRF token. The rules and their reasons: docs/security.md.
"""
from __future__ import annotations

import hmac
import os
import secrets
import tempfile
from hashlib import sha256
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect

from config.settings import TOKEN_ENV, Settings
from dashboard.errors import error_response
from dashboard.openapi import is_public

SESSION_SECRET_FILE = "session_secret"
SESSION_SECRET_BYTES = 32
SESSION_FLAG = "authenticated"
# Pages reachable without credentials: the login form and its stylesheet. API routes are declared
# public where they are defined (documented(public=True): the liveness probe).
OPEN_PAGES = frozenset({"static", "auth.login"})
API_PREFIX = "/api/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Plenty for a person who mistypes; hopeless for guessing a long random token.
LOGIN_ATTEMPTS_PER_MINUTE = 10
TOO_MANY_LOGINS = (f"Too many login attempts from your address (at most {LOGIN_ATTEMPTS_PER_MINUTE} a minute). "
                   "Wait a minute, then try again.")

csrf = CSRFProtect()
auth = Blueprint("auth", __name__)


def configure_auth(app: Flask, token: str | None, settings: Settings) -> None:
    """Turn on login, bearer tokens and CSRF checks when a token is set; otherwise only register the routes."""
    token = configured_token(token)
    app.config[TOKEN_ENV] = token
    # The check runs in require_credentials, only for requests that ride on the session cookie.
    # Pages stay open for hours while they poll, so a token lives as long as its session.
    app.config.update(WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None)
    csrf.init_app(app)
    app.register_blueprint(auth)
    app.register_error_handler(CSRFError, csrf_refused)
    limit_login_attempts(app, settings.redis_url)
    app.before_request(refuse_cross_site_writes)
    if not token:
        return
    app.secret_key = session_secret(settings.home, token)
    app.config.update(SESSION_COOKIE_NAME="tlbench_session", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax")
    app.before_request(require_credentials)


def limit_login_attempts(app: Flask, redis_url: str) -> None:
    """Count login form posts per client address in the broker's Redis; past the limit, answer 429.

    One limiter per app, since Flask-Limiter keeps its storage on the limiter object; its limit wraps this
    app's login view (a decorated limit is checked by the wrapper, not by a before-request hook).
    """
    limiter = Limiter(get_remote_address, app=app, storage_uri=limiter_storage_uri(redis_url),
                      key_prefix="tlbench-login", headers_enabled=True,
                      # Redis down: log it and let the form through (the token is still checked) rather
                      # than lock everyone out; the rest of the app is down with the broker anyway.
                      swallow_errors=True)
    endpoint = f"{auth.name}.{login.__name__}"
    app.view_functions[endpoint] = limiter.limit(f"{LOGIN_ATTEMPTS_PER_MINUTE} per minute",
                                                 methods=["POST"])(app.view_functions[endpoint])
    app.register_error_handler(RateLimitExceeded, too_many_logins)


def limiter_storage_uri(redis_url: str) -> str:
    """The broker's URL as the limits library spells it: a Unix socket is redis+unix://, not redis+socket://."""
    scheme, separator, rest = redis_url.partition("://")
    return f"redis+unix://{rest}" if scheme == "redis+socket" else redis_url


def too_many_logins(error: RateLimitExceeded):
    """The login form again, saying why it refuses, with 429 and Retry-After (set by the limiter)."""
    return render_template("login.html", next=safe_next(request.values.get("next")), problem=TOO_MANY_LOGINS), 429


def configured_token(value: str | None) -> str | None:
    """The token a TLBENCH_TOKEN value sets, if any: surrounding blanks are not part of it."""
    return (value or "").strip() or None


def login_required() -> bool:
    """Whether this app asks for the token."""
    return bool(current_app.config.get(TOKEN_ENV))


@auth.app_context_processor
def auth_template_values() -> dict:
    """What base.html needs: whether to render the CSRF meta tag and the logout button."""
    return {"login_required": login_required(), "logged_in": bool(session.get(SESSION_FLAG))}


def session_secret(home: Path, token: str) -> bytes:
    """The key that signs session cookies: a random secret kept in the home, mixed with the token.

    Mixing in the token means that changing TLBENCH_TOKEN logs every browser out.
    """
    home_secret = _home_secret(Path(home) / SESSION_SECRET_FILE)
    return hmac.new(home_secret, b"tlbench session\0" + token.encode(), sha256).digest()


def _home_secret(path: Path) -> bytes:
    """Read the home's secret, creating it (mode 0600) on first use.

    Several gunicorn workers start at once: each writes a candidate to a private temporary
    file and links it into place; the first link wins and everyone reads the winner.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staging = tempfile.mkstemp(dir=path.parent, prefix=".session-secret-")  # mode 0600
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(secrets.token_bytes(SESSION_SECRET_BYTES))
            try:
                os.link(staging, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(staging)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # a copied home may have loosened it
    return path.read_bytes()


def refuse_cross_site_writes():
    """403 for a state change a browser sent on behalf of another site; scripts send neither header."""
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if origin is not None and origin.rstrip("/") != request.host_url.rstrip("/"):
        return _cross_site(f"its Origin {origin} is not this server")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return _cross_site(f"the browser says it comes from a {fetch_site} page")
    return None


def _cross_site(problem: str):
    """The API's error shape with 403."""
    return error_response(f"cross-site request refused: {problem}", 403)


def require_credentials():
    """Before every request: let it through, refuse it (401 JSON) or send a page visitor to /login."""
    if request.endpoint in OPEN_PAGES or is_public(current_app.view_functions.get(request.endpoint)):
        return None
    scheme, offered = _offered_credentials()
    if scheme is not None and scheme != "bearer":
        return _unauthorized(f"this server expects the header 'Authorization: Bearer <{TOKEN_ENV}>', not "
                             f"{scheme.capitalize()} authentication")
    if offered is not None:
        # A bearer header is never added by a browser on its own, so it needs no CSRF token.
        return None if _is_the_token(offered) else _unauthorized("the bearer token is not valid")
    if session.get(SESSION_FLAG):
        csrf.protect()  # does nothing for GET; raises CSRFError for a state change without the token
        return None
    if request.path.startswith(API_PREFIX):
        return _unauthorized("this server needs its token: send the header 'Authorization: Bearer "
                             f"<{TOKEN_ENV}>', or log in at /login")
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _offered_credentials() -> tuple[str | None, str | None]:
    """An Authorization header's scheme (lower case) and credentials, or (None, None) without one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None, None
    scheme, _, credentials = header.strip().partition(" ")
    return scheme.lower(), credentials.strip()


def _is_the_token(offered: str) -> bool:
    """Compare in constant time, so the answer's timing says nothing about the token."""
    return hmac.compare_digest(offered.encode(), current_app.config[TOKEN_ENV].encode())


def _unauthorized(problem: str):
    """The API's error shape with 401 and the scheme to use."""
    response, status = error_response(f"unauthorized: {problem}", 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="tlbench"'
    return response, status


def csrf_refused(error: CSRFError):
    """A state change from a page without its CSRF token: JSON under /api/, Flask-WTF's page elsewhere."""
    if not request.path.startswith(API_PREFIX):
        return error
    return error_response(f"csrf: {error.description} Reload the page and try again.", error.code)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only, never another host."""
    if not target:
        return url_for("pages.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith(("//", "/\\")):
        return url_for("pages.index")
    return target


@auth.route("/login", methods=["GET", "POST"])
def login():
    """Ask for the token; the right one starts a session and goes back to the page asked for."""
    if not login_required():
        return redirect(url_for("pages.index"))
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        if session.get(SESSION_FLAG):
            return redirect(target)
        return render_template("login.html", next=target, problem=None)
    csrf.protect()
    if not _is_the_token(request.form.get("token", "")):
        return render_template("login.html", next=target, problem="That is not the server's token."), 401
    session.clear()  # a fresh session (and CSRF token) for the logged-in visitor
    session[SESSION_FLAG] = True
    return redirect(target)


@auth.post("/logout")
def logout():
    """End the session (the CSRF check ran in require_credentials) and show the login form."""
    session.clear()
    return redirect(url_for("auth.login"))
