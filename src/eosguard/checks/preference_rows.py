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
- `reply-header-missing`: with `keep_end`, completions so long that the collator cuts the generation prompt away.

Run as:
    eosguard doctor --tokenizer PATH --prepared dpo_rows/ [--max-length 1024] [--truncation-mode keep_start]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from eosguard.chat.templates import ChatTemplate, TemplateError
from eosguard.checks.report import DoctorReport
from eosguard.data.columns import IGNORE, out_of_vocabulary
from eosguard.data.preference_rows import SIDES, PreferenceBatch

TRL_MAX_LENGTH = 1024  # DPOConfig's and KTOConfig's default max_length (TRL 1.16)
SHOWN = 3  # rows named (and kept for --show) per finding
TAIL = 24  # tokens read from a completion's end
Mode = Literal["keep_start", "keep_end"]
TRL_FIX = {
    "truncation-drops-eos": "TRL: a larger `max_length` (DPOConfig / KTOConfig; default 1024), or rows that fit it: "
    "`eosguard prepare` drops whole earlier turns of a prompt, never a completion",
    "chosen-loses-stop": "TRL: a `max_length` that holds every pair whole (DPOConfig / KTOConfig), or drop the pairs "
    "that do not fit; `eosguard prepare --max-length N` drops whole earlier turns of prompts, never cuts a "
    "completion",
    "prompt-not-prefix": "TRL: conversational records (it renders the prompt with add_generation_prompt=True), with a "
    "template whose generation prompt is a prefix of the rendered reply; plain text: end each prompt with the "
    "generation prompt; `eosguard prepare` writes the generation prompt's own ids",
    "reply-header-missing": "TRL: `truncation_mode='keep_start'` (its default; 'keep_end' is deprecated) with a "
    "`max_length` that holds each completion and its prompt",
}


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
        return ", ".join(f"{n} {side}" for side, n in self.sides.items())


@dataclass
class PreferenceAudit:
    """What `PreferenceAuditor` counted (see the module doc)."""

    kind: str = ""
    rows: int = 0
    dropped: int = 0
    completions: Counter[str] = field(default_factory=Counter)
    closed_once: int = 0
    prompts_ok: int = 0
    lost: Counter[str] = field(default_factory=Counter)  # completions trained without a stop token, per side
    only_chosen: int = 0  # pairs: the chosen completion without a stop token, the rejected one with it
    only_rejected: int = 0
    other_mode: int = 0  # what the other truncation mode would do (keep_end: prompts cut; keep_start: stops cut)
    other_dropped: int = 0  # keep_end: rows keep_start would drop
    found: dict[str, Found] = field(default_factory=dict)

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
        a.rows, a.dropped = a.rows + batch.dropped, a.dropped + batch.dropped
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


def _message(finding: str, a: PreferenceAudit, auditor: PreferenceAuditor) -> str:
    """A finding's message (see the module doc), from the counts."""
    tok, found = auditor.tokenizer, a.found[finding]
    closer, eos = "".join(auditor.template.closers["reply"].sequence), tok.eos_token
    total = sum(a.completions[s] for s in SIDES.get(a.kind, ()))  # type: ignore[call-overload]
    n = f"{found.count} of {total} completions ({found.by_side()})"
    limit = f"max_length={auditor.max_length}"
    if finding == "completion-unclosed":
        glm = auditor.template.closers["reply"].appended  # closed by the next turn's token, which no one appends
        return (
            f"{n} do not end with the template's closing sequence {closer!r} (nor with the eos)"
            + (f": this template writes no end of turn after a last reply ({closer!r} opens the next turn)" * glm)
            + f": trained without a stop token, they teach the model to go on; {_tail(tok, found)}"
        )
    if finding == "closer-replaced":
        return (
            f"{n} end with the tokenizer's eos {eos!r} where the chat template closes replies with {closer!r}: TRL "
            "appends `eos_token` to plain-text completions, and this tokenizer's eos is not the end of turn its "
            "template writes (a base model's): the model learns to end replies with a token its chat format never "
            f"writes there, and is never trained to write {closer!r}"
        )
    if finding == "closer-doubled":
        how = [f"{found.how['twice']} with {closer!r} twice"] if found.how["twice"] else []
        how += [f"{found.how['eos']} with the eos {eos!r} after it"] if found.how["eos"] else []
        return (
            f"{n} are closed twice ({', '.join(how)}): the model is trained on a token after its stop (TRL appends "
            "the tokenizer's eos to a completion unless it already ends with it, DPO and KTO to plain text, ORPO and "
            f"CPO by its last id, so templated text `...{closer}` gets one more; some templates write the eos after a "
            f"last reply themselves, as Phi-3's); {_tail(tok, found)}"
        )
    if finding == "truncation-drops-eos":
        return (
            f"{n} lose their stop token to TRL's collator at {limit} (truncation_mode='keep_start' keeps the first "
            f"{auditor.max_length} tokens of prompt + completion): trained without it"
        )
    if finding == "prompt-not-prefix":
        gen = tok.decode(auditor.gen, skip_special_tokens=False)
        return (
            f"{found.count} of {a.rows - a.dropped} prompts do not end with the generation prompt inference sends "
            f"({gen!r}): their completions are trained after a context the model never sees (TRL cuts a prompt where "
            "its ids and those of prompt + completion diverge; a plain-text prompt must end with it itself); "
            + _prompt_tail(tok, found, len(auditor.gen))
        )
    return (  # reply-header-missing
        f"{n} are longer than {limit} less the generation prompt: truncation_mode='keep_end' cuts the prompt from the "
        "left through its assistant header, so they are trained with no header before them"
    )


