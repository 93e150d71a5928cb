"""axolotl's and LLaMA-Factory's preference runs, read for what each does to the stop token (`doctor --config`).

Read in their source (axolotl 0.19.0, LLaMA-Factory 0.9.5) and in TRL 1.16's (eosguard's venv):

- axolotl (`core/builders/rl.py`, `prompt_strategies/dpo/`, `prompt_strategies/orpo/`, `utils/data/rl.py`):
  `rl: dpo | ipo` train on TRL's `DPOTrainer`, `kto` on its `KTOTrainer`, `orpo` on TRL's experimental
  `ORPOTrainer`, `simpo` on its `CPOTrainer` (`loss_type: simpo`), with `max_length = sequence_len` (default 512).
  Each dataset `type` writes text: `chat_template.*` renders the template and keeps each completion through its
  closer (`.rstrip()`), `chatml.*` / `llama3.*` append `<|im_end|>` / `<|eot_id|>`; ORPO's `chat_template.argilla`
  keeps what the template writes after the closer (ChatML's newline). TRL then appends the tokenizer's eos to each
  completion unless it already ends with it (DPO, KTO: the text; ORPO, CPO: its last id): where axolotl's eos
  (`special_tokens.eos_token`, else the base model's) is not the text's last token, every completion is closed twice.
  `excess_length_strategy: truncate` cuts chosen and rejected text to `sequence_len` less the prompt, keeping the
  start: the closer goes, TRL appends the eos to the cut text and its collator (at `sequence_len`) cuts it again;
  `drop` (the default) drops such pairs. axolotl 0.19.0 pins trl 1.9.0, whose source is not read here: the TRL
  rules stated are 1.16's.
- LLaMA-Factory (`data/processor/pairwise.py`, `data/processor/feedback.py`, `train/dpo/trainer.py`): its template
  writes each completion through its stop word once (an `efficient_eos` template: the eos after it), and nothing is
  appended later (`CustomDPOTrainer` and `CustomKTOTrainer` call `Trainer.__init__`, skipping TRL's preprocessing);
  `pref_loss: sigmoid | orpo | simpo` all read the same rows' labels. `cutoff_len` (default 2048): `infer_seqlen`
  cuts the prompt and both completions to one target length keeping their start, so a chosen completion longer than
  its rejected one loses its stop word where the rejected one keeps it; its rows (`tokenized_path`) say whether any
  does.

Where the run's rows exist they are audited (axolotl: its saved text records through TRL's own preprocessing;
LLaMA-Factory: its pairwise rows), and the findings say what the config alone predicts only where they do not.

Run as:
    eosguard doctor --config dpo.yaml [--tokenizer PATH]
"""

from __future__ import annotations

from typing import Any

from eosguard.chat.templates import TemplateError, template_for
from eosguard.checks.config_files import TrainingConfig
from eosguard.checks.report import DoctorReport

AXOLOTL_RL = {
    "dpo": "TRL's DPOTrainer",
    "ipo": "TRL's DPOTrainer (loss_type ipo)",
    "kto": "TRL's KTOTrainer",
    "orpo": "TRL's experimental ORPOTrainer",
    "simpo": "TRL's experimental CPOTrainer (loss_type simpo)",
}
AXOLOTL_SEQUENCE_LEN = 512  # axolotl's default `sequence_len` (utils/schemas/config.py), TRL's max_length for `rl:`
LLAMAFACTORY_STAGES = {"dpo", "kto"}
FIXES: dict[str, dict[str, str]] = {
    "axolotl": {
        "closer-doubled": "axolotl: `special_tokens: {eos_token: END}` with END the template's end of turn (TRL then "
        "finds each completion closed and appends nothing)",
        "closer-replaced": "axolotl: `special_tokens: {eos_token: END}` with END the template's end of turn, and a "
        "dataset `type` that writes it (`chat_template.default`)",
        "completion-unclosed": "axolotl: a dataset `type` that writes the template's end of turn after each "
        "completion (`chat_template.default`)",
        "truncation-drops-eos": "axolotl: `excess_length_strategy: drop` (its default), or a larger `sequence_len`",
        "chosen-loses-stop": "axolotl: `excess_length_strategy: drop` (its default), or a larger `sequence_len`",
        "prompt-not-prefix": "axolotl: a dataset `type` whose prompt ends with the template's generation prompt "
        "(`chat_template.default` renders it with add_generation_prompt=True)",
    },
    "llamafactory": {
        "completion-unclosed": "LLaMA-Factory: a larger `cutoff_len` (`infer_seqlen` cuts chosen and rejected to one "
        "target length, keeping their start), or drop the pairs longer than it",
        "chosen-loses-stop": "LLaMA-Factory: a larger `cutoff_len` (`infer_seqlen` cuts chosen and rejected to one "
        "target length, keeping their start), or drop the pairs longer than it",
        "prompt-not-prefix": "LLaMA-Factory: a larger `cutoff_len` (`infer_seqlen` cuts the prompt's end, its "
        "assistant header, when the prompt is long)",
    },
}


def preference_run(cfg: TrainingConfig) -> str | None:
    """The preference method a config trains with (axolotl `rl:`, LLaMA-Factory `stage:`), or None."""
    if cfg.framework == "axolotl":
        rl = str(cfg.get("rl") or "").lower()
        return rl if rl in AXOLOTL_RL else None
    stage = str(cfg.get("stage") or "").lower()
    return stage if stage in LLAMAFACTORY_STAGES else None


