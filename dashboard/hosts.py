"""Which Host headers the web app answers: loopback names and addresses, plus TLBENCH_ALLOWED_HOSTS.

A page on another site can have its own name rebound to 127.0.0.1 (DNS rebinding); the browser then
talks to tlbench as that site, same-origin, with the site's name in the Host header. Answering only
names this server is known by keeps such a page from reading or changing anything, token or not.

Flask's TRUSTED_HOSTS is not used: Werkzeug 3.1 cuts each allowed entry at its first ":", so "[::1]"
can never match, and Flask raises the refusal only after the before-request hooks (login redirect,
cross-site check) have already run on the foreign request.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from flask import Flask, current_app, request
from werkzeug.wsgi import host_is_trusted

from dashboard.errors import error_response

ALLOWED_HOSTS_ENV = "TLBENCH_ALLOWED_HOSTS"
# Every loopback address is allowed too (127.0.0.0/8, ::1): no other site's page can be reached at one.
LOOPBACK_NAMES = ("localhost",)
HOST_FIELD = "Host"


def parse_allowed_hosts(value: str | None) -> tuple[str, ...]:
    """The names and addresses a TLBENCH_ALLOWED_HOSTS value lists: comma-separated, blanks ignored."""
    return tuple(part.strip().lower() for part in (value or "").split(",") if part.strip())


def configure_hosts(app: Flask, allowed_hosts: str | None) -> None:
    """Refuse, before anything else runs, a request whose Host is neither loopback nor allowed."""
    app.config[ALLOWED_HOSTS_ENV] = LOOPBACK_NAMES + parse_allowed_hosts(allowed_hosts)
    # First of all hooks: no login redirect, CSRF or cross-site check may answer a foreign host.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_foreign_host)


def refuse_foreign_host():
    """400 in the API's error shape for a Host this server is not known by; a request without Host passes."""
    header = request.headers.get("Host")
    if header is None or host_allowed(header, current_app.config[ALLOWED_HOSTS_ENV]):
        return None  # HTTP/1.0 clients may omit Host; browsers never do
    message = (f"{HOST_FIELD}: {header!r} is not a name this server answers to; if browsers reach it by that "
               f"name, add it to {ALLOWED_HOSTS_ENV}")
    return error_response(message, 400, HOST_FIELD)


def host_allowed(header: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header ("name", "name:port", "[v6]:port") names a loopback address or an allowed host."""
    header = header.strip().lower()
    if not host_is_trusted(header, ()):  # characters a host can't have, or a port out of range
        return False
    address = _address(urlsplit(f"//{header}").hostname)
    if address is not None:
        return address.is_loopback or address in {_address(entry) for entry in allowed}
    return host_is_trusted(header, allowed)


def _address(name: str | None):
    """The IP address a host name spells ("[::1]" and "::1" alike), or None for a name."""
    try:
        return ipaddress.ip_address((name or "").strip("[]"))
    except ValueError:
        return None
