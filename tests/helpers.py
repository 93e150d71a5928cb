"""Helpers shared by tests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence


def trained_runs(mask: Sequence[bool]) -> list[list[int]]:
    """The trained positions split into maximal runs: [F, T, T, F, T] -> [[1, 2], [4]]."""
    runs: list[list[int]] = []
    cur: list[int] = []
    for i, m in enumerate(mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    return runs + ([cur] if cur else [])


def gguf_with_unknown_end_of_turn(src, dst):
    """SmolLM2's GGUF with its end of turn `<|im_end|>` (id 2) renamed `<|turn_end|>`, in the vocabulary and the
    template, and eos set to `<|endoftext|>` (id 0): the weights still close replies with id 2, but its new name is
    none llama.cpp stops on by itself, and no eos / eot / eom id names it. The file a plain conversion of a model
    with a new end-of-turn token gives."""
    from eosguard.serve.gguf_files import EOS, TEMPLATE, TOKENS, read_gguf, write_with_metadata

    info = read_gguf(src)
    tokens = list(info.tokens)
    tokens[2] = "<|turn_end|>"
    template = info.template.replace("<|im_end|>", "<|turn_end|>")
    write_with_metadata(src, dst, {TOKENS: tokens, TEMPLATE: template, EOS: 0})
    return dst


def launch_env() -> dict[str, str]:
    """The environment of a launched training run: one torch thread a process (two processes share two cores),
    output unbuffered so a killed run's last lines are there."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_together(*cmds: list[str], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run commands side by side (a one-process reference beside a two-process run: the two cores are shared, the
    wall time is the longest run's), one thread a process for torch, output captured."""
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=launch_env()) for c in cmds
    ]
    done = []
    for cmd, proc in zip(cmds, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return done
