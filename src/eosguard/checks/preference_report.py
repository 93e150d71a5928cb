"""What the preference audit's counts say (`eosguard.checks.preference_rows` counts them): each finding's message with
its first rows, TRL's fix in TRL's keys, the `chosen-loses-stop` asymmetry, the step's detail and the facts.

    eosguard doctor --tokenizer PATH --prepared dpo_rows/ [--max-length 1024] [--truncation-mode keep_start]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eosguard.chat.templates import ChatTemplate
from eosguard.checks.findings import FINDINGS
from eosguard.checks.preference_rows import Found, Mode, PreferenceAudit, PreferenceAuditor
from eosguard.checks.report import DoctorReport
from eosguard.data.columns import IGNORE
from eosguard.data.preference_rows import SIDES, PreferenceBatch

TRL_FIX = {
    "truncation-drops-eos": "TRL: a larger `max_length` (DPOConfig / KTOConfig; default 1024), or rows that fit it: "
    "`eosguard prepare` drops whole earlier turns of a prompt, never a completion",
    "chosen-loses-stop": "TRL: a `max_length` that holds every pair (KTO: every completion) whole (DPOConfig / "
    "KTOConfig), or drop the rows that do not fit; `eosguard prepare --max-length N` drops whole earlier turns of "
    "prompts, never cuts a completion",
    "prompt-not-prefix": "TRL: conversational records (it renders the prompt with add_generation_prompt=True), with a "
    "template whose generation prompt is a prefix of the rendered reply; plain text: end each prompt with the "
    "generation prompt; `eosguard prepare` writes the generation prompt's own ids",
    "prompt-truncated": "TRL: `truncation_mode='keep_start'` (its default; 'keep_end' is deprecated) with a "
    "`max_length` that holds each pair; `eosguard prepare` drops whole earlier turns of a prompt, never part of one",
    "reply-header-missing": "TRL: `truncation_mode='keep_start'` (its default; 'keep_end' is deprecated) with a "
    "`max_length` that holds each completion and its prompt",
}


def _message(finding: str, a: PreferenceAudit, auditor: PreferenceAuditor) -> str:
    """A finding's message (see the module doc), from the counts."""
    tok, found = auditor.tokenizer, a.found[finding]
    closer, eos = "".join(auditor.template.closers["reply"].sequence), tok.eos_token
    total = sum(a.completions[s] for s in SIDES.get(a.kind, ()))  # type: ignore[call-overload]
    sides = found.by_side()
    n = f"{found.count} of {total} completions" + (f" ({sides})" if sides else "")
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
            f"{found.count} of {a.kept} prompts do not end with the generation prompt inference sends "
            f"({gen!r}): their completions are trained after a context the model never sees (TRL cuts a prompt where "
            "its ids and those of prompt + completion diverge; a plain-text prompt must end with it itself); "
            + _prompt_tail(tok, found, len(auditor.gen))
        )
    if finding == "prompt-truncated":
        return (
            f"{n} are trained after a prompt cut at its start: truncation_mode='keep_end' keeps the last {limit} "
            "tokens of prompt + completion, so the system message and earlier turns go first; the model learns "
            "these replies for prompts no one sends"
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
            f"in {a.only_chosen} of {a.kept} pairs the chosen completion is trained without a stop token "
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
        fix = TRL_FIX.get(finding)
        if finding == "chosen-loses-stop" and "truncation-drops-eos" not in a.found:  # lost as written, not cut
            fix = (
                "TRL: close each completion with the template's closing sequence: "
                + FINDINGS["completion-unclosed"].fix
            )
        report.add(finding, message, count=count).advice = fix
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
        "dropped_too_long_to_hold_whole": a.too_long,
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
    if a.too_long:
        text += f"; {a.too_long} records dropped by eosguard (too long to hold whole with no earlier turn left to drop)"
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


__all__ = ["TRL_FIX", "audit_preferences"]
