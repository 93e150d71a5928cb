"""Preference data as each pipeline turns it into rows, audited (`eosguard.checks.preference_rows`): the doctor on
`--data pairs.jsonl` (records) and on `--prepared` folders of preference ids.

- `--collator trl`: TRL's own preprocessing, run for real: `DPOTrainer._prepare_dataset` (pairs) or
  `KTOTrainer._prepare_dataset` (unpaired records) called on a stand-in for the trainer that holds the tokenizer
  (`_tokenizer`) and on TRL's own config (`DPOConfig` / `KTOConfig` with the run's `max_length` and
  `truncation_mode`): the eos it appends, the prompt it cuts, the rows it drops are TRL's, never re-implemented;
- `--collator eosguard`: eosguard's rows (`eosguard.chat.preference.fit_preferences`: each completion through its
  closing sequence once, prompts shortened by whole turns to fit), which the audit must pass: a check that the audit
  agrees with the renderer.

What TRL 1.16 does to the stop token there, read in its source: `_prepare_dataset` appends `tokenizer.eos_token` to
every plain-text completion that does not already end with it (text already templated, `...<|im_end|>\\n`, gets a
second closer; a base tokenizer's `<|endoftext|>` lands where the template closes replies with `<|im_end|>`); messages
get nothing appended and nothing checks that the template closed them; a prompt is cut where its ids and those of
prompt + completion diverge (one warning in the log); rows whose prompt alone fills `max_length` are dropped; the
collator keeps the first `max_length` (default 1024) tokens: a long completion loses its stop token, silently.

Both are then cut as TRL's collator cuts them at `max_length` (TRL's default 1024 unless `--max-length` gives the
run's), the records' own file and line naming each row found.

Run as:
    eosguard doctor --tokenizer PATH --data pairs.jsonl --collator trl --compare eosguard [--max-length 1024]
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import tempfile
import types
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eosguard.base.errors import EosguardError
from eosguard.chat.render import ChatRenderer
from eosguard.chat.templates import ChatTemplate
from eosguard.checks.preference_report import audit_preferences
from eosguard.checks.preference_rows import TRL_MAX_LENGTH, Mode
from eosguard.checks.report import DoctorReport
from eosguard.data.conversations import Message
from eosguard.data.preference_rows import PreferenceBatch, preference_batch, preference_kind, read_preference_rows
from eosguard.data.preferences import Preference

PIPELINES = ("trl", "eosguard")


def holds_preferences(paths: Sequence[str | Path]) -> str | None:
    """What the prepared inputs hold: "ids" (preference rows of ids), "records" (preference records in text or
    messages, as axolotl saves them for `rl:` runs), None (other rows); a mix is an error naming both."""
    kinds = {str(p): preference_kind(p) for p in paths}
    held = {p: "records" if k == "records" else "ids" if k else None for p, k in kinds.items()}
    if len(set(held.values())) > 1:
        names = ", ".join(f"{p} ({'preference ' + v if v else 'other rows'})" for p, v in held.items())
        raise EosguardError(f"the prepared inputs mix kinds of rows: {names}")
    return next(iter(held.values()))


def check_prepared_records(
    paths: Sequence[str | Path],
    tok: Any,
    renderer: ChatRenderer | None,
    collator: str,
    max_length: int | None,
    mode: Mode,
    show: int,
    report: DoctorReport,
) -> None:
    """Preference records a tool saved before TRL tokenizes them (axolotl's `rl:` runs): read as `--data` is, and made
    into rows by TRL's own preprocessing (`collator` must be "trl": these rows are TRL's input, not eosguard's)."""
    from eosguard.data.records import load_preferences

    if collator != "trl":
        raise EosguardError(
            f"{', '.join(map(str, paths))}: preference records (text or messages), not rows of ids: TRL tokenizes them",
            hint="--collator trl (TRL's own preprocessing makes the rows), or give them with --data",
        )
    records, loaded = load_preferences(list(paths))
    report.facts["data"] = loaded.summary()
    check_preference_records(records, tok, renderer, "trl", max_length, mode, show, report)


def _length(max_length: int | None) -> tuple[int, str]:
    if max_length is not None:
        return max_length, ""
    return TRL_MAX_LENGTH, " (TRL's default; --max-length gives the run's)"


def _require_pipeline(collator: str, what: str) -> None:
    if collator not in PIPELINES:
        raise EosguardError(
            f"{what} are trained with TRL's preference collator, not {collator!r}",
            hint="--collator trl (TRL's preprocessing) or eosguard (eosguard's rows); --compare the other",
        )


def check_preference_prepared(
    paths: Sequence[str | Path],
    tok: Any,
    chat: ChatTemplate | None,
    max_length: int | None,
    mode: Mode,
    collator: str,
    show: int,
    report: DoctorReport,
    *,
    collated: bool = True,
) -> None:
    """Preference rows another tool wrote, audited. `collated`: TRL's collator cuts them at `max_length` (False:
    LLaMA-Factory's rows, cut when it tokenized them; its collator pads only)."""
    _require_pipeline(collator, "preference rows")
    title = f"preference rows of {', '.join(map(str, paths))}"
    if chat is None:
        report.step(title, None, "skipped: no end-of-turn token to check them against")
        return
    batches = itertools.chain.from_iterable(read_preference_rows(p) for p in paths)
    length, note = _length(max_length)
    if not collated or any(preference_kind(p) == "pairwise" for p in paths):
        length = None
        note = "rows cut when they were tokenized (LLaMA-Factory at `cutoff_len`, TRL's ORPO / CPO `tokenize_row` at "
        note += "`max_length`): their collators only pad"
    _audit(batches, tok, chat, report, length, mode, title, note, show)


def check_preference_records(
    records: Sequence[Preference],
    tok: Any,
    renderer: ChatRenderer | None,
    collator: str,
    max_length: int | None,
    mode: Mode,
    show: int,
    report: DoctorReport,
) -> None:
    """Preference records turned into rows by `collator`'s pipeline (see the module doc), audited."""
    _require_pipeline(collator, "preference records")
    if renderer is None:
        report.step(f"preference rows ({collator})", None, "skipped: no end-of-turn token to check them against")
        return
    length, note = _length(max_length)
    if collator == "trl":
        batches, title = trl_rows(records, tok, length, mode), "preference rows as TRL prepares them"
    else:
        batches, title = eosguard_rows(records, renderer, length), "preference rows as eosguard renders them"
    _audit(batches, tok, renderer.template, report, length, mode, title, note, show)


def _audit(
    batches: Any, tok: Any, chat: ChatTemplate, report: DoctorReport, length: int | None, mode: Mode, title: str,
    note: str, show: int,
) -> None:  # fmt: skip
    from eosguard.checks.guard import StopTokenChecker
    from eosguard.checks.tokenview import token_views

    audit = audit_preferences(batches, tok, chat, report, max_length=length, mode=mode, title=title, length_note=note)
    checker = StopTokenChecker(tok, chat)
    kept = [row for f in audit.found.values() for row in f.kept][:show]
    report.shown = [
        token_views(tok, {k: [np.asarray(v)] for k, v in row.items()}, 0, set(checker.reply_stops(row["input_ids"])))
        for row in kept
    ]


# -- the pipelines --------------------------------------------------------------------------------------------


def trl_record(record: Preference) -> dict[str, Any]:
    """A record in TRL's dataset format (messages as `apply_chat_template` takes them, or text as written)."""

    def value(x: Any) -> Any:
        if isinstance(x, Message):
            return [x.as_dict()]
        return [m.as_dict() for m in x] if isinstance(x, tuple) else x

    out: dict[str, Any] = {"prompt": value(record.prompt)}
    if record.rejected is None:
        out["completion"], out["label"] = value(record.chosen), record.label
    else:
        out["chosen"], out["rejected"] = value(record.chosen), value(record.rejected)
    if record.tools:
        out["tools"] = json.dumps(list(record.tools))  # TRL reads a JSON string as the list it holds
    return out


def trl_rows(records: Sequence[Preference], tok: Any, max_length: int, mode: Mode) -> list[PreferenceBatch]:
    """The rows TRL's own `_prepare_dataset` makes of the records (see the module doc), one batch per input file,
    each row with its record's line."""
    try:
        from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
    except ImportError:
        raise EosguardError("--collator trl on preference data needs TRL", hint="pip install 'eosguard[trl]'") from None
    import datasets

    paired = all(r.rejected is not None for r in records)
    if not paired and any(r.rejected is not None for r in records):
        raise EosguardError("the records mix pairs and unpaired completions: TRL trains one kind a run")
    if not paired and mode == "keep_end":
        raise EosguardError("KTO's collator keeps the start alone (KTOConfig has no truncation_mode)")
    trainer, config = (DPOTrainer, DPOConfig) if paired else (KTOTrainer, KTOConfig)
    stand_in = types.SimpleNamespace(_tokenizer=tok, calculate_KL=False)  # what _prepare_dataset reads of self
    batches = []
    with tempfile.TemporaryDirectory() as out, _quiet():
        args = config(output_dir=out, max_length=max_length, report_to=[], use_cpu=True, bf16=False,
                      **({"truncation_mode": mode} if paired else {}))  # fmt: skip
        for source, group in itertools.groupby(records, key=lambda r: r.source):
            # a record read from a file keeps its line; one made in memory its place in the list (1-based)
            rows = [{**trl_record(r), "eosguard_line": r.line or k} for k, r in enumerate(group, start=1)]
            try:
                prepared = trainer._prepare_dataset(stand_in, datasets.Dataset.from_list(rows), tok, args, "train")
            except Exception as exc:  # TRL's own failure on these records: its message, with the file
                raise EosguardError(f"{source}: TRL's {trainer.__name__}._prepare_dataset failed: {exc}") from None
            made = prepared.to_list()
            lines = [int(m["eosguard_line"]) for m in made]
            batches.append(
                preference_batch(made, source, lines, "paired" if paired else "unpaired", len(rows) - len(made))
            )
    return batches


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """TRL's preprocessing without its progress bars and its one warning (the audit reports what it warns of)."""
    import datasets

    bars = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()
    logger = logging.getLogger("trl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecations in TRL's config defaults
            yield
    finally:
        logger.setLevel(level)
        if bars:
            datasets.utils.logging.enable_progress_bar()


def eosguard_rows(records: Sequence[Preference], renderer: ChatRenderer, max_length: int) -> Iterator[PreferenceBatch]:
    """eosguard's rows of the records (each completion closed once, prompts shortened by whole turns to fit
    `max_length`), one batch per input file."""
    from eosguard.chat.preference import PreferenceStats, fit_preferences

    for source, group in itertools.groupby(records, key=lambda r: r.source):
        chunk, stats = list(group), PreferenceStats()
        made = list(fit_preferences(chunk, renderer, stats, max_length=max_length))
        lines = [row.line if row.line is not None else i for i, row in enumerate(made)]
        kind = "paired" if chunk[0].rejected is not None else "unpaired"
        yield preference_batch([row.columns() for row in made], source, lines, kind, too_long=stats.dropped_too_long)


__all__ = [
    "check_preference_prepared",
    "check_preference_records",
    "check_prepared_records",
    "eosguard_rows",
    "holds_preferences",
    "trl_record",
    "trl_rows",
]
