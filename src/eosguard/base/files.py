"""Folders written whole or not at all: build in a staging folder beside the destination, then rename into place.

Used for saved model folders, prepared datasets and the converted-tokenizer cache, so an interrupted write never
leaves a half-written folder where a complete one is expected. (Trainer checkpoints get the same treatment in
`eosguard.training.checkpoints.AtomicCheckpoints._save_checkpoint`, where the Trainer itself chooses the folder name.)

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/   # written whole or not at all
"""

from __future__ import annotations

import os
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


def write_text(path: str | Path, text: str) -> Path:
    """Write a whole file atomically (temp file + rename); an unwritable path is a user error (exit 2), not a trace.

    Example:
        >>> import tempfile, pathlib
        >>> p = write_text(pathlib.Path(tempfile.mkdtemp()) / "sub" / "page.html", "<p>hi</p>")
        >>> p.read_text()
        '<p>hi</p>'
    """
    from eosguard.base.errors import EosguardError

    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=out.parent, prefix=f".{out.name}.", delete=False) as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(f.name, 0o666 & ~umask)  # a temp file is private (0600); the page is as shareable as any file
        Path(f.name).replace(out)
    except OSError as exc:
        raise EosguardError(f"{out}: cannot write: {exc.strerror or exc}") from None
    return out
