"""The `eosguard train` YAML schema: pydantic models, a docstring per field, unknown keys are errors.

All problems in a config are collected and reported at once (with their key paths), before any model is loaded.

Run as:
    python -m eosguard.config CONFIG.yaml [key=value ...]   # validates and prints the resolved config
    python -m eosguard.config --reference                    # every key as the table in docs/training.md
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from eosguard.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


class DataConfig(_Strict):
    train: list[str] = []
    """JSONL files or `datasets` folders of conversations (OpenAI `messages` or ShareGPT `conversations`)."""
    prepared: str | None = None
    """Instead of `train`: a folder written by `eosguard prepare` (ids and labels, read on demand, not re-tokenized;
    checked against this run's tokenizer and options)."""
    eval: list[str] = []
    """Held-out conversations for the stop-rate callback and the final evaluation; empty: split from train."""
    eval_fraction: float = Field(default=0.0, ge=0.0, lt=0.5)
    """Share of train held out for evaluation when `eval` is empty (0 disables)."""
    skip_invalid: bool = False
    """Skip malformed records and count them, instead of stopping at the first one."""
    tools: str | None = None
    """A JSON file with a list of function schemas, offered to the model in every conversation that brings no
    `tools` of its own (the template renders them, as `apply_chat_template(tools=...)` does)."""

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if bool(self.train) == bool(self.prepared):
            raise ValueError("give `train` (conversation files) or `prepared` (an `eosguard prepare` folder), one")
        if self.prepared and self.eval_fraction:
            raise ValueError("`eval_fraction` splits conversations: with `prepared` data give held-out `eval` files")
        return self


class LoraSettings(_Strict):
    r: int = Field(default=16, gt=0)
    """LoRA rank."""
    alpha: int = Field(default=32, gt=0)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA branch."""
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Modules that get adapters."""
    merge: bool = True
    """Merge the adapters into the weights when saving, so the folder loads with plain AutoModelForCausalLM."""


class TrainConfig(_Strict):
    model: str
    """Hub id or local folder of the model to fine-tune (weights load from safetensors only)."""
    tokenizer: str | None = None
    """Hub id or folder of the tokenizer; default: the model's."""
    data: DataConfig
    """Where the conversations come from."""
    output_dir: str = "runs/eosguard"
    """Folder for checkpoints and the final model (`output_dir/model`)."""
    template: Literal["auto", "chatml"] = "auto"
    """Chat template: "auto" keeps the model's own (a Llama-3-Instruct fine-tune stays in Llama-3 format) and uses
    ChatML when it has none; "chatml" always trains in ChatML (adding <|im_start|>/<|im_end|> when missing)."""
    max_length: int = Field(default=2048, gt=8)
    """Longest example in tokens."""
    over_length: Literal["drop", "truncate", "error"] = "truncate"
    """Longer examples: drop them, truncate keeping each supervised turn's stop token, or stop with an error."""
    train_on: Literal["all", "last", "each"] = "all"
    """Supervise every assistant turn, or only the last one, or every one in an example of its own (a message's
    "train" flag overrides). With "all", a reply the template renders differently once later turns follow
    (reasoning dropped from history, gpt-oss's `<|end|>` for `<|return|>`) is still trained in an example of its
    own, as the model produces it; the data summary counts them."""
    chat_template_kwargs: dict[str, Any] = {}
    """Template arguments (`enable_thinking: false`, `reasoning_effort: low`, ...): used for the generation prompt,
    the trained replies and evaluation, and written into the saved tokenizer's template as its defaults."""
    epochs: float | None = Field(default=None, gt=0)
    """Passes over the data (give this or `max_steps`)."""
    max_steps: int | None = Field(default=None, gt=0)
    """Optimizer steps (wins over `epochs`)."""
    lr: float = Field(default=2e-5, gt=0)
    """Peak learning rate."""
    warmup_steps: int = Field(default=0, ge=0)
    """Linear warm-up steps."""
    scheduler: Literal["constant_with_warmup", "cosine", "linear"] = "cosine"
    """Learning-rate schedule after warm-up."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """AdamW weight decay."""
    batch_size: int = Field(default=4, gt=0)
    """Examples per device per step (packed rows when `packing: rows`)."""
    grad_accum: int = Field(default=1, gt=0)
    """Gradient accumulation steps."""
    precision: Literal["fp32", "bf16", "bf16-pure"] = "fp32"
    """fp32; bf16: mixed precision, fp32 master weights and optimizer state with the forward and backward under bf16
    autocast (what `bf16=True` means on a GPU; on CPU it needs avx512_bf16 or AMX to be faster); bf16-pure: the
    weights themselves in bf16 (half the memory, but small updates can round away: lower the lr, expect drift)."""
    lora: LoraSettings | None = None
    """LoRA with peft; end-of-turn rows are made trainable automatically when the token is new."""
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    """Attention implementation; auto: FlashAttention-2 (variable-length, no mask) on a GPU that has it, else SDPA
    (see `eosguard.packing.choose_attention`; the choice is logged and written to eosguard.json)."""
    packing: Literal["off", "rows", "batch"] = "off"
    """Padding-free training, attention kept per example. rows (or true): all examples packed into rows of up to
    max_length tokens before batching (best-fit-decreasing), batch_size counting rows: the fewest positions and
    optimizer steps. batch: each step takes batch_size examples, as padded training does, and packs just those into
    rows: the same steps and examples per step as `off` (same hyperparameters), without the padding. off (or
    false): padded batches."""
    seed: int = 0
    """Seed for initialisation, data order and dropout."""
    save_steps: int | None = Field(default=None, gt=0)
    """Save a checkpoint every N steps (None: only the final model)."""
    resume: bool = False
    """Continue from the last checkpoint in output_dir."""
    stop_eval_steps: int | None = Field(default=None, gt=0)
    """Measure the stop rate on the eval set every N steps (needs eval data)."""
    max_new_tokens: int = Field(default=128, gt=0)
    """Generation budget of the stop-rate evaluations."""
    trust_remote_code: bool = False
    """Run code shipped with the model (off: only transformers' own architectures)."""
    tensorboard: bool = False
    """Log to TensorBoard in output_dir (needs the tensorboard package)."""

    @field_validator("packing", mode="before")
    @classmethod
    def _packing_switch(cls, value: Any) -> Any:
        """`packing: true / false` (older configs) mean rows / off."""
        return {True: "rows", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("model", "tokenizer")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _length_of_training(self) -> TrainConfig:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("give `epochs` or `max_steps`")
        return self


def _set_path(tree: dict[str, Any], dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is not a section")
    node[keys[-1]] = yaml.safe_load(raw) if raw != "" else None


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s) in the config:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  - {where}: {msg}")
    return "\n".join(lines)


def _missing_files(cfg: TrainConfig) -> list[str]:
    problems = [f"  - data.train: no such file or folder: {p}" for p in cfg.data.train if not Path(p).exists()]
    problems += [f"  - data.eval: no such file or folder: {p}" for p in cfg.data.eval if not Path(p).exists()]
    if cfg.data.tools and not Path(cfg.data.tools).is_file():
        problems.append(f"  - data.tools: no such file: {cfg.data.tools}")
    if cfg.data.prepared and not Path(cfg.data.prepared).is_dir():
        problems.append(f"  - data.prepared: no such folder: {cfg.data.prepared}")
    for key in ("model", "tokenizer"):
        value = getattr(cfg, key)
        looks_local = value is not None and (value.startswith((".", "/", "~")) or value.count("/") > 1)
        if looks_local and not Path(value).expanduser().exists():
            problems.append(f"  - {key}: no such folder: {value}")
    return problems


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict[str, Any] | None = None) -> TrainConfig:
    """Read YAML, apply `key.sub=value` overrides, validate everything, check that files exist; raise once."""
    tree: dict[str, Any] = dict(base or {})
    source = str(path) if path else "config"
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: no such config file")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}{line}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the config must be a mapping of keys to values")
        tree.update(loaded)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), raw)
    try:
        cfg = TrainConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    missing = _missing_files(cfg)
    if missing:
        raise ConfigError("\n".join([f"{source}: {len(missing)} problem(s) in the config:", *missing]))
    return cfg


def reference() -> str:
    """Every config key as a markdown table (docs/training.md), read off the models: key, type, default, the field's
    docstring. `data.*` and `lora.*` are the nested sections."""
    rows = ["| key | type | default | what |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            kind = f.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                walk(kind, f"{prefix}{name}.")
                continue
            nested = next(
                (a for a in getattr(kind, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)), None
            )
            if nested is not None:  # an optional section (lora): its keys
                rows.append(f"| `{prefix}{name}` | section | none | {_cell(f.description)} |")
                walk(nested, f"{prefix}{name}.")
                continue
            default = "required" if f.is_required() else f"`{f.default!r}`"
            shown = str(kind).replace("typing.", "").replace("<class '", "").replace("'>", "")
            rows.append(f"| `{prefix}{name}` | `{_cell(shown)}` | {default} | {_cell(f.description)} |")

    walk(TrainConfig, "")
    return "\n".join(rows)


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


if __name__ == "__main__":
    if sys.argv[1:] == ["--reference"]:
        print(reference())
        raise SystemExit
    print(load_config(sys.argv[1], sys.argv[2:]).model_dump_json(indent=2))
