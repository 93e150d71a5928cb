"""The doctor on rows another tool wrote: its ids and labels held against the tokenizer's own chat template.

`audit_rows` reads the rows (`eosguard.data.tokenized`), each packed sequence apart, and finds every assistant reply
by the template's assistant header (`ChatTemplate`, as the renderer reads it). A reply ends at the first of: a stop
token of the template (its whole closing sequence must carry labels), the header of a user turn or of another reply,
the end of its sequence. It counts, with the first rows of each:

- `eos-masked`: trained replies whose closing tokens are at -100 (the seed's bug, written to disk);
- `closer-not-a-stop`: trained replies that end, before the next turn, on a token the model does not stop on;
- `truncation-drops-eos`: trained replies cut at the end of their sequence, with no stop token;
- `template-mismatch`: rows with trained tokens and no header of the template at all (trained in one format, served
  in another);
- `reply-header-missing`: trained tokens in a sequence with no assistant header (a prompt cut away, LLaMA-Factory's
  `cutoff_len` keeping the reply);
- `no-trainable-tokens`: rows with nothing trained; `pad-trained`: padding positions trained;
- `prompt-trained`: prompt tokens trained beside the replies (a warning: some train on prompts on purpose).

A reply closed only by the next turn's token (GLM's `<|user|>`, a stop token of its template) is closed there, and
trained when that token is (TRL's `glm4moe_training.jinja` masks it). A row with no header but the control tokens
the template opens turns with (cut inside the system prompt) is its own format, cut. Labels written shifted by one are
read unshifted, and the step says so (`eosguard.data.columns.unshift`).

All on whole batches with numpy: a few passes over every token (the labels, one scan for the headers' first tokens
and the stop tokens), the rest on the sorted positions they give (`eosguard.checks.rowspans`). Only closing sequences
of several tokens are checked one by one. With no label column, a collator builds the labels, as training would.

Run as:
    eosguard doctor --prepared PATH --tokenizer TOKENIZER [--model MODEL_DIR]
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eosguard.base.errors import EosguardError
from eosguard.chat.templates import ChatTemplate
from eosguard.checks.report import DoctorReport
from eosguard.checks.rowspans import (
    in_ranges,
    match,
    next_event,
    positions_of,
    rows_holding,
    sequences,
    turn_marks,
)
from eosguard.data.columns import out_of_vocabulary
from eosguard.data.tokenized import IGNORE, RowBatch

SHOWN = 3  # rows kept per finding, for the report, --show and the label viewer


@dataclass
class Tally:
    """How many of something were found, and where the first few are (`RowBatch.where`) with their rows; `longest`:
    the longest row (in tokens) among those found."""

    count: int = 0
    rows: int = 0
    first: list[str] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    longest: int = 0

    def add(self, batch: RowBatch, per_row: np.ndarray) -> None:
        """per_row: how many were found in each row of the batch."""
        self.count += int(per_row.sum())
        hit = np.flatnonzero(per_row)
        if not len(hit):
            return
        self.rows += len(hit)
        self.longest = max(self.longest, int(np.diff(batch.offsets)[hit].max()))
        for r in hit[: max(0, SHOWN - len(self.first))]:
            self.first.append(batch.where(int(r)))
            self.kept.append(batch.row(int(r)))

    def where(self) -> str:
        return "; first: " + ", ".join(self.first) if self.first else ""


@dataclass
class RowAudit:
    """What `audit_rows` found (see the module doc); `longest`: the longest row read, in tokens; `shifted`: rows whose
    labels were written shifted by one (read unshifted: `eosguard.data.tokenized.unshift`)."""

    rows: int = 0
    sequences: int = 0
    replies: int = 0
    trained: int = 0
    stop_trained: int = 0
    longest: int = 0
    shifted: int = 0
    label_source: str | None = None
    tallies: dict[str, Tally] = field(default_factory=dict)

    def tally(self, name: str) -> Tally:
        return self.tallies.setdefault(name, Tally())


class RowAuditor:
    """Audits batches of rows against one template. stops: the ids the model stops on (default: the template's stop
    tokens and the tokenizer's eos)."""

    def __init__(self, tokenizer: Any, template: ChatTemplate, stops: Collection[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.template = template
        template.require_end_of_turn()
        self.header = list(template.assistant_header_ids)
        self.user = list(template.user_header_ids)
        self.stop_ids = np.array(sorted(set(template.stop_ids)), dtype=np.int64)
        model_stops = set(stops) if stops is not None else {*template.stop_ids, tokenizer.eos_token_id}
        self.model_stops = {i for i in model_stops if i is not None}
        self._model_stops = np.array(sorted(self.model_stops), dtype=np.int64)
        self.closers: dict[int, list[list[int]]] = {}
        for c in template.closers.values():
            seq = [int(tokenizer.convert_tokens_to_ids(t)) for t in c.sequence]
            if len(seq) > 1:
                self.closers.setdefault(c.id, []).append(seq)
        if not self.header:
            raise EosguardError("the chat template's assistant header could not be read: nothing to find replies by")
        self.vocab = len(tokenizer)
        self.marks = np.array(sorted(turn_marks(tokenizer, template)), dtype=np.int64)
        self._scanned = np.array(sorted({self.header[0], *self.user[:1], *self.stop_ids.tolist()}), dtype=np.int64)
        self._blanks: dict[int, bool] = {}
        self.audit = RowAudit()

    def add(self, batch: RowBatch) -> None:
        """Count one batch (its labels built already). Whole-batch passes only where every token counts (the
        labels, the headers' first token, the stop tokens); the rest on the sparse positions they give."""
        a = self.audit
        if batch.labels is None:
            raise EosguardError(f"{batch.source}: no labels, and no collator to build them")
        labelled = batch.labels != IGNORE
        bad = out_of_vocabulary(batch.ids, batch.labels, labelled, batch.offsets, self.vocab)
        if bad is not None:
            raise batch.error(*bad)
        a.label_source = a.label_source or batch.label_source
        a.shifted += batch.shifted
        ids, labels, offsets = batch.ids, batch.labels, batch.offsets
        n, rows = len(ids), len(batch)
        a.rows += rows
        if n == 0:
            return
        a.longest = max(a.longest, int(np.diff(offsets).max()))
        seq_first = sequences(batch)
        seq_end = np.append(seq_first[1:], n)  # exclusive
        a.sequences += len(seq_first)
        seq_of = lambda at: np.searchsorted(seq_first, at, side="right") - 1  # noqa: E731
        row_of = lambda at: np.searchsorted(offsets, at, side="right") - 1  # noqa: E731
        att = batch.attention
        pad = (att == 0) if att is not None and att.min(initial=1) == 0 else None
        trained = np.flatnonzero(labelled & ~pad if pad is not None else labelled)  # positions, sorted

        # One scan for the tokens everything is found by: the headers' first tokens and the stop tokens.
        found = positions_of(ids, self._scanned)
        token = ids[found]
        heads = match(ids, seq_first, self.header, found[token == self.header[0]])
        users = match(ids, seq_first, self.user, found[token == self.user[0]]) if self.user else found[:0]
        stops = found[np.isin(token, self.stop_ids)]
        begin = heads + len(self.header)
        inside = begin < n
        heads, begin = heads[inside], begin[inside]
        end_of_seq = seq_end[seq_of(begin)]
        # A reply ends at its stop token, else at the next turn's header or its sequence's end. A template that
        # closes a reply with the next turn's opening token (GLM's <|user|>, a stop token of the template) closes it
        # there: a stop token before the next header is the reply's closing, whatever turn it also opens.
        nxt = np.minimum.reduce([next_event(users, begin, n), next_event(heads, begin, n), end_of_seq])
        stop_at = next_event(stops, begin, n)
        closed = stop_at < nxt
        end = np.where(closed, stop_at, nxt)  # the stop token, or where the reply stops without one (exclusive)
        first_trained = np.searchsorted(trained, begin)  # each reply's first trained token, if before its end
        is_trained = first_trained < len(trained)
        is_trained[is_trained] = trained[first_trained[is_trained]] < end[is_trained]
        a.replies += len(begin)
        a.trained += int(is_trained.sum())

        closing_ok = self._closing_trained(ids, labels, begin, end, closed & is_trained)
        a.stop_trained += int((closed & is_trained & closing_ok).sum())
        begin_row = row_of(begin)
        per_row = lambda mask: np.bincount(begin_row[mask], minlength=rows)  # noqa: E731
        a.tally("eos-masked").add(batch, per_row(closed & is_trained & ~closing_ok))
        cut = ~closed & is_trained & (end == end_of_seq)
        # Trained, not cut, not closed by a stop token: the last trained token is what the model learns to end on.
        ended = ~closed & is_trained & ~cut
        last = trained[np.searchsorted(trained, end[ended]) - 1]
        at_end = ids[np.minimum(end, n - 1)]  # the stop token where a reply is closed (`end` may be n otherwise)
        wrong = closed & is_trained & closing_ok & ~np.isin(at_end, self._model_stops)  # a stop of the template only
        wrong[ended] = ~np.isin(ids[last], self._model_stops)
        a.tally("closer-not-a-stop").add(batch, per_row(wrong))

        # Tokens trained outside every reply (each reply spans its header's end through its stop token), except the
        # whitespace a template writes after a stop token, before the next turn (LLaMA-Factory trains its "\n").
        span_end = np.where(closed, end + 1, end)
        outside = trained[:0]
        if (np.searchsorted(trained, span_end) - first_trained).sum() < len(trained):  # some trained token lies outside
            outside = trained[~in_ranges(trained, begin, span_end)]
        after_stop = in_ranges(outside, end[closed] + 1, nxt[closed])
        if after_stop.any():
            after_stop[after_stop] = self._blank(ids[outside[after_stop]])
            outside = outside[~after_stop]
        seq_has_head = np.zeros(len(seq_first), dtype=bool)
        seq_has_head[seq_of(heads)] = True
        orphan = outside[~seq_has_head[seq_of(outside)]]
        trained_per_row = np.diff(np.searchsorted(trained, offsets))
        # A row in the template's format holds one of its headers or, if it trains something and has none, one of the
        # control tokens it opens turns with (a row cut inside the system prompt keeps `<|im_start|>system`); a row
        # with neither was written in another format.
        holding = lambda at: np.bincount(row_of(at), minlength=rows) > 0  # noqa: E731  rows holding these positions
        own = holding(np.concatenate([heads, users]))
        unsure = (trained_per_row > 0) & ~own
        own[unsure] = rows_holding(batch, self.marks, unsure)[unsure]
        mismatch_row = (trained_per_row > 0) & ~own
        a.tally("template-mismatch").add(batch, mismatch_row)
        a.tally("reply-header-missing").add(batch, holding(orphan) & ~mismatch_row)
        # Trained tokens with no header that run to their sequence's end with no stop token: the reply was cut too.
        starts = orphan[np.append(True, seq_of(orphan[1:]) != seq_of(orphan[:-1]))] if len(orphan) else orphan
        cut_orphan = starts[next_event(stops, starts, n) >= seq_end[seq_of(starts)]]
        a.tally("truncation-drops-eos").add(
            batch, per_row(cut) + np.bincount(row_of(cut_orphan), minlength=rows) * ~mismatch_row
        )
        a.tally("prompt-trained").add(batch, holding(outside[seq_has_head[seq_of(outside)]]))
        a.tally("no-trainable-tokens").add(batch, trained_per_row == 0)
        a.tally("pad-trained").add(batch, holding(np.flatnonzero(labelled & pad) if pad is not None else trained[:0]))

    def _closing_trained(
        self, ids: np.ndarray, labels: np.ndarray, begin: np.ndarray, end: np.ndarray, closed: np.ndarray
    ) -> np.ndarray:
        """For each closed reply: whether its whole closing sequence carries its own ids as labels."""
        ok = np.zeros(len(begin), dtype=bool)
        ok[closed] = labels[end[closed]] == ids[end[closed]]  # closed: end < n
        several = ok & np.isin(ids[np.minimum(end, len(ids) - 1)], list(self.closers))
        for i in np.flatnonzero(several):  # closing sequences of several tokens, one by one
            for seq in self.closers[int(ids[end[i]])]:
                lo = int(end[i]) - len(seq) + 1
                if lo >= begin[i] and ids[lo : end[i] + 1].tolist() == seq:
                    ok[i] = bool((labels[lo : end[i] + 1] == ids[lo : end[i] + 1]).all())
                    break
        return ok

    def _blank(self, ids: np.ndarray) -> np.ndarray:
        """Whether each token is whitespace alone (each id decoded once)."""
        for i in set(ids.tolist()) - self._blanks.keys():
            self._blanks[i] = not self.tokenizer.decode([i], skip_special_tokens=False).strip()
        return np.array([self._blanks[i] for i in ids.tolist()], dtype=bool)


MESSAGES: dict[str, Callable[[RowAudit, Tally, str], str]] = {
    "eos-masked": lambda a, t, stops: (
        f"{t.count} of {a.trained} trained replies, in {t.rows} rows, leave their closing {stops} token(s) at label "
        "-100: the model never learns to stop"
    ),
    "closer-not-a-stop": lambda a, t, stops: (
        f"{t.count} trained replies, in {t.rows} rows, end on a token the model does not stop on (it stops on "
        f"{stops}): it learns to write that token and go on"
    ),
    "truncation-drops-eos": lambda a, t, stops: (
        f"{t.count} trained replies, in {t.rows} rows, are cut at the end of their sequence with no stop token"
        + _cutoff(a, t)
    ),
    "template-mismatch": lambda a, t, stops: (
        f"{t.rows} of {a.rows} rows hold trained tokens and none of the chat template's turn headers: they were "
        "trained in another format than the one this tokenizer serves"
    ),
    "reply-header-missing": lambda a, t, stops: (
        f"{t.rows} rows train tokens in a sequence with no assistant header: the prompt was cut (a cutoff that keeps "
        "the reply) or the row is not a reply at all; the model learns to write them after a user turn" + _cutoff(a, t)
    ),
    "no-trainable-tokens": lambda a, t, stops: f"{t.rows} of {a.rows} rows have nothing trained",
    "pad-trained": lambda a, t, stops: f"{t.rows} rows train padding positions (attention mask 0)",
    "prompt-trained": lambda a, t, stops: (
        f"{t.rows} rows train prompt tokens beside their replies (system, user or header text)"
    ),
}


def _cutoff(a: RowAudit, t: Tally) -> str:
    """The length of the rows found, and whether it is the cutoff every row was cut to (the longest row read)."""
    if t.longest < a.longest:
        return f"; the longest of those rows holds {t.longest} tokens"
    return (
        f"; the longest of those rows holds {t.longest} tokens, as the longest row read does: rows cut at "
        f"{t.longest} tokens (raise the cutoff: LLaMA-Factory's `cutoff_len`, axolotl's `sequence_len`, the "
        "trainer's `max_length`)"
    )


def _beside(tokenizer: Any, template: ChatTemplate, ids: list[int], width: int = 160) -> str:
    """A row's text beside what the template writes for a short chat: the two formats, side by side."""
    row = tokenizer.decode(ids, skip_special_tokens=False)
    chat = template.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    return f"the row reads {row[:width]!r}, the template writes {chat[-width:]!r}"


def audit_rows(
    batches: Iterable[RowBatch],
    tokenizer: Any,
    template: ChatTemplate,
    report: DoctorReport,
    *,
    stops: Collection[int] | None = None,
    labeller: Callable[[RowBatch], RowBatch] | None = None,
    title: str = "prepared rows",
) -> RowAudit:
    """Audit every batch, add the findings and a step to `report`; `labeller` builds the labels of batches without
    any (a collator's)."""
    auditor = RowAuditor(tokenizer, template, stops)
    for batch in batches:
        if batch.labels is None:
            if labeller is None:
                raise EosguardError(
                    f"{batch.source}: no `labels`, `assistant_masks` or `completion_mask` column",
                    hint="the collator that builds them in training: --collator transformers | trl | MODULE:FACTORY",
                )
            batch = labeller(batch)
        auditor.add(batch)
    a = auditor.audit
    names = ", ".join(tokenizer.convert_ids_to_tokens(sorted(auditor.model_stops)))
    closing = "/".join(template.stop_tokens)
    for finding, message in MESSAGES.items():
        t = a.tallies.get(finding)
        if t is None or not t.rows:
            continue
        stops_named = closing if finding == "eos-masked" else names
        text = message(a, t, stops_named) + t.where()
        if finding == "template-mismatch":
            text += "; " + _beside(tokenizer, template, t.kept[0]["input_ids"])
        report.add(finding, text, count=t.count if t.count else t.rows)
    report.facts["prepared"] = {
        "rows": a.rows,
        "sequences": a.sequences,
        "replies": a.replies,
        "trained_replies": a.trained,
        "stop_trained": a.stop_trained,
        "labels_from": a.label_source,
        "longest_row": a.longest,
        "shifted_rows": a.shifted,
        **{k: {"count": t.count, "rows": t.rows, "first": t.first} for k, t in a.tallies.items() if t.rows},
    }
    errors = [f for f in report.findings if f.severity == "error" and f.id in MESSAGES]
    detail = (
        f"{a.rows} rows ({a.sequences} sequences), {a.replies} assistant replies, {a.stop_trained}/{a.trained} "
        f"trained replies closed by a trained stop token; labels from {a.label_source}"
    )
    if a.shifted:
        detail += (
            f"; in {a.shifted} rows the labels are shifted by one (labels[i] = input_ids[i + 1]), read here unshifted: "
            "a trainer that shifts them again (transformers' models do) trains each token on the one after the next"
        )
    if a.replies == 0 and not errors:
        report.step(title, None, f"skipped: found no assistant reply in {a.rows} rows")
    else:
        report.step(title, not errors, detail)
    return a


def check_prepared(
    path: str | Path | Sequence[str | Path],
    tok: Any,
    chat: ChatTemplate | None,
    stops: Collection[int] | None,
    collator: str,
    show: int,
    report: DoctorReport,
) -> None:
    """The doctor's step on rows another tool wrote: audited against the template (`audit_rows`), `stops` the ids
    the model stops on (its generation config's, when a model folder is given), `show` of the rows found shown."""
    import itertools

    from eosguard.checks.guard import StopTokenChecker
    from eosguard.checks.pipelines import collator_labels
    from eosguard.checks.tokenview import token_views
    from eosguard.data.tokenized import read_rows

    paths = [path] if isinstance(path, str | Path) else list(path)

    if chat is None:
        report.step("prepared rows", None, "skipped: no end-of-turn token to check them against")
        return
    audit = audit_rows(
        itertools.chain.from_iterable(read_rows(p) for p in paths),
        tok,
        chat,
        report,
        stops=stops,
        labeller=None if collator == "eosguard" else collator_labels(collator, tok),
        title=f"rows of {', '.join(map(str, paths))}",
    )
    checker = StopTokenChecker(tok, chat)
    kept = [row for t in audit.tallies.values() for row in t.kept if t.rows][:show]
    report.shown = [
        token_views(tok, {k: [np.asarray(v)] for k, v in row.items()}, 0, set(checker.reply_stops(row["input_ids"])))
        for row in kept
    ]


__all__ = ["RowAudit", "RowAuditor", "audit_rows", "check_prepared"]
