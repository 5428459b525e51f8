"""The API's one error shape, {"error": message, "field": name-or-null}, and the exception that carries it."""
from __future__ import annotations

from flask import Response, jsonify


class ApiError(Exception):
    """A refused or failed request: its HTTP status (4xx, or 503/504 when a worker or the broker is missing),
    a message naming the problem, and the field at fault if one is."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


def error_response(message: str, status: int, field: str | None = None) -> tuple[Response, int]:
    """The API's error answer: {"error": message, "field": name-or-null} with `status`."""
    return jsonify(error=message, field=field), status
