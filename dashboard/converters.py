"""URL converters of the API's routes."""
from __future__ import annotations

from werkzeug.routing import IntegerConverter

# The largest id a row can have on every database tlbench supports: PostgreSQL's `integer` column
# (SQLite's holds up to 2**63 - 1). A larger number would overflow in the database driver.
LARGEST_ROW_ID = 2**31 - 1


class IndexConverter(IntegerConverter):
    """`<index:name>`: a position in a list, 0 to LARGEST_ROW_ID; anything else matches no route (404)."""

    openapi_schema = {"type": "integer", "minimum": 0, "maximum": LARGEST_ROW_ID}

    def __init__(self, url_map):
        super().__init__(url_map, min=0, max=LARGEST_ROW_ID)


class RowIdConverter(IntegerConverter):
    """`<id:name>`: a row id, 1 to LARGEST_ROW_ID; anything else matches no route (404, like any unknown id)."""

    # What the OpenAPI document says about such a path parameter (dashboard/openapi.py reads it).
    openapi_schema = {"type": "integer", "minimum": 1, "maximum": LARGEST_ROW_ID}

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=LARGEST_ROW_ID)
