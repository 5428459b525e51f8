"""Start child processes, restart the ones allowed to die, stop them all on SIGINT/SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from worker.launch import ProcessSpec, child_environment

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 15.0


class Supervisor:
    """Keeps a set of children alive; `essential` ones end the whole stack when they die."""

    def __init__(self):
        self.running: dict[str, tuple[ProcessSpec, subprocess.Popen, bool]] = {}
        self.stopping = False

    def start(self, spec: ProcessSpec, essential: bool = False) -> subprocess.Popen:
        """Start one child in its own process group, so a terminal's Ctrl-C reaches it through us.

        A restarted worker gets the same spec, so the same name and the lock that holds it.
        """
        process = subprocess.Popen(spec.argv, env=child_environment(spec.env), start_new_session=True,
                                   pass_fds=spec.pass_fds)
        self.running[spec.name] = (spec, process, essential)
        return process

    def run_until_stopped(self) -> int:
        """Watch the children until a signal or an essential child's death; returns the exit code."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._request_stop)
        exit_code = 0
        while not self.stopping:
            exit_code = self._restart_or_fail()
            if exit_code:
                break
            time.sleep(POLL_SECONDS)
        self.stop_all()
        return exit_code

    def _request_stop(self, signum, _frame) -> None:
        """Signal handler: leave the watch loop."""
        print(f"\ntlbench: {signal.Signals(signum).name} received, stopping…", file=sys.stderr, flush=True)
        self.stopping = True

    def _restart_or_fail(self) -> int:
        """Restart dead workers; report an essential child's death with exit code 1."""
        for name, (spec, process, essential) in list(self.running.items()):
            if process.poll() is None:
                continue
            if essential:
                print(f"tlbench: {name} exited with code {process.returncode}; stopping", file=sys.stderr)
                return 1
            print(f"tlbench: {name} exited with code {process.returncode}; restarting it", file=sys.stderr)
            self.start(spec)
        return 0

    def stop_all(self) -> None:
        """Stop the children in reverse order of start (the broker last), each SIGTERM then SIGKILL."""
        for _, process, _ in reversed(list(self.running.values())):
            if process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                # The whole group: a Celery worker's training child must not outlive it.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
