"""Rank awareness for `eosguard train` under the launchers users already use: torchrun and `accelerate launch`.

No launcher of our own: torchrun / accelerate start the processes and set RANK / WORLD_SIZE; `transformers.Trainer`
(through accelerate) runs DDP, FSDP or DeepSpeed. What eosguard adds is the part a trainer cannot know:

- work that must happen once (reading and rendering the data, the doctor) runs on rank 0 while the others wait; its
  result is broadcast, so every rank trains on the very same examples and the doctor is judged once;
- an error there (a bad record, a doctor refusal) reaches every rank: rank 0 prints it, all ranks exit with its
  code, nobody hangs at a barrier;
- log lines, the final model folder, `eosguard.json` and `report.html` come from rank 0 only.

An error inside training on one rank (the guard, a crash, a killed process) ends that process; torchrun's agent then
stops the others and names the failed rank (tested in `tests/training/test_distributed.py`).

Run as:
    torchrun --nproc_per_node 2 -m eosguard train CONFIG.yaml
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from eosguard.base.errors import EosguardError, PeerFailed

T = TypeVar("T")
PEER_GRACE_S = 30.0


def world_size() -> int:
    """Processes in this run, as the launcher set it (1 without torchrun / accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0, or a single-process run: the one process that logs and writes the final outputs."""
    return rank() == 0


def _state() -> Any:
    """accelerate's process state (starts the process group under a multi-process launch, gloo on CPU)."""
    from accelerate import PartialState

    return PartialState()


def once(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and give every rank its result (or its error); a plain call in one process."""
    if world_size() == 1:
        return fn()
    import torch.distributed as dist

    _state()
    if not dist.is_initialized():
        raise EosguardError(f"WORLD_SIZE={world_size()} but no process group started: launch with torchrun")

    def broadcast_object_list(objects: list[Any], from_process: int) -> None:
        dist.broadcast_object_list(objects, src=from_process)

    payload: list[Any] = [None]
    error: EosguardError | None = None
    if is_main():
        try:
            payload[0] = ("ok", fn())
        except EosguardError as exc:
            error = exc
            payload[0] = ("error", str(exc), exc.exit_code)
        except BaseException as exc:  # an unexpected crash: still release the others, then re-raise here
            payload[0] = ("error", f"rank 0 crashed: {type(exc).__name__}: {exc}", 1)
            broadcast_object_list(payload, from_process=0)
            raise
    broadcast_object_list(payload, from_process=0)
    if error is not None:
        raise error
    status, *rest = payload[0]
    if status == "error":
        # Let rank 0 print its message and exit first: the launcher then names rank 0 and its exit code as the root
        # cause and stops this process; without such a launcher this rank gives up after PEER_GRACE_S.
        time.sleep(PEER_GRACE_S)
        raise PeerFailed(rest[0], rest[1])
    return rest[0]


def quiet_replicas() -> None:
    """On ranks other than 0: no library log lines or progress bars (rank 0 prints the same ones once)."""
    if is_main():
        return
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


def main_only(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` on rank 0, a no-op on the others: each line is printed once per run."""
    return log if is_main() else (lambda _line: None)


__all__ = ["is_main", "main_only", "once", "quiet_replicas", "rank", "world_size"]
