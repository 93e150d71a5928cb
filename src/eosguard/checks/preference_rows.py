"""The doctor on preference rows (DPO, IPO, ORPO, KTO): each completion held to the chat template's closing sequence,
each prompt to its generation prompt, and TRL's collator's truncation applied as the run applies it.

Rows are `prompt_ids` with `chosen_ids` / `rejected_ids` (or `completion_ids` and `label`), read from files
(`eosguard.data.preference_rows`) or made in memory by TRL's own preprocessing or eosguard's renderer
(`eosguard.checks.preference_data`, whose doc says what TRL 1.16 does with them). TRL's collator cuts them as it
does: the first `max_length` tokens of prompt + completion (`truncation_mode="keep_start"`, its default and KTO's
only mode) or the last (`"keep_end"`, deprecated in TRL 1.16), after dropping the rows whose prompt alone fills
`max_length` (DPO with `keep_start`, KTO always).

Each completion is read from its end: whitespace the template writes after a closer is skipped, then closing
sequences and the tokenizer's eos are counted. Findings, with the first rows of each:

- `completion-unclosed`: no closing sequence and no eos at the end;
- `closer-replaced`: the tokenizer's eos in place of the closing sequence;
- `closer-doubled`: the closing sequence twice, or the eos after it (trained past the stop);
- `truncation-drops-eos`: the stop token cut by the collator at `max_length`;
- `chosen-loses-stop`: chosen completions left without a stop token (absent, or cut) more often than the rejected
  ones of their pairs (KTO: desirable more often than undesirable): the preference loss teaches not to stop;
- `prompt-not-prefix`: prompts that do not end with the generation prompt inference sends;
- `reply-header-missing`: with `keep_end`, completions so long that the collator cuts the generation prompt away;
- `prompt-truncated`: with `keep_end`, prompts the collator cuts at their start (the generation prompt kept).

What the counts say (messages, the step, the facts, TRL's fixes) is `eosguard.checks.preference_report`. Run as:
    eosguard doctor --tokenizer PATH --prepared dpo_rows/ [--max-length 1024] [--truncation-mode keep_start]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from eosguard.chat.templates import ChatTemplate, TemplateError
from eosguard.data.columns import IGNORE, out_of_vocabulary
from eosguard.data.preference_rows import SIDES, PreferenceBatch

TRL_MAX_LENGTH = 1024  # DPOConfig's and KTOConfig's default max_length (TRL 1.16)
SHOWN = 3  # rows named (and kept for --show) per finding
TAIL = 24  # tokens read from a completion's end
Mode = Literal["keep_start", "keep_end"]


class Ending(NamedTuple):
    """How a completion ends: `closers` closing sequences and the tokenizer's `eos` (not a closer) at its end,
    whitespace between them skipped; `stop`: where the first stop token the model meets there is (None: none)."""

    closers: int
    eos: bool
    stop: int | None


def generation_prompt_ids(template: ChatTemplate) -> list[int]:
    """The ids `add_generation_prompt=True` adds after a user turn (ChatML: `<|im_start|>assistant\\n`); [] where the
    template adds none or rejects the probe."""
    user = [{"role": "user", "content": "Hi"}]
    try:
        full, base = template.encode_marked([template.render_marked(user, gen=True), template.render_marked(user)])
    except TemplateError:
        return []
    k = next((i for i, (a, b) in enumerate(zip(full, base, strict=False)) if a != b), min(len(full), len(base)))
    return full[k:]


@dataclass
class Found:
    """Completions (or rows) found with one problem: how many, per side, in how many rows, the first rows' places
    and their sequences (for --show)."""

    count: int = 0
    rows: int = 0
    sides: Counter[str] = field(default_factory=Counter)
    how: Counter[str] = field(default_factory=Counter)
    first: list[str] = field(default_factory=list)
    kept: list[dict[str, list[int]]] = field(default_factory=list)
    last: str = ""

    def where(self) -> str:
        return "; first: " + ", ".join(self.first) if self.first else ""

    def by_side(self) -> str:
        return ", ".join(f"{n} {side}" for side, n in self.sides.items() if side != "completion")


@dataclass
class PreferenceAudit:
    """What `PreferenceAuditor` counted (see the module doc)."""

    kind: str = ""
    rows: int = 0
    dropped: int = 0  # TRL: the prompt alone fills max_length
    too_long: int = 0  # eosguard: too long to hold whole
    completions: Counter[str] = field(default_factory=Counter)
    closed_once: int = 0
    prompts_ok: int = 0
    lost: Counter[str] = field(default_factory=Counter)  # completions trained without a stop token, per side
    only_chosen: int = 0  # pairs: the chosen completion without a stop token, the rejected one with it
    only_rejected: int = 0
    other_mode: int = 0  # what the other truncation mode would do (keep_end: prompts cut; keep_start: stops cut)
    other_dropped: int = 0  # keep_end: rows keep_start would drop
    found: dict[str, Found] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.rows - self.dropped - self.too_long

    def of(self, finding: str) -> Found:
        return self.found.setdefault(finding, Found())


class PreferenceAuditor:
    """Audits batches of preference rows against one template, with TRL's collator at `max_length` (None: rows
    trained as written) in `mode`."""

    def __init__(self, tokenizer: Any, template: ChatTemplate, max_length: int | None, mode: Mode) -> None:
        template.require_end_of_turn()
        self.tokenizer, self.template = tokenizer, template
        self.max_length, self.mode = max_length, mode
        ids = tokenizer.convert_tokens_to_ids
        self.closers = sorted(
            {tuple(int(ids(t)) for t in c.sequence) for c in template.closers.values()}, key=len, reverse=True
        )
        eos = tokenizer.eos_token_id
        self.eos = eos if eos is not None and not any(eos in seq for seq in self.closers) else None
        self.gen = generation_prompt_ids(template)
        self.vocab = len(tokenizer)
        self._blanks: dict[int, bool] = {}
        self.audit = PreferenceAudit()

    def ending(self, completion: np.ndarray) -> Ending:
        """Read a completion from its end (see `Ending`)."""
        tail = completion[-TAIL:].tolist()
        base, i = len(completion) - len(tail), len(tail)
        closers, eos, stop = 0, False, None
        while True:
            while i and self._blank(tail[i - 1]):
                i -= 1
            seq = next((s for s in self.closers if i >= len(s) and tuple(tail[i - len(s) : i]) == s), None)
            if seq is not None:
                closers, stop, i = closers + 1, base + i - 1, i - len(seq)
            elif self.eos is not None and i and tail[i - 1] == self.eos:
                eos, stop, i = True, base + i - 1, i - 1
            else:
                return Ending(closers, eos, stop)

    def add(self, batch: PreferenceBatch) -> None:
        """Count one batch: each row's prompt, each completion's ending, the collator's cut (see the module doc)."""
        for name, (flat, offsets) in {"prompt_ids": (batch.prompt, batch.prompt_offsets), **{
                f"{s}_ids": v for s, v in batch.sides.items()}}.items():  # fmt: skip
            bad = out_of_vocabulary(flat, None, np.zeros(0, dtype=bool), offsets, self.vocab, name)
            if bad is not None:
                raise batch.error(*bad)
        a = self.audit
        a.kind = a.kind or batch.kind
        a.rows, a.dropped = a.rows + batch.dropped + batch.too_long, a.dropped + batch.dropped
        a.too_long += batch.too_long
        limit, keep_start = self.max_length, self.mode == "keep_start" or batch.kind == "unpaired"
        for r in range(len(batch)):
            prompt = batch.prompt_ids(r)
            a.rows += 1
            if limit is not None and len(prompt) >= limit:
                if keep_start:
                    a.dropped += 1  # TRL drops the row before training: no completion token would be left
                    continue
                a.other_dropped += 1
            ends_gen = not self.gen or prompt[-len(self.gen) :].tolist() == self.gen
            a.prompts_ok += ends_gen
            if not ends_gen:
                self._found("prompt-not-prefix", batch, r, None, prompt, None)
            lost = {}
            for side in SIDES[batch.kind]:
                lost[side] = self._side(batch, r, side, prompt, keep_start)
            if batch.kind == "paired":
                a.only_chosen += lost["chosen"] and not lost["rejected"]
                a.only_rejected += lost["rejected"] and not lost["chosen"]
            elif batch.label is not None:
                key = "desirable" if batch.label[r] else "undesirable"
                a.completions[key] += 1
                a.lost[key] += lost["completion"]

    def _side(self, batch: PreferenceBatch, r: int, side: str, prompt: np.ndarray, keep_start: bool) -> bool:
        """One completion counted; whether it is trained without a stop token."""
        a, limit = self.audit, self.max_length
        completion = batch.completion_ids(side, r)
        a.completions[side] += 1
        end = self.ending(completion)
        if end.closers == 0:
            self._found("completion-unclosed" if not end.eos else "closer-replaced", batch, r, side, prompt, completion)
        elif end.closers > 1 or end.eos:
            self._found("closer-doubled", batch, r, side, prompt, completion)
            a.of("closer-doubled").how["eos" if end.eos else "twice"] += 1
        else:
            a.closed_once += 1
        stop_cut = limit is not None and end.stop is not None and len(prompt) + end.stop >= limit
        header_cut = limit is not None and batch.kind == "paired" and len(completion) + len(self.gen) > limit
        if keep_start and stop_cut:
            self._found("truncation-drops-eos", batch, r, side, prompt, completion)
        elif not keep_start and header_cut:
            self._found("reply-header-missing", batch, r, side, prompt, completion)
        elif not keep_start and limit is not None and len(prompt) + len(completion) > limit:
            self._found("prompt-truncated", batch, r, side, prompt, completion)
        a.other_mode += header_cut if keep_start else stop_cut and len(prompt) < limit  # type: ignore[operator]
        lost = end.stop is None or (keep_start and stop_cut)
        a.lost[side] += lost
        return lost

    def _found(
        self, finding: str, batch: PreferenceBatch, r: int, side: str | None, prompt: np.ndarray, completion: Any
    ) -> None:
        f = self.audit.of(finding)
        f.count += 1
        f.sides[side or "prompt"] += 1
        where = batch.where(r)
        if f.last == where:
            return
        f.rows, f.last = f.rows + 1, where
        if len(f.first) < SHOWN:
            f.first.append(where)
            f.kept.append(self.as_trained(prompt, completion))

    def as_trained(self, prompt: np.ndarray, completion: np.ndarray | None) -> dict[str, list[int]]:
        """Prompt + completion as TRL's collator feeds it (cut to max_length), the completion as the labels."""
        done = completion if completion is not None else np.zeros(0, dtype=np.int64)
        ids = np.concatenate([prompt, done]).astype(np.int64)
        labels = np.concatenate([np.full(len(prompt), IGNORE), done]).astype(np.int64)
        if self.max_length is not None:
            cut = slice(None, self.max_length) if self.mode == "keep_start" else slice(-self.max_length, None)
            ids, labels = ids[cut], labels[cut]
        return {"input_ids": ids.tolist(), "labels": labels.tolist()}

    def _blank(self, i: int) -> bool:
        if i not in self._blanks:
            self._blanks[i] = not self.tokenizer.decode([i], skip_special_tokens=False).strip()
        return self._blanks[i]


__all__ = [
    "TAIL",
    "TRL_MAX_LENGTH",
    "Ending",
    "Found",
    "Mode",
    "PreferenceAudit",
    "PreferenceAuditor",
    "generation_prompt_ids",
]
