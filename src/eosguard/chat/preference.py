"""Preference records to the rows TRL's preference trainers take (`prompt_ids`, `chosen_ids`, `rejected_ids`; KTO:
`prompt_ids`, `completion_ids`, `label`), from the one renderer (`eosguard.chat.render.ChatRenderer`).

Each completion is rendered as the last reply of its conversation, exactly as SFT renders a trained reply: after the
generation prompt inference sends (its template arguments, its tools), through the closing sequence the template
writes after it (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, gpt-oss's `<|return|>` or a tool call's `<|call|>`),
once, and nothing after it. `prompt_ids` is everything before the reply: the generation prompt's own ids (the renderer
splits there, so it is a token prefix of prompt + completion; the pair's two renderings must agree on it, or the record
is refused by name). A reasoning block the prompt opens and a reply does not fill is closed inside the completion, as
in SFT (`treated`).

Plain-text records are already formatted: the prompt is read as written (control-token text is the template's
tokens), and each completion is closed with the template's closing sequence exactly once: a completion that already
ends with it (TRL's `...<|im_end|>\\n`) keeps one, one that ends with it twice (the eos TRL appends to templated
text) or with the tokenizer's eos in its place is normalised, and each case is counted (`PreferenceStats`).

Over length (`fit_preferences`): neither a closing sequence nor a turn is ever cut. `truncate` drops whole earlier
turns of a conversational prompt (the system message kept, then the earliest exchanges first) until the pair fits,
so the prompt is still one inference could send; a record that does not fit with its last user turn alone, or a
plain-text one, is dropped, counted. (Cutting the prompt's tokens from the left instead, as TRL's `keep_end` does,
trains replies after prompts cut inside a turn, which no one sends: the doctor's `prompt-truncated`.) `drop` drops
the record; `error` stops with its file and line.

Run as:
    eosguard prepare pairs.jsonl --tokenizer PATH --out prepared/
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from eosguard.base.errors import DataError
from eosguard.chat.markers import SPLIT
from eosguard.chat.render import ChatRenderer
from eosguard.chat.settings import OverLength
from eosguard.chat.templates import TemplateError
from eosguard.data.conversations import Message
from eosguard.data.preferences import Preference


@dataclass
class PreferenceRow:
    """One record as ids: the prompt, and each completion (chosen, rejected; or the one completion) ending with its
    closing sequence; `label` for an unpaired record; where it came from."""

    prompt_ids: np.ndarray
    completions: list[np.ndarray]
    label: bool | None = None
    source: str = "<memory>"
    line: int | None = None
    truncated: bool = False

    def columns(self) -> dict[str, object]:
        """The row as TRL's collators take it."""
        out: dict[str, object] = {"prompt_ids": self.prompt_ids.tolist()}
        if self.label is None:
            out["chosen_ids"], out["rejected_ids"] = (c.tolist() for c in self.completions)
        else:
            out["completion_ids"], out["label"] = self.completions[0].tolist(), self.label
        return out


@dataclass
class PreferenceStats:
    """What happened to each record: rows written, prompts shortened by whole earlier turns, records dropped as too
    long; for
    plain text, how each completion ended (`closer_added`: no closing sequence, `closer_kept`: one, `closer_doubled`:
    two or more, `closer_replaced`: the tokenizer's eos where the template closes with its own); `treated`: replies
    trained after a reasoning block the prompt opened, closed empty."""

    records: int = 0
    rows: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    closer_added: int = 0
    closer_kept: int = 0
    closer_doubled: int = 0
    closer_replaced: int = 0
    treated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def summary(self) -> str:
        text = (
            f"{self.records} records -> {self.rows} rows ({self.truncated} prompts shortened by whole earlier turns, "
            f"{self.dropped_too_long} dropped as too long); {self.prompt_tokens} prompt and {self.completion_tokens} "
            "completion tokens, every completion ending with its closing sequence once"
        )
        plain = {
            "added to": self.closer_added,
            "kept in": self.closer_kept,
            "written twice or more, kept once, in": self.closer_doubled,
            "put in place of the tokenizer's eos in": self.closer_replaced,
        }
        if any(plain.values()):
            text += "; plain text: the closing sequence " + ", ".join(f"{k} {n}" for k, n in plain.items() if n)
            text += " completions"
        if self.treated:
            text += f"; {self.treated} completions trained after a reasoning block the prompt opens, closed empty"
        return text

    def __iadd__(self, other: PreferenceStats) -> PreferenceStats:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)
        return self


def preference_renderer(renderer: ChatRenderer) -> ChatRenderer:
    """A renderer over the same template that trains the last reply alone (a preference's completion)."""
    if renderer.train_on == "last":
        return renderer
    return ChatRenderer(renderer.tokenizer, template=renderer.template, train_on="last", tools=renderer.tools)


def render_preferences(
    renderer: ChatRenderer, records: Sequence[Preference], stats: PreferenceStats | None = None
) -> list[PreferenceRow]:
    """Each record as a `PreferenceRow` (see the module doc); TemplateError naming the record's file and line."""
    stats = stats if stats is not None else PreferenceStats()
    renderer = preference_renderer(renderer)
    chat = [r for r in records if r.conversational]
    flat = [r.conversation(c) for r in chat for c in r.completions if isinstance(c, Message)]
    rendered = iter(renderer.render_batch(flat))
    rows = []
    for record in records:
        if record.conversational:
            sides = [_split(next(rendered)[-1], record, stats) for _ in record.completions]
        else:
            sides = [_plain(renderer, record.prompt, c, stats) for c in record.completions]  # type: ignore[arg-type]
        prompt = sides[0][0]
        if any(len(p) != len(prompt) or (p != prompt).any() for p, _ in sides[1:]):
            raise _at(record, "the chat template renders this record's prompt differently after each completion")
        rows.append(PreferenceRow(prompt, [c for _, c in sides], record.label, record.source, record.line))
    stats.records += len(records)
    return rows


