"""Whether a row of an embedding or output layer was ever trained, judged against the rest of its layer (read from
its safetensors file alone: the layer streamed once for its mean, 2048 rows sampled in 16 blocks). The doctor's use
of it, on the stop tokens' rows: `eosguard.checks.weights`.

Where an untrained row sits: `resize_token_embeddings` starts a new row at the vocabulary's mean (transformers 5.25
`_init_added_embeddings_weights_with_mean`: a draw from N(mean, 1e-9 x the rows' covariance)), or, with
`mean_resizing=False`, at N(0, initializer_range) as `_init_weights` draws every row of a model built from its config
(Gemma-style vocabularies grow so); some tools zero it. A LoRA run that trains neither the embedding nor the output
layer leaves it there (Qwen3#1064, LLaMA-Factory#7943): the model can neither read nor write the token as it should.
A row is untrained when it is
  * at zero: a norm under 1e-6 of the median row's;
  * at the vocabulary's mean: nearer it than `UNTRAINED` (5%) of a typical row's distance from it (the median);
  * random at the initialisation scale: a norm within `RANDOM_SD` (5) standard deviations of an N(0,
    initializer_range) row's (initializer_range x sqrt(width), +-5 / sqrt(2 width) of it), and blind to the layer's
    8 main directions (less of its energy in them than all but 1e-6 of random rows: chi-square(8) / width, the
    Wilson-Hilferty bound). Direction alone does not tell: 0.1% of SmolLM2's trained rows are as blind. So the rule
    stands aside (said in the step) where over `TRAINED_AT_INIT` (1%) of the sampled rows are trained rows at that
    norm, or over `RANDOM_SHARE` (a quarter) look random (a model fresh from its config: nothing to tell apart);
  * far below the trained rows' norms: under `NORM_FLOOR` (a quarter) of the median row's.
What separates them, measured on 2026-12-06 (SmolLM2-135M-Instruct, 49152 x 576, tied; transformers 5.25.0, torch
2.13.0; `python -m pytest -q -n 0 tests/checks/test_weights.py -k every_row -s` prints these): every trained row is
judged trained, their norms 0.57-2.38 x the median (3.15), their distances to the mean 0.72-2.50 x the typical one,
52% of their energy in the 8 main directions (median; 0.1% of them under 7.4%). A zero row: norm 0. A mean row
(transformers' own init): 3.2e-5 x the typical distance, 1500x under the 5% and 22000x under the nearest trained
row. N(0, 0.02) rows (2000 draws): norms 0.139-0.167 x the median (3.4x under the lowest trained row, 1.5x under
the floor), energy 1.3% in the main directions (at most 4.7%, the bound 7.6%). Where trained rows are smaller than
initializer_range's (SmolLM2's scaled by 0.05), N(0, 0.02) rows are 2.9x the median norm and far from the mean: the
random-row rule alone finds them. The tiny model of the slow test here (32000 x 64 rows left at N(0, 0.02),
`<|im_end|>` added at the mean, 3.3e-5 from it): after 5 steps of `eosguard train` at lr 3e-3 that row is 0.44
(input) / 0.47 (output) x the median norm, 0.44 / 1.05 x the typical distance from the mean (the doctor's step shows
them), judged trained; its layers look random everywhere, so the random-row rule stands aside there.

What it cannot tell: how much a row learned (moved a few steps off its start, past 5% of the distance and a
quarter of the norm, it is judged trained); a row copied from another token's row, or set to the mean of a few
chosen tokens' rows, then left untrained (it looks trained); a random row at another scale than initializer_range's
and not under a quarter of the median norm, or at one the trained rows share; a row in a layer that is random
everywhere (a model not pre-trained) but at zero or the mean; whether the rows were trained to end a turn (the
stop-rate evaluation measures that).

Run as:
    eosguard doctor --tokenizer MODEL_DIR --model MODEL_DIR
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

UNTRAINED = 0.05  # at the mean: nearer it than this share of a typical row's distance from it
NORM_FLOOR = 0.25  # far below the trained rows' norms: under this share of the median row's
RANDOM_SD = 5.0  # random at the initialisation scale: a norm this many standard deviations from N(0, std)'s ...
BASIS, RANDOM_TAIL_Z = 8, 4.753  # ... and under the 1e-6 tail (z) of a random row's energy in 8 main directions
RANDOM_SHARE = 0.25  # the random-row rule applies where at most this share of the sampled rows look random,
TRAINED_AT_INIT = 0.01  # and at most this share are trained rows (not blind) with a random row's norm
SAMPLE_BLOCKS, BLOCK_ROWS = 16, 128  # the vocabulary's sample: 16 blocks of 128 rows spread across it
CHUNK_VALUES = 1 << 22  # values read at a time for the vocabulary's mean


@dataclass(frozen=True)
class Tensor:
    """One 2-D tensor in a safetensors file, read a slice at a time."""

    path: Path
    name: str

    def rows(self, ids: list[int]) -> Any:
        from safetensors import safe_open

        with safe_open(str(self.path), "pt") as f:
            part = f.get_slice(self.name)
            return _stack([part[i : i + 1][0] for i in ids], part.get_shape()[1])

    @cached_property
    def shape(self) -> tuple[int, int]:
        return self._meta[0]

    @cached_property
    def _meta(self) -> tuple[Any, str]:
        from safetensors import safe_open

        with safe_open(str(self.path), "pt") as f:
            part = f.get_slice(self.name)
            return tuple(part.get_shape()), part.get_dtype()

    @property
    def dtype(self) -> str:
        return self._meta[1]

    @property
    def readable(self) -> bool:
        """A 2-D floating-point tensor (a quantized layer's packed integers are not rows)."""
        return len(self.shape) == 2 and self.dtype.startswith(("F", "BF"))


def _stack(rows: list[Any], dim: int) -> Any:
    import torch

    return torch.stack([r.float() for r in rows]) if rows else torch.zeros(0, dim)


@dataclass(frozen=True)
class Row:
    """One row judged: its norm as a share of the median row's, its distance to the vocabulary's mean as a share of
    a typical row's, and why it is untrained (None: trained)."""

    norm: float
    from_mean: float
    reason: str | None
    aside: str | None = None  # why the random-row rule stood aside

    def __str__(self) -> str:
        if math.isnan(self.norm):
            return str(self.reason)
        aside = f"; not told from random rows: {self.aside}" if self.aside and not self.reason else ""
        shown = f"norm {self.norm:.3g} x the median row's, distance to the mean {self.from_mean:.3g} x a typical row's"
        return f"{self.reason or 'trained'} ({shown}{aside})"


class Vocabulary:
    """A layer's reference: its mean (streamed over every row), and from 16 blocks of 128 rows spread across it a
    typical row's distance to that mean (the median), the median norm and the 8 main directions; whether the
    random-row rule applies (`stands_aside`: None where it does, else why not)."""

    def __init__(self, tensor: Tensor, init_std: float, judged: tuple[int, ...] = ()) -> None:
        import torch
        from safetensors import safe_open

        with safe_open(str(tensor.path), "pt") as f:
            part = f.get_slice(tensor.name)
            vocab, dim = part.get_shape()
            step = max(1, CHUNK_VALUES // dim)
            total = sum(part[lo : lo + step].double().sum(0) for lo in range(0, vocab, step))
            starts = list(dict.fromkeys(int(s) for s in torch.linspace(0, max(0, vocab - BLOCK_ROWS), SAMPLE_BLOCKS)))
            blocks = [(torch.arange(s, min(s + BLOCK_ROWS, vocab)), part[s : s + BLOCK_ROWS].float()) for s in starts]
        self.mean = (total / vocab).float()
        self.dim, self.init_std = dim, init_std
        sample = torch.cat([rows for _, rows in blocks])
        self.typical = float((sample - self.mean).norm(dim=1).median()) or 1.0
        self.norm = float(sample.norm(dim=1).median()) or 1.0
        # the main directions from every other block, less the rows judged; the other blocks, apart from them, say
        # whether the random-row rule can tell random rows from this vocabulary's
        ids, known = (torch.cat(x) for x in zip(*blocks[::2], strict=True))
        self.basis = _main_directions(known[~torch.isin(ids, torch.tensor(judged, dtype=torch.long))], BASIS, dim)
        k = self.basis.shape[1]  # a random row's energy share there is chi2(k) / dim; its 1e-6 tail (Wilson-Hilferty):
        self.blind = k * (1 - 2 / (9 * k) + RANDOM_TAIL_Z * math.sqrt(2 / (9 * k))) ** 3 / dim
        at_init, blind = self._tests(torch.cat([block for _, block in blocks[1::2]] or [sample]))
        self.stands_aside = (
            f"most rows of the vocabulary look random at N(0, {init_std:.3g})"
            if float((at_init & blind).float().mean()) > RANDOM_SHARE
            else f"trained rows have the norms of N(0, {init_std:.3g}) rows"
            if float((at_init & ~blind).float().mean()) > TRAINED_AT_INIT
            else None
        )

    def _tests(self, rows: Any) -> tuple[Any, Any]:
        """Each row: whether its norm is N(0, initializer_range)'s (within `RANDOM_SD` standard deviations), and
        whether it is blind to the vocabulary's main directions (less energy there than all but 1e-6 of random rows)."""
        norms = rows.norm(dim=1).clamp_min(1e-30)
        init_norm = self.init_std * math.sqrt(self.dim)
        at_init = (norms / init_norm - 1).abs() < RANDOM_SD / math.sqrt(2 * self.dim)
        return at_init, ((rows @ self.basis) ** 2).sum(1) / norms**2 < self.blind

    def judge(self, rows: Any) -> list[Row]:
        """Each row's state (the rule, and the measurements it rests on: the module's docstring)."""
        norms = (rows.norm(dim=1) / self.norm).tolist()
        from_mean = ((rows - self.mean).norm(dim=1) / self.typical).tolist()
        at_init, blind = self._tests(rows)
        random = (at_init & blind).tolist() if self.stands_aside is None else [False] * len(norms)
        out = []
        for norm, dist, rand in zip(norms, from_mean, random, strict=True):
            reason = (
                "at zero"
                if norm < 1e-6
                else "at the vocabulary's mean"
                if dist < UNTRAINED
                else f"random at the initialisation scale (N(0, {self.init_std:.3g}))"
                if rand
                else "far below the trained rows' norms"
                if norm < NORM_FLOOR
                else None
            )
            out.append(Row(norm, dist, reason, self.stands_aside))
        return out


def _main_directions(rows: Any, k: int, dim: int) -> Any:
    """An orthonormal basis (dim x k, k at most a quarter of dim) of the rows' k main directions (uncentered): block
    power iteration from a fixed start, cheap at any width."""
    import torch

    basis = torch.randn(dim, min(k, max(1, dim // 4)), generator=torch.Generator().manual_seed(0))
    for _ in range(8):
        basis, _ = torch.linalg.qr(rows.T @ (rows @ basis))
    return basis


def reference(tensor: Tensor, init_std: float, judged: tuple[int, ...]) -> Vocabulary:
    """A layer's `Vocabulary` (the rows `judged` left out of its main directions), measured once per run (and again
    when its file changes)."""
    stat = tensor.path.stat()
    return _reference(tensor, (stat.st_mtime_ns, stat.st_size), init_std, judged)


@lru_cache(maxsize=8)
def _reference(tensor: Tensor, stamp: tuple[int, int], init_std: float, judged: tuple[int, ...]) -> Vocabulary:
    return Vocabulary(tensor, init_std, judged)


__all__ = ["NORM_FLOOR", "UNTRAINED", "Row", "Tensor", "Vocabulary", "reference"]
