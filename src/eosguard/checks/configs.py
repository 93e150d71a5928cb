"""An axolotl or LLaMA-Factory training config, read for what decides the stop token (`doctor --config`).

The YAML is read as written (never through the frameworks, which are heavy, pinned and GPU-oriented), each setting
with its line, and recognised by its keys: LLaMA-Factory's (`model_name_or_path`, `template`, `cutoff_len`,
`finetuning_type`, `stage`) or axolotl's (`base_model`, `datasets` with `type`, `sequence_len`, `chat_template`).
Every finding names the key's `file:line` and the fix in that framework's words:

- axolotl: `roles_to_train` without the assistant, `train_on_eos: none | last`, `eot_tokens` without the template's
  end of turn (`config-masks-stop`); no `eot_tokens` where the end of turn is not the eos (`config-stop-unnamed`,
  axolotl#3754); `train_on_inputs: true` (`prompt-trained`); `excess_length_strategy: truncate`
  (`truncation-drops-eos`); LoRA with new tokens and no `lora_modules_to_save` for the embeddings
  (`new-token-untrained`);
- LLaMA-Factory: `train_on_prompt: true` (`prompt-trained`); LoRA with new tokens (`add_special_tokens`,
  `add_tokens`, `resize_vocab`) and no `additional_target: embed_tokens,lm_head` (`new-token-untrained`).

Where the run's prepared data exists (axolotl's `dataset_prepared_path`, LLaMA-Factory's `tokenized_path`), the doctor
audits those rows too (`eosguard.checks.rows`) with the tokenizer that framework uses.

Run as:
    eosguard doctor --config examples/axolotl-gemma.yaml [--tokenizer PATH]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from eosguard.base.errors import ConfigError
from eosguard.checks.report import DoctorReport

Framework = Literal["axolotl", "llamafactory"]
LLAMAFACTORY_KEYS = {"model_name_or_path", "template", "cutoff_len", "finetuning_type", "stage", "tokenized_path"}
AXOLOTL_KEYS = {"base_model", "datasets", "sequence_len", "chat_template", "sample_packing", "dataset_prepared_path"}
EMBEDDINGS = ("embed_tokens", "lm_head")


@dataclass
class Setting:
    value: Any
    line: int


@dataclass
class TrainingConfig:
    """A framework's config: `settings` by dotted key (`datasets[0].train_on_eos`), each with its line."""

    path: Path
    framework: Framework
    settings: dict[str, Setting] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        s = self.settings.get(key)
        return default if s is None else s.value

    def at(self, key: str) -> str:
        s = self.settings.get(key)
        return f"{self.path}:{s.line}" if s else str(self.path)

    def keys(self, suffix: str) -> list[str]:
        """Every key that ends with `suffix` (each dataset's own setting)."""
        return [k for k in self.settings if k == suffix or k.endswith("." + suffix)]

    @property
    def model(self) -> str | None:
        return self.get("model_name_or_path") if self.framework == "llamafactory" else self.get("base_model")

    @property
    def tokenizer(self) -> str | None:
        """The tokenizer the framework loads (axolotl: `tokenizer_config`, else the base model)."""
        return self.get("tokenizer_config") or self.model

    def prepared(self) -> list[Path]:
        """The run's prepared rows that exist: LLaMA-Factory's `tokenized_path`; each folder of axolotl's
        `dataset_prepared_path` (one per content hash)."""
        if self.framework == "llamafactory":
            p = self.get("tokenized_path")
            return [Path(p)] if p and Path(p).exists() else []
        root = self.get("dataset_prepared_path")
        if not root or not Path(root).is_dir():
            return []
        from eosguard.data.tokenized import is_datasets_folder

        return sorted(d for d in Path(root).iterdir() if is_datasets_folder(d))