def _split(example: object, record: Preference, stats: PreferenceStats) -> tuple[np.ndarray, np.ndarray]:
    """(prompt ids, completion ids) of the example that trains the record's completion: the completion is the one
    trained span, from its first token through its stop token."""
    ids, mask = example.input_ids, example.mask  # type: ignore[attr-defined]
    trained = np.flatnonzero(mask)
    if not len(trained) or not example.closings:  # type: ignore[attr-defined]
        raise _at(record, "the completion has no trained token: the template drops it")
    start, stop = int(trained[0]), int(example.closings[-1][1])  # type: ignore[attr-defined]
    if stop != int(trained[-1]) or not mask[start : stop + 1].all():
        raise _at(record, "the completion is not one span through its closing sequence")
    stats.treated += example.treated  # type: ignore[attr-defined]
    return ids[:start], ids[start : stop + 1]


def _plain(renderer: ChatRenderer, prompt: str, completion: str, stats: PreferenceStats) -> tuple[np.ndarray, ...]:
    """A plain-text completion closed with the template's closing sequence exactly once (see the module doc)."""
    t = renderer.template
    closer = t.closers["reply"]
    seq = "".join(t.markers.marker_of[x] for x in closer.sequence)
    eos = renderer.tokenizer.eos_token
    other = t.markers.marker_of.get(eos, "") if eos and eos not in closer.sequence else ""
    text, closed, replaced = t.mark(completion), 0, False
    while True:
        bare = text.rstrip()  # what the template writes after a closer (`\n`) goes with it
        if bare.endswith(seq):
            text, closed = bare[: -len(seq)], closed + 1
        elif other and bare.endswith(other):
            text, replaced = bare[: -len(other)], True
        else:
            break
    stats.closer_replaced += replaced
    stats.closer_added += not closed and not replaced
    stats.closer_kept += closed == 1 and not replaced
    stats.closer_doubled += closed > 1
    marked = t.mark(prompt)
    prompt_ids, full = t.encode_marked([marked, marked + SPLIT + text + seq])
    return np.asarray(prompt_ids, dtype=np.int64), np.asarray(full[len(prompt_ids) :], dtype=np.int64)


def _at(record: Preference, message: str) -> TemplateError:
    where = f"{record.source}:{record.line}: " if record.line is not None else ""
    return TemplateError(where + message)


def fit_preference(row: PreferenceRow, max_length: int, policy: OverLength) -> PreferenceRow | None:
    """The row when its prompt and longest completion fit `max_length`, else None (`fit_preferences` drops it, or
    shortens its prompt by whole turns); `error` raises DataError with the record's file and line."""
    longest = max(len(c) for c in row.completions)
    if len(row.prompt_ids) + longest <= max_length:
        return row
    if policy == "error":
        raise DataError(
            f"{len(row.prompt_ids)} prompt tokens and a {longest}-token completion: longer than "
            f"max_length={max_length}",
            path=row.source,
            line=row.line,
            hint="over_length: truncate (drops earlier turns of the prompt, never a completion) or drop",
        )
    return None


def earlier_turns_dropped(record: Preference) -> Preference | None:
    """The record with its prompt's earliest exchange dropped (a leading system message kept): its first user turn
    and everything up to the next one; None when the prompt holds one user turn (or is plain text)."""
    if not record.conversational:
        return None
    prompt = list(record.prompt)
    head = prompt[:1] if prompt and prompt[0].role == "system" else []
    body = prompt[len(head) :]
    users = [i for i, m in enumerate(body) if m.role == "user"]
    if len(users) < 2:
        return None
    return replace(record, prompt=(*head, *body[users[1] :]))


def fit_preferences(
    records: Sequence[Preference],
    renderer: ChatRenderer,
    stats: PreferenceStats,
    *,
    max_length: int,
    over_length: OverLength = "truncate",
    batch_size: int = 1000,
) -> Iterator[PreferenceRow]:
    """Render and fit each record (see the module doc), counting every outcome into `stats`; the rows kept, in
    order."""
    for b in range(0, len(records), batch_size):
        chunk = records[b : b + batch_size]
        for record, row in zip(chunk, render_preferences(renderer, chunk, stats), strict=True):
            fitted = fit_preference(row, max_length, over_length)
            shorter = earlier_turns_dropped(record) if over_length == "truncate" else None
            while fitted is None and shorter is not None:
                (row,) = render_preferences(renderer, [shorter], PreferenceStats())  # the record is counted once
                fitted = fit_preference(row, max_length, over_length)
                fitted = replace(fitted, truncated=True) if fitted is not None else None
                shorter = earlier_turns_dropped(shorter)
            if fitted is None:
                stats.dropped_too_long += 1
                continue
            stats.rows += 1
            stats.truncated += fitted.truncated
            stats.prompt_tokens += len(fitted.prompt_ids)
            stats.completion_tokens += sum(len(c) for c in fitted.completions)
            yield fitted


__all__ = [
    "PreferenceRow",
    "PreferenceStats",
    "earlier_turns_dropped",
    "fit_preference",
    "fit_preferences",
    "preference_renderer",
    "render_preferences",
]