def rows_length(cfg: TrainingConfig) -> int | None:
    """What TRL's collator cuts the run's rows to: axolotl's `sequence_len` (TRL's `max_length` for `rl:` runs);
    None for LLaMA-Factory (its collator only pads: `cutoff_len` was applied when it tokenized)."""
    if cfg.framework == "axolotl" and preference_run(cfg):
        return int(cfg.get("sequence_len") or AXOLOTL_SEQUENCE_LEN)
    return None


def check_preference_config(cfg: TrainingConfig, tok: Any, report: DoctorReport) -> None:
    """The config's preference settings (see the module doc), as a step with its findings; nothing for SFT runs.
    `tok`: the tokenizer as the framework sets it up (None: not local)."""
    method = preference_run(cfg)
    if method is None:
        return
    audited = "preference" in report.facts  # the run's rows were audited above: their findings stand for these
    if cfg.framework == "axolotl":
        notes = _axolotl(cfg, method, tok, report, audited)
    else:
        notes = _llamafactory(cfg, method, audited)
    errors = [f for f in report.findings if f.severity == "error" and str(cfg.path) in f.message]
    report.step(f"{cfg.framework} preference run ({method})", not errors, "; ".join(notes))


def _axolotl(cfg: TrainingConfig, rl: str, tok: Any, report: DoctorReport, audited: bool) -> list[str]:
    length = cfg.get("sequence_len") or AXOLOTL_SEQUENCE_LEN
    notes = [f"`rl: {rl}` trains on {AXOLOTL_RL[rl]}, max_length = `sequence_len` ({length})"]
    if str(cfg.get("excess_length_strategy") or "drop").lower() == "truncate":
        report.add(
            "truncation-drops-eos",
            f"{cfg.at('excess_length_strategy')}: `excess_length_strategy: truncate` cuts chosen and rejected text "
            f"longer than `sequence_len: {length}` less the prompt, keeping its start: the closer goes, TRL appends "
            "the eos to the cut text and its collator cuts it again at max_length; where the chosen completions are "
            "the longer ones, they lose their stop token where the rejected keep theirs (the loss then teaches the "
            "model not to stop)",
        ).advice = FIXES["axolotl"]["truncation-drops-eos"]
    ends = _text_endings(cfg, rl, tok)
    eos = getattr(tok, "eos_token", None)
    appended = {t: end for t, end in ends.items() if end is not None and eos and not end.endswith(eos)}
    unknown = [t for t, end in ends.items() if end is None]
    if unknown:
        notes.append(f"what `type: {', '.join(unknown)}` writes after a completion is not read here")
    if appended and not audited:
        types = ", ".join(f"`{t}` ({end!r})" for t, end in appended.items())
        report.add(
            "closer-doubled",
            f"{cfg.path}: `rl: {rl}` on rows whose completions end as {types}: {AXOLOTL_RL[rl]} appends the "
            f"tokenizer's eos {eos!r} (as axolotl sets it up) to each completion that does not end with it, so each "
            "is trained with a second closer after its stop",
        ).advice = FIXES["axolotl"]["closer-doubled"]
    elif ends and not appended:
        notes.append(f"each completion already ends with the eos {eos!r}: TRL appends none")
    notes.append("TRL rules read in 1.16's source (axolotl 0.19.0 pins trl 1.9.0, not read here)")
    return notes


def _text_endings(cfg: TrainingConfig, rl: str, tok: Any) -> dict[str, str | None]:
    """For each dataset `type`, what its completions' text ends with (None: not known here)."""
    closer, after = _closer(tok)
    ends: dict[str, str | None] = {}
    for key in cfg.keys("type"):
        if not key.startswith("datasets["):
            continue
        name = str(cfg.get(key))
        family = name.split(".")[0]
        if family == "chatml":
            ends[name] = "<|im_end|>"
        elif family == "llama3":
            ends[name] = "<|eot_id|>"
        elif family == "chat_template" and closer is not None:
            keeps_after = rl == "orpo" and name.endswith("argilla")  # orpo/chat_template.py: no .rstrip()
            ends[name] = closer + after if keeps_after else closer
        else:
            ends[name] = None
    return ends


def _closer(tok: Any) -> tuple[str | None, str]:
    """The template's end of turn for a last reply, and what it writes after it (ChatML: a newline)."""
    if tok is None:
        return None, ""
    try:
        chat = template_for(tok)
        text = chat.render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    except TemplateError:
        return None, ""
    closer = chat.end_of_turn
    if closer is None or closer not in text:
        return None, ""
    return closer, text[text.rindex(closer) + len(closer) :]


def _llamafactory(cfg: TrainingConfig, stage: str, audited: bool) -> list[str]:
    loss = cfg.get("pref_loss") or "sigmoid"
    cutoff = cfg.get("cutoff_len") or 2048
    notes = [
        f"`stage: {stage}`" + (f", `pref_loss: {loss}`" if stage == "dpo" else "") + ": LLaMA-Factory's template "
        "writes each completion through its stop word once, and nothing is appended after it",
        f"`cutoff_len: {cutoff}` cuts the prompt and both completions to one target length, keeping their start",
    ]
    if not audited:
        notes.append("whether a completion loses its stop word to it: not checked (no local `tokenized_path` rows)")
    return notes


def advise_preference(cfg: TrainingConfig, report: DoctorReport) -> None:
    """The preference findings of the run's rows told in the framework's keys (in place of TRL's)."""
    fixes = FIXES[cfg.framework]
    for f in report.findings:
        if f.id in fixes and (f.advice is None or f.advice.startswith("TRL")):
            f.advice = fixes[f.id]


__all__ = ["advise_preference", "check_preference_config", "preference_run", "rows_length"]
