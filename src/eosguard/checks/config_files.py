"""A framework's training config file read as written (`doctor --config`): each setting with its `file:line`, the
framework told by its keys (LLaMA-Factory's `model_name_or_path`, `template`, `cutoff_len`, ...; axolotl's
`base_model`, `datasets`, `sequence_len`, ...; both model keys at once refused), the framework's own rewriting of its
settings (`TrainingConfig.framework_settings`), and the base model's `config.json` where it is local. What the
settings mean for the stop token is `eosguard.checks.configs`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from eosguard.base.errors import ConfigError

Framework = Literal["axolotl", "llamafactory"]
LLAMAFACTORY_KEYS = {"model_name_or_path", "template", "cutoff_len", "finetuning_type", "stage", "tokenized_path"}
AXOLOTL_KEYS = {"base_model", "datasets", "sequence_len", "chat_template", "sample_packing", "dataset_prepared_path"}


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
    def top(self) -> dict[str, Any]:
        """The top-level settings, as the framework reads them."""
        return {k: s.value for k, s in self.settings.items() if "." not in k and "[" not in k}

    def framework_settings(self) -> dict[str, Any]:
        """The top-level settings after the framework's own rewriting: LLaMA-Factory 0.9.5 replaces
        `add_special_tokens` with the keys of the YAML file `new_special_tokens_config` names (tokens to
        descriptions; `hparams/model_args.py`), read from the working directory as it does, else beside the config."""
        top = self.top
        name = top.get("new_special_tokens_config") if self.framework == "llamafactory" else None
        if not name:
            return top
        found = next((p for p in (Path(name), self.path.parent / name) if p.is_file()), None)
        try:
            mapping = yaml.safe_load(found.read_text(encoding="utf-8")) if found else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"{self.at('new_special_tokens_config')}: cannot read {found}: {exc}") from None
        if not isinstance(mapping, dict):
            what = "no such file (from the working directory or the config's)" if found is None else "not a mapping"
            raise ConfigError(
                f"{self.at('new_special_tokens_config')}: {name}: {what}; LLaMA-Factory needs a YAML mapping of new "
                "special tokens to descriptions there, and fails without one"
            )
        return {**top, "add_special_tokens": [str(k) for k in mapping]}

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
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
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
    if "base_model" in top and "model_name_or_path" in top:
        raise ConfigError(
            f"{p}:{settings['model_name_or_path'].line}: LLaMA-Factory's `model_name_or_path` here and axolotl's "
            f"`base_model` at line {settings['base_model'].line}: which framework runs it is unclear; keep the one "
            "framework's keys"
        )
    if top & LLAMAFACTORY_KEYS and "base_model" not in top:
        return TrainingConfig(p, "llamafactory", settings)
    if top & AXOLOTL_KEYS:
        return TrainingConfig(p, "axolotl", settings)
    raise ConfigError(
        f"{p}: neither an axolotl config (base_model, datasets, ...) nor a LLaMA-Factory one (model_name_or_path, "
        "template, ...)"
    )


def model_config(cfg: TrainingConfig) -> dict[str, Any]:
    """The base model's config.json, where its folder is local (its `model_type` names axolotl's embedding layers,
    `tie_word_embeddings` whether the output rows are the input rows); {} otherwise."""
    path = Path(str(cfg.model or "")).expanduser() / "config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


__all__ = ["Framework", "Setting", "TrainingConfig", "model_config", "read_training_config"]
