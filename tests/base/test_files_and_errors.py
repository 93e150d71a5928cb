"""The bottom layer: folders written whole or not at all, files written atomically, errors crossing processes whole."""

from __future__ import annotations

import pickle

import pytest

from eosguard.base.errors import EXIT_USAGE, DataError, EosguardError, PeerFailed
from eosguard.base.files import atomic_folder, write_text


def test_a_failed_write_leaves_the_old_folder_and_no_staging(tmp_path):
    out = tmp_path / "result"
    with atomic_folder(out) as staging:
        (staging / "v1.txt").write_text("one")
    with pytest.raises(RuntimeError), atomic_folder(out) as staging:
        (staging / "v2.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == ["v1.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["result"]  # the staging folder is gone
    with atomic_folder(out) as staging:
        (staging / "v3.txt").write_text("three")
    assert sorted(p.name for p in out.iterdir()) == ["v3.txt"]  # a complete write replaces the old folder


def test_an_unwritable_path_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(EosguardError, match="cannot write") as caught:
        write_text(blocker / "page.html", "<p>hi</p>")
    assert caught.value.exit_code == EXIT_USAGE


def test_errors_cross_processes_with_every_field():
    error = pickle.loads(pickle.dumps(DataError("malformed JSON", path="a.jsonl", line=7, hint="fix line 7")))
    assert (error.path, error.line, error.hint, str(error)) == (
        "a.jsonl",
        7,
        "fix line 7",
        "a.jsonl:7: malformed JSON\n  hint: fix line 7",
    )
    peer = pickle.loads(pickle.dumps(PeerFailed("rank 0 stopped", 3)))
    assert peer.exit_code == 3 and peer.message == "rank 0 stopped"
