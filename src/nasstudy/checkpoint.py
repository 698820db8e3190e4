"""Resumable state of one job, kept outside its declared outputs (a job's resume point; the model
files a job writes, supernet.pt and model.pt, are training.save_model_file's).

Snakemake deletes the outputs of a job that failed or was killed, so a job's checkpoint lives in
`.checkpoints/<study>/<rule>/<wildcards>.pt` instead. A checkpoint is written atomically at regular
points (an epoch, a batch of queries) and carries a key made of the job's rule, wildcards, params,
code hash and input hashes: a checkpoint of other inputs or knobs is ignored, never half-used. After
the job succeeds it stays until the run's onsuccess hook (`clear_finished`): Snakemake may still redo
a job killed between its exit and Snakemake's bookkeeping, which then resumes from here.

Beside it, `<name>.events` (JSON lines: start, resume, save, with wall-clock times) says when the job
started and saved; the kill benchmark reads it to measure how much work a crash cost.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nasstudy.utils import atomic_write_bytes, file_md5

CHECKPOINT_ROOT = Path(".checkpoints")


class Checkpoint:
    """Load/save a job's state dict; a Checkpoint without a path does nothing (unit tests, by hand)."""

    def __init__(self, path: str | Path | None = None, key: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.key = key
        self.resumed_from: str | None = None  # the label of the checkpoint this run continued from

    @property
    def events_path(self) -> Path | None:
        return self.path.with_suffix(".events") if self.path is not None else None

    @property
    def json_path(self) -> Path | None:
        """For a job whose state is plain JSON (the search's state.json): kept here while it runs."""
        return self.path.with_suffix(".json") if self.path is not None else None

    def event(self, kind: str, label: str = "") -> None:
        """Append one line to the events file (best effort: never fails the job)."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.events_path, "a") as f:
                f.write(json.dumps({"t": time.time(), "event": kind, "label": label}) + "\n")
        except OSError:
            pass

    def load(self) -> dict | None:
        """The saved state of this very job, or None (none saved, unreadable, or another job's)."""
        if self.path is None or not self.path.is_file():
            return None
        import torch

        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - truncated or foreign file: start afresh, say why
            print(f"[checkpoint] ignoring unreadable {self.path}: {type(e).__name__}: {e}", file=sys.stderr)
            return None
        if not isinstance(blob, dict) or blob.get("key") != self.key:
            print(f"[checkpoint] ignoring {self.path}: made with other inputs, params or code", file=sys.stderr)
            return None
        self.mark_resumed(str(blob.get("label", "")))
        print(f"[checkpoint] resuming from {self.path} ({blob.get('label', '')})", file=sys.stderr)
        return blob["state"]

    def save(self, state: dict, label: str = "") -> None:
        """Write `state` (tensors, plain types) atomically; `label` says where in the job it is."""
        if self.path is None:
            return
        import torch

        buf = io.BytesIO()
        torch.save({"key": self.key, "label": label, "state": state}, buf)
        atomic_write_bytes(self.path, buf.getvalue())
        self.event("save", label)

    def mark_resumed(self, label: str) -> None:
        """Note that this run continues from the state saved at `label` (events file, MLflow tag)."""
        self.resumed_from = label
        self.event("resume", label)

    def done(self) -> None:
        """The job succeeded. Its last checkpoint stays until the workflow has recorded the job
        (`clear_finished`, at the end of a successful run): a kill between the job's exit and
        Snakemake's bookkeeping makes Snakemake redo the job, which then resumes from here."""
        self.event("done")

    def clear(self) -> None:
        """Delete the checkpoint and its events: the job's outputs are complete."""
        if self.path is not None:
            for p in (self.path, self.json_path, self.events_path):
                p.unlink(missing_ok=True)


def clear_finished(study: str, root: Path = CHECKPOINT_ROOT) -> int:
    """Delete the checkpoints of `study`'s jobs whose last event is "done"; the count deleted."""
    count = 0
    for events in sorted((root / study).glob("*/*.events")):
        try:
            lines = events.read_text().splitlines()
            last = json.loads(lines[-1])["event"] if lines else None
        except (OSError, ValueError, KeyError):
            continue
        if last == "done":
            Checkpoint(events.with_suffix(".pt")).clear()
            count += 1
    return count


def job_checkpoint(
    study: str,
    rule: str,
    wildcards: dict[str, str],
    params: Any,
    code: str,
    inputs: dict[str, list[Path]],
    keyed: bool = True,
) -> Checkpoint:
    """The checkpoint of one Snakemake job; its key changes with anything that changes the result.
    `keyed=False` (a stage that never saves state, only notes events) skips hashing the inputs."""
    name = "_".join(f"{k}={v}" for k, v in sorted(wildcards.items())) or "job"
    path = CHECKPOINT_ROOT / study / rule / f"{name}.pt"
    if not keyed:
        return Checkpoint(path)
    ident = {
        "rule": rule,
        "wildcards": wildcards,
        "params": params,
        "code": code,
        "inputs": {k: [file_md5(p) if Path(p).is_file() else "missing" for p in v] for k, v in sorted(inputs.items())},
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
    return Checkpoint(path, key)


def capture(**objs: Any) -> dict:
    """State of the torch global RNG and of each object: modules, optimizers, schedulers and anything
    with state_dict(); torch and numpy generators; tensors (copied)."""
    import torch

    out: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
    for name, obj in objs.items():
        if isinstance(obj, torch.Generator):
            out[name] = obj.get_state()
        elif isinstance(obj, np.random.Generator):
            out[name] = obj.bit_generator.state
        elif isinstance(obj, torch.Tensor):
            out[name] = obj.detach().cpu().clone()
        elif hasattr(obj, "state_dict"):
            out[name] = obj.state_dict()
        else:
            raise TypeError(f"cannot capture {name!r} of type {type(obj).__name__}")
    return out


def restore(state: dict, **objs: Any) -> None:
    """Put what `capture` took back into the same (freshly built) objects."""
    import torch

    torch.set_rng_state(state["torch_rng"])
    for name, obj in objs.items():
        saved = state[name]
        if isinstance(obj, torch.Generator):
            obj.set_state(saved)
        elif isinstance(obj, np.random.Generator):
            obj.bit_generator.state = saved
        elif isinstance(obj, torch.Tensor):
            with torch.no_grad():
                obj.copy_(saved.to(obj.device))
        else:
            obj.load_state_dict(saved)


NO_CHECKPOINT = Checkpoint()
