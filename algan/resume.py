"""Resumable training: a training loop's whole state, written atomically every few epochs and on
SIGTERM / SIGINT, so a killed run continues where it stopped and ends as an uninterrupted one would.

A run of the run cache (`results.cached_run(..., checkpoint_every=N)`) trains inside
`checkpointing(folder / TRAINING_STATE, identity, N)`; the loops (`train.train_algan`,
`baseline_common.fit_adversarial`) ask `session(...)` for the active checkpoint, restore from it,
and hand it their state at the end of each epoch. Without an active checkpoint (a plain
`ALGAN().fit`) nothing is read or written. The file holds the identity of what made it (the run's
arguments and resolved settings, the library's code, the loop's own settings) and one that differs
is refused with a line naming the difference: never silently mixed. N is not part of the run's
arguments (nor of its hash): a run checkpointed more or less often is the same run.

On a signal the current epoch is finished, its state written, and the run stops (KeyboardInterrupt
for SIGINT, SystemExit for SIGTERM); a second signal acts at once.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

TRAINING_STATE = "training_state.pt"  # in a run's folder while it trains (git-ignored: results/runs/**/*.pt)
FORMAT = "training-state-1"
CHECKPOINT_EVERY = int(os.environ.get("ALGAN_CHECKPOINT_EVERY", "4"))  # epochs; 0: on signals only
_ACTIVE: contextvars.ContextVar[Optional["Checkpoint"]] = contextvars.ContextVar("algan_checkpoint", default=None)



@contextlib.contextmanager
def checkpointing(path: str | Path, identity: dict[str, Any], every: int = CHECKPOINT_EVERY, *,
                  save: Callable[[Any, Path], None]) -> Iterator[None]:
    """Within the block, the (one) training loop checkpoints to `path` every `every` epochs and resumes from it;
    `save(state, path)` writes a state (the run cache's atomic `algan.results.torch_save`)."""
    token = _ACTIVE.set(Checkpoint(Path(path), identity, every, save))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class Checkpoint:
    def __init__(self, path: Path, identity: dict[str, Any], every: int, save: Callable[[Any, Path], None]):
        self.path, self.identity, self.every, self.save = path, identity, every, save
        self.stop: Optional[int] = None  # the signal received, if any

    def restore(self) -> Optional[dict]:
        """The stored state, after checking it was made by the same run; None when there is none."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not a training state (format {FORMAT!r}); delete it to start afresh")
        difference = first_difference(state["identity"], self.identity)
        if difference:
            raise ValueError(f"{self.path}: made by another run ({difference}); delete it to start afresh")
        print(f"resuming from {self.path} after epoch {state['epoch']}", file=sys.stderr)
        return state

    def end_epoch(self, epoch: int, state: Callable[[], dict]) -> None:
        """Write `state()` when the epoch is due (or a signal came); then stop if a signal came."""
        if self.stop is None and not (self.every and epoch % self.every == 0):
            return
        self.save({"format": FORMAT, "identity": self.identity, "epoch": epoch, **state()}, self.path)
        if self.stop == signal.SIGINT:
            raise KeyboardInterrupt(f"stopped after epoch {epoch}; the run resumes from {self.path}")
        if self.stop is not None:
            raise SystemExit(128 + self.stop)

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        """SIGTERM / SIGINT ask for a checkpoint at the end of the epoch (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) or signal.SIG_DFL for s in (signal.SIGTERM, signal.SIGINT)}

        def handler(signum, frame):
            self.stop = signum
            for s, h in previous.items():  # a second signal acts at once
                signal.signal(s, h)
            print(f"signal {signum}: stopping after this epoch, state to {self.path}", file=sys.stderr)

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


@contextlib.contextmanager
def session(loop_identity: dict[str, Any]) -> Iterator[Optional[Checkpoint]]:
    """The active checkpoint for one training loop (None when there is none), its identity extended by
    the loop's own settings, with signals handled while the loop runs."""
    active = _ACTIVE.get()
    if active is None:
        yield None
        return
    ckpt = Checkpoint(active.path, {**active.identity, "loop": loop_identity}, active.every, active.save)
    with ckpt.handling_signals():
        yield ckpt


def first_difference(stored: Any, current: Any, where: str = "") -> str:
    """'train.sigma: 2.0 in the checkpoint, 4.0 here' for the first differing leaf; '' when equal."""
    if isinstance(stored, dict) and isinstance(current, dict):
        for key in sorted(set(stored) | set(current), key=str):
            name = f"{where}.{key}" if where else str(key)
            if key not in stored or key not in current:
                return f"{name}: {'missing' if key not in stored else 'only'} in the checkpoint"
            found = first_difference(stored[key], current[key], name)
            if found:
                return found
        return ""
    if isinstance(stored, (list, tuple)) and isinstance(current, (list, tuple)):
        stored, current = list(stored), list(current)
    return "" if stored == current else f"{where}: {stored!r} in the checkpoint, {current!r} here"


# ---- random number generators ---------------------------------------------------------------------
def rng_state(*generators: torch.Generator) -> dict:
    """Every RNG a loop draws from: torch's global (CPU and CUDA), the given generators, numpy's, Python's."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in generators],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": list(random.getstate())}


def set_rng_state(state: dict, *generators: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    for g, s in zip(generators, state["generators"], strict=True):
        g.set_state(s)
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
