"""Crash-safe checkpoints: each one written into a staging folder and renamed into place, so a crash or SIGKILL while
saving leaves the previous checkpoint intact and `--resume` never takes a half-written one.

`AtomicCheckpoints` is a `transformers.Trainer` mixin (eosguard's trainer uses it); `last_checkpoint` finds where a
run resumes.

Run as:
    eosguard train CONFIG.yaml --resume   # continues from the last complete checkpoint
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


class AtomicCheckpoints:
    """A `transformers.Trainer` mixin: checkpoints written into `output_dir/.staging/checkpoint-N`, then renamed into
    place, each with the files of `checkpoint_files` (name -> text: the resolved config) beside the Trainer's own.
    In a multi-process run rank 0 clears the staging folder before anyone writes and commits it after everyone has
    (each rank writes its own RNG state)."""

    checkpoint_files: dict[str, str]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = self._get_output_dir(trial=trial)
        staging = os.path.join(run_dir, ".staging")
        main = self.is_world_process_zero()
        # Several processes write one checkpoint (rank 0 the weights and optimizer, each rank its RNG state): rank 0
        # clears the staging folder before anyone writes and commits it after everyone has.
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        original = self.args.output_dir
        self.args.output_dir = staging
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self.args.output_dir = original
        self.accelerator.wait_for_everyone()
        if main:
            name = f"checkpoint-{self.state.global_step}"
            for filename, text in getattr(self, "checkpoint_files", {}).items():
                Path(staging, name, filename).write_text(text)
            CheckpointWriter.commit(Path(staging, name), Path(run_dir, name))
            shutil.rmtree(staging, ignore_errors=True)
            if self.args.save_total_limit:
                from transformers.trainer_utils import rotate_checkpoints

                rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit)
        self.accelerator.wait_for_everyone()


class CheckpointWriter:
    """Moves a completely written checkpoint from staging into place in one rename (tests wrap `commit` to widen
    the window in which they kill a save)."""

    @staticmethod
    def commit(staging: Path, final: Path) -> None:
        if final.exists():
            shutil.rmtree(final)
        staging.replace(final)  # atomic on one filesystem


def last_checkpoint(run_dir: str | Path) -> str | None:
    """The last complete checkpoint under `run_dir` (a `.staging` folder is never one), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(run_dir)) if Path(run_dir).is_dir() else None
