"""Start child processes, restart the ones allowed to die (waiting longer after each failure), stop them
all on SIGINT/SIGTERM, or when a child keeps failing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from worker.launch import ProcessSpec, child_environment

STOP_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class RestartPolicy:
    """How a child that died is restarted: after a delay that doubles with each failure up to a cap, back
    to the first delay once it has run a while; and when to give up on it and stop the whole stack."""

    first_delay: float = 0.5
    max_delay: float = 30.0
    # A child that ran this long before dying was healthy: its next restart waits the first delay again.
    healthy_after: float = 60.0
    # This many deaths within `window` seconds: the child can't run here (a bad setting, a missing
    # service), and restarting it forever would only hide that.
    max_failures: int = 5
    window: float = 60.0
    # How often the children are looked at.
    poll_seconds: float = 0.5


@dataclass
class Child:
    """One supervised child: what starts it, the running process, and its recent failures."""

    spec: ProcessSpec
    essential: bool
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    delay: float = 0.0
    restart_at: float | None = None  # set while it waits to be restarted
    failures: deque[float] = field(default_factory=deque)


class StackMustStop(RuntimeError):
    """An essential child died, or another one died `max_failures` times within the policy's window."""


class Supervisor:
    """Keeps a set of children alive; `essential` ones end the whole stack when they die."""

    def __init__(self, policy: RestartPolicy | None = None):
        self.policy = policy or RestartPolicy()
        self.children: dict[str, Child] = {}
        self.stopping = False

    def start(self, spec: ProcessSpec, essential: bool = False) -> subprocess.Popen:
        """Start one child in its own process group, so a terminal's Ctrl-C reaches it through us.

        A restarted worker gets the same spec, so the same name and the lock that holds it.
        """
        child = self.children.get(spec.name) or Child(spec, essential, delay=self.policy.first_delay)
        child.process = subprocess.Popen(spec.argv, env=child_environment(spec.env), start_new_session=True,
                                         pass_fds=spec.pass_fds)
        child.started_at, child.restart_at = time.monotonic(), None
        self.children[spec.name] = child
        return child.process

    def run_until_stopped(self) -> int:
        """Watch the children until a signal, an essential child's death or a child that keeps failing;
        returns the exit code (0 after a signal, 1 otherwise)."""
        previous = {signum: signal.signal(signum, self._request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        exit_code = 0
        try:
            while not self.stopping:
                try:
                    self._restart_or_fail()
                except StackMustStop as failure:
                    print(f"tlbench: {failure}; stopping", file=sys.stderr, flush=True)
                    exit_code = 1
                    break
                time.sleep(self.policy.poll_seconds)
        finally:
            self.stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return exit_code

    def _request_stop(self, signum, _frame) -> None:
        """Signal handler: leave the watch loop."""
        print(f"\ntlbench: {signal.Signals(signum).name} received, stopping…", file=sys.stderr, flush=True)
        self.stopping = True

    def _restart_or_fail(self) -> None:
        """Restart the children whose wait is over; schedule the restart of those that just died."""
        now = time.monotonic()
        for name, child in list(self.children.items()):
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self.start(child.spec, child.essential)
            elif child.process.poll() is not None:
                self._schedule_restart(name, child, now)

    def _schedule_restart(self, name: str, child: Child, now: float) -> None:
        """Count a death and pick when to restart; StackMustStop when it is essential or failed too often."""
        code = child.process.returncode
        if child.essential:
            raise StackMustStop(f"{name} exited with code {code}")
        if now - child.started_at >= self.policy.healthy_after:
            child.delay = self.policy.first_delay
            child.failures.clear()
        child.failures.append(now)
        while child.failures and now - child.failures[0] > self.policy.window:
            child.failures.popleft()
        if len(child.failures) >= self.policy.max_failures:
            raise StackMustStop(f"{name} failed {len(child.failures)} times within {self.policy.window:g} s "
                                    f"(last exit code {code})")
        print(f"tlbench: {name} exited with code {code}; restarting it in {child.delay:g} s",
              file=sys.stderr, flush=True)
        child.restart_at = now + child.delay
        child.delay = min(child.delay * 2, self.policy.max_delay)

    def stop_all(self) -> None:
        """Stop the children in reverse order of start (the broker last), each SIGTERM then SIGKILL."""
        for child in reversed(list(self.children.values())):
            process = child.process
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                # The whole group: a Celery worker's training child must not outlive it.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
