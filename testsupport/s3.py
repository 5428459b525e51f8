"""A real S3-compatible server for tests and benchmarks: moto's server mode, in this process, on a free port."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

from testsupport.stack import free_port

REGION = "us-east-1"


class S3Server:
    """One running server, and the environment a client needs to reach it (endpoint, region, credentials)."""

    def __init__(self):
        port = free_port()
        self.environment = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": REGION,
                            "AWS_ACCESS_KEY_ID": "tlbench-test-key",
                            "AWS_SECRET_ACCESS_KEY": "tlbench-test-secret-d41d8cd9"}
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.running = True

    def stop(self) -> None:
        """Stop answering (what a store that went down does); harmless when stopped already."""
        if self.running:
            self._server.stop()
            self.running = False


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """A server for the block, stopped at its end."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


def s3_client(environment: dict[str, str]):
    """A plain S3 client of the server `environment` points to, to look at the store from outside tlbench."""
    import boto3

    return boto3.client("s3", endpoint_url=environment["AWS_ENDPOINT_URL"],
                        region_name=environment["AWS_DEFAULT_REGION"],
                        aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"])


def create_bucket(environment: dict[str, str], name: str) -> None:
    """Create a bucket on the server `environment` points to."""
    s3_client(environment).create_bucket(Bucket=name)
