"""Progress of long work: a rich progress bar on a terminal, a few plain lines otherwise (logs, pipes, CI).

Written to stderr, so `--json` output on stdout stays machine-readable. Plain mode prints a line when a quarter more
of the work is done, never a carriage-return bar that turns a log into noise.

    with progress("generating", total=len(prompts)) as advance:
        for batch in batches:
            ...
            advance(len(batch))

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

Advance = Callable[[int], None]
PLAIN_STEPS = 4  # plain mode: a line at 25%, 50%, 75% and 100%


def _console() -> Console:
    return Console(file=sys.stderr)  # made per use: tests and callers may swap sys.stderr


@contextmanager
def progress(description: str, total: int, *, enabled: bool = True) -> Iterator[Advance]:
    """Yield `advance(n)`; a bar on a terminal, lines at each quarter otherwise; nothing when disabled or empty.

    Example:
        >>> import io, sys, contextlib
        >>> buf = io.StringIO()
        >>> with contextlib.redirect_stderr(buf), progress("rendering", total=8) as advance:
        ...     for _ in range(8):
        ...         advance(1)
        >>> [line.split(" (")[0] for line in buf.getvalue().splitlines()]
        ['rendering: 2/8', 'rendering: 4/8', 'rendering: 6/8', 'rendering: 8/8']
        >>> buf = io.StringIO()
        >>> with contextlib.redirect_stderr(buf), progress("generating", total=48) as advance:
        ...     advance(48)  # one batch: one line
        >>> buf.getvalue().split(" (")[0]
        'generating: 48/48'
    """
    if not enabled or total <= 0:
        yield lambda n: None
        return
    console = _console()
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        columns: list[Any] = [
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
        return
    done = 0
    next_mark = 1
    start = time.perf_counter()

    def advance(n: int) -> None:
        nonlocal done, next_mark
        done += n
        if next_mark <= PLAIN_STEPS and done * PLAIN_STEPS >= next_mark * total:
            while next_mark <= PLAIN_STEPS and done * PLAIN_STEPS >= next_mark * total:
                next_mark += 1  # one line however many quarters a single step crossed
            print(f"{description}: {min(done, total)}/{total} ({time.perf_counter() - start:.0f}s)", file=sys.stderr)

    yield advance


def trainer_progress(description: str, *, enabled: bool = True) -> Any:
    """A `transformers.TrainerCallback` that shows training steps with `progress` (for runs whose tqdm is off)."""
    from transformers import TrainerCallback

    class StepProgress(TrainerCallback):
        def __init__(self) -> None:
            self._cm: Any = None
            self._advance: Advance = lambda n: None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._cm = progress(description, state.max_steps - state.global_step, enabled=enabled)
            self._advance = self._cm.__enter__()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._advance(1)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._cm is not None:
                self._cm.__exit__(None, None, None)
                self._cm = None

    return StepProgress()


__all__ = ["Advance", "progress", "trainer_progress"]
