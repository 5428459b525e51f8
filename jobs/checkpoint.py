"""A checkpoint at the end of every epoch, so a job whose worker died resumes after its last epoch.

A Checkpoint trusts only the files its `state.json` names (written last, moved into place whole). Only an
attempt that recovery put back may resume one: remove it before any other attempt (worker/runner.py does),
and when the job ends. What the folder holds, and why: docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHECKPOINT_FOLDER = "checkpoint"
STATE_FILE = "state.json"
HEAD_PHASE = "head"
FINE_TUNE_PHASE = "fine_tune"
HEAD_WEIGHTS_FILE = "head-phase.weights.h5"


@dataclass
class TrainingState:
    """Where training stood after the last finished epoch."""

    rows: list[dict] = field(default_factory=list)  # every epoch row so far, both phases
    phase: str = HEAD_PHASE
    phase_start: int = 0  # how many rows came before the current phase
    latest: str | None = None  # weights after the last epoch
    best: str | None = None  # weights after the current phase's best epoch
    head_weights: str | None = None  # fine-tuning only: where the head phase ended

    def phase_rows(self) -> list[dict]:
        """The rows of the current phase."""
        return self.rows[self.phase_start:]


def is_improvement(value: float, earlier: list[dict]) -> bool:
    """Whether value beats every earlier validation accuracy (early stopping's rule with min_delta 0)."""
    return not earlier or value > max(row["val_accuracy"] for row in earlier)


class Checkpoint:
    """The checkpoint folder of one job."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.state = self._load()
        self.resumed = self.state is not None
        if self.state is None:
            self.state = TrainingState()

    def _load(self) -> TrainingState | None:
        """The saved state, or None when there is none to resume from."""
        try:
            return TrainingState(**json.loads((self.folder / STATE_FILE).read_text()))
        except FileNotFoundError:
            return None

    def save_epoch(self, model, rows: list[dict]) -> None:
        """Save the weights after the epoch just finished (rows includes its row), then the state."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{len(rows)}.weights.h5"
        model.save_weights(self.folder / name)
        state = self.state
        improved = is_improvement(rows[-1]["val_accuracy"], rows[state.phase_start:-1])
        self._commit(TrainingState(rows=list(rows), phase=state.phase, phase_start=state.phase_start, latest=name,
                                   best=name if improved else state.best, head_weights=state.head_weights))

    def start_fine_tuning(self, model, rows: list[dict]) -> None:
        """Remember the weights the head phase ended with; fine-tuning's epochs count from here."""
        self.folder.mkdir(parents=True, exist_ok=True)
        model.save_weights(self.folder / HEAD_WEIGHTS_FILE)
        self._commit(TrainingState(rows=list(rows), phase=FINE_TUNE_PHASE, phase_start=len(rows),
                                   head_weights=HEAD_WEIGHTS_FILE))

    def in_phase(self, phase: str) -> bool:
        """Whether the job resumed inside this phase."""
        return self.resumed and self.state.phase == phase

    def resumes(self, phase: str) -> bool:
        """Whether this phase has epochs saved to continue from."""
        return self.in_phase(phase) and self.state.latest is not None

    def restore_latest(self, model) -> None:
        """Load the last epoch's weights and optimizer state into the (compiled) model."""
        _load_into(model, self.folder / self.state.latest)

    def weights_of(self, model, name: str) -> list:
        """The weights saved in file `name`, read through the model (which then gets them)."""
        _load_into(model, self.folder / name)
        return model.get_weights()

    def remove(self) -> None:
        """Forget the checkpoint: the job ended."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _commit(self, state: TrainingState) -> None:
        """Write the state whole, then delete the weights files it no longer names."""
        write_json_whole(self.folder / STATE_FILE, asdict(state))
        self.state = state
        keep = {STATE_FILE, state.latest, state.best, state.head_weights}
        for path in self.folder.glob("*.weights.h5"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def write_json_whole(path: Path, value) -> None:
    """Write JSON under another name, then rename it: a reader (or a resumed job) finds the old file or the new
    one whole, never part of one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


def _load_into(model, path: Path) -> None:
    """Load weights and optimizer state; the optimizer needs its variables before it can take them."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
