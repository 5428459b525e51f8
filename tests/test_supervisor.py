"""The supervisor of `tlbench up`, `tlbench worker` and `tlbench redis`, with real children: a child that
dies is restarted after a delay that doubles up to a cap, and one that keeps dying stops the stack."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from tlbench.supervisor import RestartPolicy, Supervisor
from worker.launch import ProcessSpec

# Notes the time it started (CLOCK_MONOTONIC, shared by every process of the host), then exits with code 3;
# with a second argument N, its N-th start first runs for half a second.
CHILD = """
import sys, time
log = sys.argv[1]
with open(log, "a") as out:
    out.write(f"{time.monotonic()}\\n")
starts = len(open(log).read().split())
if len(sys.argv) > 2 and starts == int(sys.argv[2]):
    time.sleep(0.5)
raise SystemExit(3)
"""


def failing_child(log: Path, slow_start: int | None = None) -> ProcessSpec:
    """A child that exits with code 3 at once (or, on start number `slow_start`, after half a second)."""
    extra = [str(slow_start)] if slow_start else []
    return ProcessSpec(name="crasher", argv=[sys.executable, "-c", CHILD, str(log), *extra], env={})


def start_times(log: Path) -> list[float]:
    """When each start of the child happened."""
    return [float(line) for line in log.read_text().split()]


def announced_delays(stderr: str) -> list[float]:
    """The restart delays the supervisor printed, in order."""
    return [float(seconds) for seconds in re.findall(r"restarting it in ([\d.]+) s", stderr)]


def test_a_child_that_keeps_failing_waits_longer_each_time_then_stops_the_stack(tmp_path, capsys):
    log = tmp_path / "starts"
    supervisor = Supervisor(RestartPolicy(first_delay=0.1, max_delay=0.4, max_failures=5, window=60,
                                          poll_seconds=0.01))
    supervisor.start(failing_child(log))

    assert supervisor.run_until_stopped() == 1

    stderr = capsys.readouterr().err
    assert announced_delays(stderr) == [0.1, 0.2, 0.4, 0.4]  # doubled each time, up to the cap
    starts = start_times(log)
    assert len(starts) == 5
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert all(gap >= delay for gap, delay in zip(gaps, [0.1, 0.2, 0.4, 0.4])), gaps
    assert stderr.strip().splitlines()[-1] == "tlbench: crasher failed 5 times within 60 s (last exit code 3); stopping"


def test_a_child_that_ran_a_while_is_restarted_after_the_first_delay_again(tmp_path, capsys):
    log = tmp_path / "starts"
    supervisor = Supervisor(RestartPolicy(first_delay=0.05, max_delay=1, healthy_after=0.4, max_failures=3,
                                          window=60, poll_seconds=0.01))
    supervisor.start(failing_child(log, slow_start=3))

    assert supervisor.run_until_stopped() == 1

    stderr = capsys.readouterr().err
    # Two quick deaths (0.05, then 0.1); the third start ran 0.5 s, so its death counts as a first one.
    assert announced_delays(stderr) == [0.05, 0.1, 0.05, 0.1]
    assert len(start_times(log)) == 5
    assert "crasher failed 3 times within 60 s (last exit code 3); stopping" in stderr


def test_an_essential_child_that_dies_stops_the_stack_at_once(tmp_path, capsys):
    log = tmp_path / "starts"
    supervisor = Supervisor(RestartPolicy(poll_seconds=0.01))
    supervisor.start(failing_child(log), essential=True)

    assert supervisor.run_until_stopped() == 1

    assert len(start_times(log)) == 1
    assert capsys.readouterr().err.strip() == "tlbench: crasher exited with code 3; stopping"
