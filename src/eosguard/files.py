"""Folders written whole or not at all: build in a staging folder beside the destination, then rename into place.

Used for saved model folders, prepared datasets and the converted-tokenizer cache, so an interrupted write never
leaves a half-written folder where a complete one is expected. (Trainer checkpoints get the same treatment in
`eosguard.train.EosguardTrainer._save_checkpoint`, where the Trainer itself chooses the folder name.)

Run as:
    python -c "from eosguard.files import atomic_folder"
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(destination: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces `destination`, on error it is removed.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "result"
        >>> with atomic_folder(out) as staging:
        ...     _ = (staging / "done.txt").write_text("ok")
        >>> (out / "done.txt").read_text()
        'ok'
    """
    out = Path(destination)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.replace(out)  # a rename on one filesystem
