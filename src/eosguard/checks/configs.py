"""An axolotl or LLaMA-Factory training config, read for what decides the stop token (`doctor --config`).

The YAML is read as written (never through the frameworks, which are heavy, pinned and GPU-oriented), each setting
with its line, and recognised by its keys: LLaMA-Factory's (`model_name_or_path`, `template`, `cutoff_len`,
`finetuning_type`, `stage`) or axolotl's (`base_model`, `datasets` with `type`, `sequence_len`, `chat_template`).
The tokenizer the run trains with is the base model's as the framework changes it (`eosguard.checks.frameworks`:
its tokens, its eos, its named template). Every finding names the key's `file:line` and the fix in that framework's
keys (`Finding.advice`); what each framework does was read in its source (axolotl 0.19.0, LLaMA-Factory 0.9.5):

- axolotl (`prompt_strategies/chat_template.py`): a reply's end-of-turn token is trained only as one of `eot_tokens`
  (default: the eos alone) or as the eos, with `train_on_eos` / `train_on_eot` (default `turn`): `roles_to_train`
  without the assistant, `train_on_eos: none | last`, `eot_tokens` without the template's end of turn, and no
  `eot_tokens` where the end of turn is not the eos (Gemma's `<end_of_turn>`, axolotl#3754) leave replies' stop tokens
  at -100 (`config-masks-stop`, `config-stop-unnamed`); `train_on_inputs: true` (`prompt-trained`);
  `excess_length_strategy: truncate` (`truncation-drops-eos`); LoRA (`adapter: lora | qlora`) with tokens new to the
  vocabulary and `lora_modules_to_save` without the embedding layers (`new-token-untrained`), where axolotl does not
  refuse the config itself (it does for `tokens`, and for a new multi-piece `special_tokens` value);
- LLaMA-Factory (`model/patcher.py`, `model/adapter.py`): `train_on_prompt: true` (`prompt-trained`); LoRA with
  tokens new to the vocabulary: when the vocabulary is resized (`resize_vocab`, turned on by any new `add_tokens` /
  `add_special_tokens`) and `additional_target` is unset, LLaMA-Factory trains `embed_tokens` and `lm_head` itself;
  `new-token-untrained` only where `additional_target` is set without them, or new tokens come without a resize.

Where the run's prepared data exists (axolotl's `dataset_prepared_path`, LLaMA-Factory's `tokenized_path`), the doctor
audits those rows too (`eosguard.checks.rows`) with the tokenizer that framework uses.

Run as:
    eosguard doctor --config examples/axolotl/gemma-eot-masked.yaml [--tokenizer PATH]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eosguard.checks.config_files import Framework, TrainingConfig
from eosguard.checks.frameworks import as_list
from eosguard.checks.report import DoctorReport

EMBEDDINGS = ("embed_tokens", "lm_head")

# The keys each framework's checks read (they decide a finding); the other keys shown are reported, never judged.
READ: dict[Framework, tuple[str, ...]] = {
    "axolotl": (
        "base_model", "tokenizer_config", "chat_template", "chat_template_jinja", "special_tokens", "tokens",
        "eot_tokens", "roles_to_train", "train_on_eos", "train_on_eot", "train_on_inputs", "sequence_len",
        "excess_length_strategy", "adapter", "lora_modules_to_save", "dataset_prepared_path",
    ),
    "llamafactory": (
        "model_name_or_path", "template", "train_on_prompt", "finetuning_type", "additional_target", "resize_vocab",
        "add_tokens", "add_special_tokens", "new_special_tokens_config", "tokenized_path",
    ),
}  # fmt: skip
SHOWN: dict[Framework, tuple[str, ...]] = {
    "axolotl": ("sample_packing", "pad_token", "eos_token"),
    "llamafactory": ("cutoff_len", "mask_history", "packing", "neat_packing", "stage", "quantization_bit"),
}


@dataclass
class RunTokenizer:
    """What the checks know of the tokenizer the run trains with: its template's `stops` (None: not read, `why`),
    its eos, the tokens the framework adds that are new to the vocabulary (None: unknown, no tokenizer), whether the
    embeddings are resized (LLaMA-Factory), the template's text and the model's type (for axolotl's layer names)."""

    stops: list[str] | None
    eos: str | None
    added: list[str] | None
    why: str = ""
    resized: bool = False
    template: str = ""
    model_type: str | None = None
    multipiece: list[str] = field(default_factory=list)
    tied: bool = False


def check_training_config(cfg: TrainingConfig, run: RunTokenizer, report: DoctorReport) -> None:
    """The framework's settings that decide the stop token (see the module doc)."""
    if run.stops is None:
        report.step("stop tokens for the config", None, f"skipped: {run.why}")
    notes = _axolotl(cfg, run, report) if cfg.framework == "axolotl" else _llamafactory(cfg, run, report)
    keys = set(READ[cfg.framework]) | set(SHOWN[cfg.framework])
    shown = [f"{k}: {cfg.get(k)!r} (line {cfg.settings[k].line})" for k in cfg.settings if _base(k) in keys]
    errors = [f for f in report.findings if f.severity == "error" and str(cfg.path) in f.message]
    detail = "; ".join(shown) or "no stop-token setting"
    report.step(f"{cfg.framework} config", not errors, detail + "".join(f"; {n}" for n in notes))


def _base(key: str) -> str:
    return key.split(".")[-1].split("[")[0]


def _embedding_layers(model_type: str | None) -> list[str]:
    """axolotl's `get_linear_embedding_layers` (loaders/utils.py): the modules LoRA must save to train new rows."""
    return {
        "gpt_neox": ["embed_in", "embed_out"],
        "falcon": ["word_embeddings", "lm_head"],
        "nemotron_h": ["embeddings", "lm_head"],
        "bailing_hybrid": ["word_embeddings", "lm_head"],
    }.get(model_type or "", list(EMBEDDINGS))


def _axolotl(cfg: TrainingConfig, run: RunTokenizer, report: DoctorReport) -> list[str]:
    def add(finding: str, message: str, fix: str) -> None:
        report.add(finding, message).advice = fix

    for key in cfg.keys("roles_to_train"):
        roles = as_list(cfg.get(key))
        if not {"assistant", "gpt", "model"} & set(roles):
            add(
                "config-masks-stop",
                f"{cfg.at(key)}: `{key}: {roles}` trains no assistant turn: no reply, and no stop token, is learned",
                "axolotl: `roles_to_train: [assistant]`",
            )
    for key in cfg.keys("train_on_eos") + cfg.keys("train_on_eot"):
        value = str(cfg.get(key)).lower()
        if value in ("none", "last", "false"):
            which = "no turn's" if value in ("none", "false") else "only the last turn's"
            name = key.split(".")[-1]
            add(
                "config-masks-stop",
                f"{cfg.at(key)}: `{key}: {value}` trains {which} end-of-turn token: the other replies are trained "
                f"without their stop token (set `{name}: turn`)",
                f"axolotl: `{name}: turn` (its default)",
            )
    eot = as_list(cfg.get("eot_tokens"))
    if run.stops is not None and eot:
        missing = [s for s in run.stops if s not in eot]
        if missing:
            add(
                "config-masks-stop",
                f"{cfg.at('eot_tokens')}: `eot_tokens: {eot}` lacks {', '.join(missing)}, the template's stop "
                f"token(s): axolotl leaves them at -100 (set `eot_tokens: {[*eot, *missing]}`)",
                f"axolotl: `eot_tokens: {[*eot, *missing]}`",
            )
    elif run.stops is not None and run.eos is not None and any(s != run.eos for s in run.stops) and not cfg.get("rl"):
        others = ", ".join(s for s in run.stops if s != run.eos)
        add(
            "config-stop-unnamed",
            f"{cfg.path}: no `eot_tokens`, and the template's turns end with {others}, not the eos {run.eos}: axolotl "
            f"takes `eot_tokens` = [eos] and trains a reply's end of turn only as an eot or eos token, so {others} "
            "stays at -100 (axolotl#3754)",
            f"axolotl: `eot_tokens: {run.stops}`",
        )
    if cfg.get("train_on_inputs") is True:
        add(
            "prompt-trained",
            f"{cfg.at('train_on_inputs')}: `train_on_inputs: true` trains the prompts too",
            "axolotl: `train_on_inputs: false`",
        )
    if str(cfg.get("excess_length_strategy", "")).lower() == "truncate" and not cfg.get("rl"):  # rl: preference_configs
        add(
            "truncation-drops-eos",
            f"{cfg.at('excess_length_strategy')}: `excess_length_strategy: truncate` cuts rows longer than "
            f"`sequence_len: {cfg.get('sequence_len')}` and the stop token of their last reply with them",
            "axolotl: `excess_length_strategy: drop`, or a larger `sequence_len`",
        )
    return _axolotl_new_tokens(cfg, run, report)


def _axolotl_new_tokens(cfg: TrainingConfig, run: RunTokenizer, report: DoctorReport) -> list[str]:
    """axolotl's own refusals (it raises before training), then new rows LoRA leaves untrained."""
    if cfg.get("adapter") not in ("lora", "qlora"):
        return []
    layers = _embedding_layers(run.model_type)
    saved = as_list(cfg.get("lora_modules_to_save"))
    if set(layers) <= set(saved) or (run.tied and set(layers) & set(saved)):
        return []
    if as_list(cfg.get("tokens")):
        return [
            f"axolotl refuses this config before training (loaders/utils.py: `tokens` with an adapter need "
            f"`lora_modules_to_save: {layers}`), whether or not the tokens are new"
        ]
    if run.multipiece:
        return [
            f"axolotl refuses this config before training (loaders/tokenizer.py: new special tokens "
            f"{run.multipiece} with an adapter need `lora_modules_to_save: {layers}`)"
        ]
    new = [t for t in run.added or [] if t != (cfg.get("special_tokens") or {}).get("pad_token")]
    used, notes = _used_new_tokens(run, new)
    if used:
        given = cfg.get("lora_modules_to_save") is not None
        modules = f"`lora_modules_to_save: {saved}`" if given else "no `lora_modules_to_save`"
        report.add(
            "new-token-untrained",
            f"{cfg.at('adapter')}: `adapter: {cfg.get('adapter')}` with {', '.join(used)} new to the vocabulary and "
            f"{modules}: their embedding and output rows stay as initialised, never trained",
        ).advice = f"axolotl: `lora_modules_to_save: {layers}`"
    return notes


def _used_new_tokens(run: RunTokenizer, new: list[str]) -> tuple[list[str], list[str]]:
    """The new tokens whose untrained rows lose the stop token (a stop token, or a token the template writes), and
    notes on the rest (or on not knowing which tokens are new)."""
    if run.added is None:
        return [], ["new tokens: skipped (no local tokenizer to tell which tokens are new)"]
    used = [t for t in new if t in (run.stops or []) or t in run.template]
    unused = [t for t in new if t not in used]
    return used, [f"new tokens {unused}: rows untrained, but the chat template writes none of them"] if unused else []


def _llamafactory(cfg: TrainingConfig, run: RunTokenizer, report: DoctorReport) -> list[str]:
    if cfg.get("train_on_prompt") is True:
        report.add(
            "prompt-trained", f"{cfg.at('train_on_prompt')}: `train_on_prompt: true` trains the prompts too"
        ).advice = "LLaMA-Factory: `train_on_prompt: false`"
    if cfg.get("finetuning_type", "lora") not in ("lora", "oft"):
        return []
    if not run.added:
        return [] if run.added is not None else _used_new_tokens(run, [])[1]
    target = as_list(cfg.get("additional_target"))
    if run.resized and cfg.get("additional_target") is None:
        return [
            f"new tokens {run.added}: the vocabulary is resized and `additional_target` is unset, so LLaMA-Factory "
            "trains embed_tokens and lm_head itself (model/adapter.py)"
        ]
    missing = [e for e in EMBEDDINGS if e not in target]
    if not missing or (run.tied and len(missing) < len(EMBEDDINGS)):
        return []
    used, notes = _used_new_tokens(run, run.added)
    if not used:
        return notes
    named = ("add_special_tokens", "new_special_tokens_config", "add_tokens", "additional_target", "template")
    keys = [k for k in named if cfg.get(k)]
    why = (
        f"`additional_target: {cfg.get('additional_target')}` leaves {' and '.join(missing)} out"
        if run.resized
        else "the vocabulary is not resized (`resize_vocab` is off: LLaMA-Factory only warns for a template's new stop "
        "words), so their ids have no trained row"
    )
    report.add(
        "new-token-untrained",
        f"{cfg.at(keys[0]) if keys else cfg.path}: LoRA (`finetuning_type: {cfg.get('finetuning_type', 'lora')}`) "
        f"with {', '.join(used)} new to the vocabulary, and {why}: their rows are never trained",
    ).advice = (
        "LLaMA-Factory: `resize_vocab: true` and `additional_target: embed_tokens,lm_head` (or leave "
        "`additional_target` unset: it then trains both itself when it resizes)"
    )
    return notes


FIXES: dict[Framework, dict[str, str]] = {
    "axolotl": {
        "eos-masked": "axolotl: `eot_tokens` listing the template's stop tokens, `train_on_eos: turn`, "
        "`roles_to_train: [assistant]`; then prepare again (`axolotl preprocess`)",
        "closer-not-a-stop": "axolotl: `eot_tokens` listing the template's stop tokens; or add the token to the "
        "saved generation_config.json's eos ids",
        "truncation-drops-eos": "axolotl: `excess_length_strategy: drop`, or a larger `sequence_len`",
        "reply-header-missing": "axolotl: a larger `sequence_len`, or `excess_length_strategy: drop`",
        "template-mismatch": "axolotl: `chat_template: tokenizer_default` (the format the model is served in), or "
        "serve with the tokenizer axolotl saved",
        "prompt-trained": "axolotl: `train_on_inputs: false`, `roles_to_train: [assistant]`",
        "stop-token-untrained": "axolotl: `lora_modules_to_save: [embed_tokens, lm_head]`",
    },
    "llamafactory": {
        "eos-masked": "LLaMA-Factory: a `template:` whose stop word is the model's end of turn (its assistant slot "
        "writes it); then tokenize again (delete `tokenized_path`)",
        "closer-not-a-stop": "LLaMA-Factory: the `template:` whose stop word is the model's end of turn, or add the "
        "token to generation_config.json's eos ids",
        "truncation-drops-eos": "LLaMA-Factory: a larger `cutoff_len` (its `infer_seqlen` cuts the reply and its stop "
        "token with it)",
        "reply-header-missing": "LLaMA-Factory: a larger `cutoff_len` (it cut the prompt and kept the reply)",
        "template-mismatch": "LLaMA-Factory: the `template:` of the tokenizer's own format (e.g. `template: qwen` for "
        "ChatML), or serve with the tokenizer LLaMA-Factory saved",
        "prompt-trained": "LLaMA-Factory: `train_on_prompt: false`",
        "stop-token-untrained": "LLaMA-Factory: `additional_target: embed_tokens,lm_head` (or unset, with "
        "`resize_vocab: true`)",
    },
}


def advise(cfg: TrainingConfig, report: DoctorReport) -> None:
    """Findings of the run's rows, weights or template told in the framework's keys (where no advice is set)."""
    fixes = FIXES[cfg.framework]
    for f in report.findings:
        if f.advice is None and f.id in fixes:
            f.advice = fixes[f.id]


__all__ = [
    "READ",
    "SHOWN",
    "RunTokenizer",
    "advise",
    "check_training_config",
]
