"""`eosguard fix --model MODEL_DIR | FILE.gguf --out NEW`: repair what needs no training, then measure whether that
was enough.

For a model trained elsewhere. What metadata can repair is repaired in a copy (never in place):

- a model folder: the tokenizer's eos becomes the end-of-turn token read off its chat template, its pad an existing
  token that is no stop token (`prepare_tokenizer`; never a new one, so no tensor changes shape, unless `--add-pad`:
  a served model needs no pad, and a vocabulary one row longer no longer matches adapters or quantized files made for
  the original), a missing chat template is taken from `--template` (`chatml`, or a folder whose template to use),
  and `generation_config.json` stops on every stop token of the template; the copy is written whole or not at all;
- a GGUF file: eos / eot / eom and the embedded template, as `eosguard export gguf` sets them.

Then, with `--data`, the held-out prompts run before and after (transformers for a folder, llama.cpp for a GGUF) and
the report says whether the weights themselves emit the end-of-turn token: a model trained with its stop token
masked (the pad = eos bug) never writes it, and no metadata can fix that: the report gives the stop rate after the
fix and says to retrain.

Run as:
    eosguard fix --model MODEL_DIR --out fixed/ --data heldout.jsonl
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eosguard.base.errors import EosguardError
from eosguard.chat.settings import MAX_NEW_TOKENS

ENOUGH = 0.9  # a stop rate after the fix at or above this: metadata was all the model lacked


@dataclass
class FixReport:
    """What `fix` changed, and the stop rates measured before and after (None: no data given)."""

    out: Path
    changes: list[str] = field(default_factory=list)
    before: float | None = None
    after: float | None = None

    def lines(self) -> list[str]:
        out = [f"wrote {self.out}"]
        out += [f"changed: {c}" for c in self.changes] or ["nothing to change: the metadata was right"]
        if self.after is not None:
            out.append(f"stop rate on the held-out prompts: {self.before:.0%} before, {self.after:.0%} after")
            if self.after < ENOUGH and self.after > (self.before or 0):
                out.append(
                    f"the rest ({1 - self.after:.0%} of replies ran to the token limit) is the weights': training with "
                    "the stop token in the labels (`eosguard train`) is what makes them stop"
                )
            elif self.after < ENOUGH:
                out.append(
                    "the weights themselves rarely emit the stop token: metadata cannot fix a model trained with it "
                    "masked; train again with `eosguard train` (labels by position, a pad that is no stop token)"
                )
        return out


def fix(
    target: str | Path,
    out: str | Path,
    *,
    data: list[str] | None = None,
    template: str | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    add_pad: bool = False,
) -> FixReport:
    """Repair a model folder or a GGUF file into `out` and measure it (see the module doc); add_pad: a folder may get a
    new pad token (and its embedding row) where no existing token can pad."""
    target, out = Path(target), Path(out)
    if out.exists():
        raise EosguardError(f"{out} exists: eosguard fix writes a new folder or file, never over one")
    if not target.exists():
        raise EosguardError(f"{target}: no such model folder or GGUF file")
    convs = None
    if data:
        from eosguard.data.records import load_conversations

        convs, _ = load_conversations(data)
    if target.is_file():
        return _fix_gguf(target, out, convs, template, max_new_tokens)
    return _fix_folder(target, out, convs, template, max_new_tokens, add_pad)


def _take_template(tok: Any, where: Path, has_one: bool, template: str | None) -> bool:
    """Give `tok` the chat template named by --template (`chatml`, or a folder to take one from); an error when the
    model has none and none is named. True when a template was taken."""
    if template is None and not has_one:
        raise EosguardError(f"{where}: no chat template", hint="give --template chatml, or a folder to take one from")
    if template is not None:
        tok.chat_template = _template_source(template)
    return template is not None


def _template_source(name: str) -> str:
    from eosguard.base.loading import load_tokenizer
    from eosguard.chat.families import chatml_template

    if name == "chatml":
        return chatml_template(None)
    source = load_tokenizer(name).chat_template
    if not source:
        raise EosguardError(f"--template {name}: that tokenizer has no chat template either")
    return source


def _fix_folder(
    folder: Path, out: Path, convs: Any, template: str | None, max_new_tokens: int, add_pad: bool
) -> FixReport:
    from eosguard.base.files import atomic_folder
    from eosguard.base.loading import load_model, load_tokenizer
    from eosguard.chat.tokenizer_setup import prepare_tokenizer
    from eosguard.training.saving import stop_generation_config

    tok = load_tokenizer(str(folder))
    report = FixReport(out)
    if _take_template(tok, folder, bool(tok.chat_template), template):
        report.changes.append(f"chat template: from {template}")
    before_eos, before_pad = tok.eos_token, tok.pad_token
    setup = prepare_tokenizer(tok, add_pad=add_pad)
    needs_training = [t for t in setup.added_tokens if t != tok.pad_token]
    if needs_training:
        raise EosguardError(
            f"the template needs tokens the model does not have ({', '.join(needs_training)}): that takes training",
            hint="train with eosguard train, which adds and trains them",
        )
    if tok.eos_token != before_eos:
        report.changes.append(f"tokenizer eos: {before_eos} -> {tok.eos_token} (the template's end of turn)")
    if tok.pad_token != before_pad:
        report.changes.append(f"tokenizer pad: {before_pad} -> {tok.pad_token} (no stop token)")
    elif setup.pad_kind == "kept":
        report.changes.append(
            f"tokenizer pad: kept as {tok.pad_token}: only a new token could pad apart from the stop tokens, which "
            "would change the embeddings' shape (a served model needs no pad; --add-pad adds one)"
        )
    model = load_model(str(folder))
    if convs is not None:
        report.before = _transformers_rate(model, load_tokenizer(str(folder)), convs, max_new_tokens, template)
    old = model.generation_config.eos_token_id
    cfg = stop_generation_config(model, tok)
    if cfg.eos_token_id != ([old] if isinstance(old, int) else old):
        report.changes.append(f"generation_config eos_token_id: {old} -> {cfg.eos_token_id} (every stop token)")
    with atomic_folder(out) as staging:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        if setup.added_tokens:  # only a new pad (--add-pad): a row no prediction or attention ever uses
            model.resize_token_embeddings(len(tok))
            model.save_pretrained(str(staging))
            report.changes.append(
                f"embeddings: a row for the new pad {tok.pad_token} (never predicted, never attended)"
            )
        tok.save_pretrained(str(staging))
        cfg.save_pretrained(str(staging))
        config = json.loads((staging / "config.json").read_text())
        config.update({"eos_token_id": cfg.eos_token_id[0], "pad_token_id": tok.pad_token_id})
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if convs is not None:
        report.after = _transformers_rate(str(out), load_tokenizer(str(out)), convs, max_new_tokens, None)
    return report


def _transformers_rate(model: Any, tok: Any, convs: Any, max_new_tokens: int, template: str | None) -> float:
    """Stop rate as the folder stands: generation stops where its own generation config says (a folder without a
    template is measured in the one --template names, else ChatML)."""
    from eosguard.serve.evaluation import EvalSettings, evaluate

    if not tok.chat_template:
        tok.chat_template = _template_source(template or "chatml")
    settings = EvalSettings(max_new_tokens=max_new_tokens, stop_on="model")
    return evaluate(convs, model=model, tokenizer=tok, settings=settings).stop_rate


def _fix_gguf(path: Path, out: Path, convs: Any, template: str | None, max_new_tokens: int) -> FixReport:
    from eosguard.chat.templates import ChatTemplate
    from eosguard.serve.export import describe_change, fixes, prove_stops
    from eosguard.serve.gguf_files import gguf_tokenizer, read_gguf, write_with_metadata

    info = read_gguf(path)
    tok = gguf_tokenizer(path)
    _take_template(tok, path, bool(info.template), template)
    chat = ChatTemplate(tok)
    wanted = fixes(info, chat, chat.source)
    report = FixReport(out, [describe_change(info, k, v) for k, v in wanted.items()])
    if convs is not None:
        report.before = _llamacpp_rate(path, convs, max_new_tokens)
    write_with_metadata(path, out, wanted)
    prove_stops(out, chat, "the repaired file")
    if convs is not None:
        report.after = _llamacpp_rate(out, convs, max_new_tokens)
    return report


def _llamacpp_rate(path: Path, convs: Any, max_new_tokens: int) -> float:
    from eosguard.serve.evaluation import EvalSettings, evaluate

    settings = EvalSettings(max_new_tokens=max_new_tokens)
    return evaluate(convs, model=path, engine="llamacpp", settings=settings).stop_rate
