"""A client that polls the real stack keeps its one connection: the server never closes it between polls,
so no poll can land just as it does (the resets `tlbench submit --wait` died of)."""
from __future__ import annotations

import time

import pytest
import requests

from testsupport.polling import slowest_poll_seconds
from testsupport.stack import running_stack

POLLS = 8


def local_port_of_one_call(session: requests.Session, url: str) -> int:
    """Call `url` and answer the client-side port of the TCP connection the answer came on."""
    with session.get(url, timeout=30, stream=True) as response:
        port = response.raw.connection.sock.getsockname()[1]
        response.raise_for_status()
        response.content  # read to the end, so the connection goes back to the session's pool
    return port


@pytest.fixture(scope="module")
def polled_stack(tmp_path_factory):
    """`tlbench up` on a home of its own."""
    with running_stack(tmp_path_factory.mktemp("home")) as running:
        yield running


def test_a_client_polling_at_the_slowest_interval_keeps_one_connection(polled_stack):
    url = f"{polled_stack['url']}/api/v1/benchmarks"
    wait = slowest_poll_seconds()
    session = requests.Session()  # no retries: any reset or close would show
    ports, failures = set(), []
    for _ in range(POLLS):
        try:
            ports.add(local_port_of_one_call(session, url))
        except requests.RequestException as error:
            failures.append(repr(error))
        # The idle time under test, not a wait for something to happen: a poller's pause after each answer.
        time.sleep(wait)
    assert failures == []
    assert len(ports) == 1  # one TCP connection: the server kept it open through every pause