def _flatten(node: yaml.Node, prefix: str, out: dict[str, Setting]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = f"{prefix}.{key.value}" if prefix else str(key.value)
            out[name] = Setting(yaml.safe_load(yaml.serialize(value)), key.start_mark.line + 1)
            _flatten(value, name, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _flatten(item, f"{prefix}[{i}]", out)


def read_training_config(path: str | Path) -> TrainingConfig:
    p = Path(path)
    try:
        root = yaml.compose(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"{p}{f':{mark.line + 1}' if mark else ''}: malformed YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{p}: a training config is a mapping of keys to values")
    settings: dict[str, Setting] = {}
    _flatten(root, "", settings)
    top = {k for k in settings if "." not in k and "[" not in k}
    if top & LLAMAFACTORY_KEYS and "base_model" not in top:
        return TrainingConfig(p, "llamafactory", settings)
    if top & AXOLOTL_KEYS:
        return TrainingConfig(p, "axolotl", settings)
    raise ConfigError(
        f"{p}: neither an axolotl config (base_model, datasets, ...) nor a LLaMA-Factory one (model_name_or_path, "
        "template, ...)"
    )


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def check_training_config(cfg: TrainingConfig, stops: list[str] | None, eos: str | None, report: DoctorReport) -> None:
    """The framework's settings that decide the stop token (see the module doc); `stops`: the template's stop tokens
    (None: no tokenizer to read them from: the checks that need them are reported as skipped), `eos`: the eos."""
    if stops is None:
        report.step(
            "stop tokens for the config", None, f"skipped: {cfg.tokenizer} is no local tokenizer (give --tokenizer)"
        )
    if cfg.framework == "axolotl":
        _axolotl(cfg, stops, eos, report)
    else:
        _llamafactory(cfg, report)
    shown = [
        f"{k}: {cfg.get(k)!r} (line {cfg.settings[k].line})"
        for k in cfg.settings
        if k.split(".")[-1].split("[")[0] in _SHOWN
    ]
    errors = [f for f in report.findings if f.severity == "error" and str(cfg.path) in f.message]
    report.step(f"{cfg.framework} config", not errors, "; ".join(shown) or "no stop-token setting")


_SHOWN = {
    "base_model", "tokenizer_config", "chat_template", "chat_template_jinja", "eot_tokens", "special_tokens",
    "eos_token", "pad_token", "train_on_eos", "train_on_eot", "roles_to_train", "train_on_inputs", "sequence_len",
    "excess_length_strategy", "sample_packing", "adapter", "lora_modules_to_save", "tokens", "dataset_prepared_path",
    "model_name_or_path", "template", "cutoff_len", "train_on_prompt", "mask_history", "packing", "neat_packing",
    "finetuning_type", "additional_target", "resize_vocab", "add_tokens", "add_special_tokens", "tokenized_path",
}  # fmt: skip


def _axolotl(cfg: TrainingConfig, stops: list[str] | None, eos: str | None, report: DoctorReport) -> None:
    for key in cfg.keys("roles_to_train"):
        roles = _as_list(cfg.get(key))
        if not {"assistant", "gpt", "model"} & set(roles):
            report.add(
                "config-masks-stop",
                f"{cfg.at(key)}: `{key}: {roles}` trains no assistant turn: no reply, and no stop token, is learned",
            )
    for key in cfg.keys("train_on_eos") + cfg.keys("train_on_eot"):
        value = str(cfg.get(key)).lower()
        if value in ("none", "last", "false"):
            which = "no turn's" if value in ("none", "false") else "only the last turn's"
            report.add(
                "config-masks-stop",
                f"{cfg.at(key)}: `{key}: {value}` trains {which} end-of-turn token: the other replies are trained "
                f"without their stop token (set `{key.split('.')[-1]}: turn`)",
            )
    eot = _as_list(cfg.get("eot_tokens"))
    if stops is not None and eot:
        missing = [s for s in stops if s not in eot]
        if missing:
            report.add(
                "config-masks-stop",
                f"{cfg.at('eot_tokens')}: `eot_tokens: {eot}` lacks {', '.join(missing)}, the template's stop "
                f"token(s): axolotl leaves them at -100 (set `eot_tokens: {[*eot, *missing]}`)",
            )
    elif stops is not None and eos is not None and any(s != eos for s in stops):
        report.add(
            "config-stop-unnamed",
            f"{cfg.path}: no `eot_tokens`, and the template's turns end with "
            f"{', '.join(s for s in stops if s != eos)}, not the eos {eos}: axolotl before PR#3756 took the eos and "
            "masked the real end of turn (axolotl#3754); "
            f"set `eot_tokens: {stops}`",
        )
    if cfg.get("train_on_inputs") is True:
        report.add("prompt-trained", f"{cfg.at('train_on_inputs')}: `train_on_inputs: true` trains the prompts too")
    if str(cfg.get("excess_length_strategy", "")).lower() == "truncate":
        report.add(
            "truncation-drops-eos",
            f"{cfg.at('excess_length_strategy')}: `excess_length_strategy: truncate` cuts rows longer than "
            f"`sequence_len: {cfg.get('sequence_len')}` and the stop token of their last reply with them",
        )
    new = _as_list(cfg.get("tokens")) + [
        str(v) for k, v in (cfg.get("special_tokens") or {}).items() if k != "pad_token"
    ]
    saved = _as_list(cfg.get("lora_modules_to_save"))
    if cfg.get("adapter") in ("lora", "qlora") and new and not set(EMBEDDINGS) <= set(saved):
        report.add(
            "new-token-untrained",
            f"{cfg.at('adapter')}: `adapter: {cfg.get('adapter')}` with tokens added ({', '.join(new)}) and "
            f"`lora_modules_to_save: {saved}`: their rows stay untrained (set `lora_modules_to_save: [embed_tokens, "
            "lm_head]`)",
        )


def _llamafactory(cfg: TrainingConfig, report: DoctorReport) -> None:
    if cfg.get("train_on_prompt") is True:
        report.add("prompt-trained", f"{cfg.at('train_on_prompt')}: `train_on_prompt: true` trains the prompts too")
    added = [k for k in ("add_special_tokens", "add_tokens", "resize_vocab") if cfg.get(k)]
    target = _as_list(cfg.get("additional_target"))
    if cfg.get("finetuning_type", "lora") == "lora" and added and not set(EMBEDDINGS) <= set(target):
        where = cfg.at(added[0])
        report.add(
            "new-token-untrained",
            f"{where}: LoRA (`finetuning_type: lora`) with {', '.join(f'`{k}`' for k in added)} and "
            f"`additional_target: {cfg.get('additional_target')}`: the new tokens' rows stay untrained (set "
            "`additional_target: embed_tokens,lm_head`)",
        )


__all__ = ["TrainingConfig", "check_training_config", "read_training_config"]
