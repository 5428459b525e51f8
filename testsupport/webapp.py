"""The web app served in a thread on a free local port, and the TLBENCH_TOKEN tests protect it with."""
from __future__ import annotations

import threading
from contextlib import contextmanager

from testsupport.stack import free_port

TOKEN = "s3cret-token-for-tests-0123456789"


@contextmanager
def serving(app):
    """Serve a WSGI app on a free local port in a thread; yields its URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