def _tail(tok: Any, found: Found, k: int = 4) -> str:
    """What the first completion found ends with, as tokens."""
    labels = [y for y in found.kept[0]["labels"] if y != IGNORE] if found.kept else []
    return f"the first ends with {tok.convert_ids_to_tokens(labels[-k:])}" if labels else "the first is empty"


def _prompt_tail(tok: Any, found: Found, k: int) -> str:
    ids = found.kept[0]["input_ids"] if found.kept else []
    return f"the first ends with {tok.decode(ids[-max(k, 1) :], skip_special_tokens=False)!r}"


def _asymmetry(a: PreferenceAudit) -> str | None:
    """The `chosen-loses-stop` message, where chosen (desirable) completions lose their stop token more often."""
    if a.kind == "paired" and a.only_chosen > a.only_rejected:
        return (
            f"in {a.only_chosen} of {a.rows - a.dropped} pairs the chosen completion is trained without a stop token "
            f"and the rejected one with it (the reverse in {a.only_rejected}): the preference loss raises the "
            "chosen completion against the rejected one, so it teaches the model not to stop"
        )
    good, bad = a.completions["desirable"], a.completions["undesirable"]
    if good and a.lost["desirable"] / good > (a.lost["undesirable"] / bad if bad else 0):
        return (
            f"{a.lost['desirable']} of {good} desirable completions are trained without a stop token, "
            f"{a.lost['undesirable']} of {bad} undesirable ones: KTO raises the desirable ones, so it teaches the "
            "model not to stop"
        )
    return None


def audit_preferences(
    batches: Iterable[PreferenceBatch],
    tokenizer: Any,
    template: ChatTemplate,
    report: DoctorReport,
    *,
    max_length: int | None,
    mode: Mode = "keep_start",
    title: str = "preference rows",
    length_note: str = "",
) -> PreferenceAudit:
    """Audit every batch; add the findings (with TRL's fixes), a step and the facts to `report`. `max_length` None:
    the rows are trained as written (no collator cuts them); `length_note` says where the length came from."""
    auditor = PreferenceAuditor(tokenizer, template, max_length, mode)
    for batch in batches:
        auditor.add(batch)
    a = auditor.audit
    made = [(f, _message(f, a, auditor) + found.where(), found.count) for f, found in a.found.items()]
    asymmetric = _asymmetry(a)
    made += [("chosen-loses-stop", asymmetric, a.only_chosen or a.lost["desirable"])] if asymmetric else []
    for finding, message, count in made:
        report.add(finding, message, count=count).advice = TRL_FIX.get(finding)
    report.facts["preference"] = _facts(a, auditor)
    detail = _detail(a, auditor, length_note)
    if not sum(a.completions[s] for s in SIDES.get(a.kind, ())):  # type: ignore[call-overload]
        report.step(title, None, f"skipped: no completion left to check: {detail}")
    else:
        report.step(title, not any(f.severity == "error" for f in report.findings), detail)
    return a


def _facts(a: PreferenceAudit, auditor: PreferenceAuditor) -> dict[str, Any]:
    return {
        "kind": a.kind,
        "rows": a.rows,
        "dropped_prompt_fills_max_length": a.dropped,
        "completions": dict(a.completions),
        "closed_once": a.closed_once,
        "prompts_ending_with_generation_prompt": a.prompts_ok,
        "without_stop": dict(a.lost),
        "pairs_only_chosen_without_stop": a.only_chosen,
        "pairs_only_rejected_without_stop": a.only_rejected,
        "max_length": auditor.max_length,
        "truncation_mode": auditor.mode,
        **{k: {"count": f.count, "rows": f.rows, "sides": dict(f.sides), "first": f.first} for k, f in a.found.items()},
    }


def _detail(a: PreferenceAudit, auditor: PreferenceAuditor, length_note: str) -> str:
    t, tok = auditor.template, auditor.tokenizer
    closer = "".join(t.closers["reply"].sequence)
    sides = SIDES.get(a.kind, ())  # type: ignore[call-overload]
    total = sum(a.completions[s] for s in sides)
    gen = tok.decode(auditor.gen, skip_special_tokens=False) if auditor.gen else None
    text = (
        f"{a.rows} {a.kind or 'preference'} rows, {total} completions, {a.closed_once} ending with {closer!r} once; "
        + (f"{a.prompts_ok} prompts ending with the generation prompt {gen!r}" if gen else "no generation prompt")
    )
    if auditor.max_length is None:
        return text + (f"; {length_note}" if length_note else "")
    cut = a.found.get("truncation-drops-eos")
    text += f"; TRL's collator at max_length={auditor.max_length}{length_note}, truncation_mode={auditor.mode!r}"
    if a.kind == "unpaired":
        return text + f" (KTO's collator keeps the start): {cut.count if cut else 0} stop tokens cut, {a.dropped} " \
            "rows dropped (the prompt alone fills max_length)"  # fmt: skip
    if auditor.mode == "keep_start":
        return text + (
            f": {cut.count if cut else 0} stop tokens cut, {a.dropped} rows dropped by TRL (the prompt alone fills "
            f"max_length); 'keep_end' (deprecated in TRL 1.16) would keep every stop token and cut the generation "
            f"prompt away before {a.other_mode} completions"
        )
    header = a.found.get("reply-header-missing")
    return text + (
        f": every stop token kept, {header.count if header else 0} completions without their generation prompt; "
        f"'keep_start' (TRL's default) would drop {a.other_dropped} rows (the prompt alone fills max_length) and cut "
        f"{a.other_mode} stop tokens"
    )


__all__ = ["TRL_MAX_LENGTH", "Ending", "PreferenceAuditor", "audit_preferences", "generation_prompt_ids"]
