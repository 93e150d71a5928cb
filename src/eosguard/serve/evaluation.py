"""One entry that measures stopping in every engine: `evaluate`.

- transformers: a model folder or hub id (loaded), or a model already in memory with its tokenizer (the demos);
- llama.cpp: a GGUF file, or a model folder converted first by `eosguard export gguf` into a temporary file that is
  deleted afterwards (a GGUF can be gigabytes);
- an OpenAI-compatible endpoint (vLLM, llama.cpp's server, Ollama, ...): its URL.

`eosguard eval`, `eosguard fix` and both demos measure through it, so their figures are one set
(`eosguard.checks.evaluate.StopReport`, `figures`), and the engine's name travels with them.

Run as:
    eosguard eval --model runs/x/model --data heldout.jsonl [--engine llamacpp | --endpoint URL]
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eosguard.base.errors import EosguardError
from eosguard.chat.settings import MAX_NEW_TOKENS
from eosguard.checks.evaluate import StopReport
from eosguard.data.conversations import Conversation

EngineName = Literal["transformers", "llamacpp", "endpoint"]
StopOn = Literal["template", "model"]


@dataclass(frozen=True)
class EvalSettings:
    """How generation runs, in every engine. stop_on (transformers): the template's stop tokens ("template": do the
    weights stop?) or the model's own generation config ("model": what `generate()` and vLLM stop on). Served
    engines stop where their own metadata says; they decode greedily (temperature 0)."""

    max_new_tokens: int = MAX_NEW_TOKENS
    batch_size: int = 32
    sample: bool = False
    temperature: float = 1.0
    seed: int = 0
    stop_on: StopOn = "template"
    template_args: Mapping[str, Any] = field(default_factory=dict)
    tools: Sequence[dict[str, Any]] | None = None


def evaluate(
    conversations: Sequence[Conversation],
    *,
    model: str | Path | Any = None,
    engine: EngineName = "transformers",
    endpoint: str | None = None,
    tokenizer: str | Any = None,
    settings: EvalSettings | None = None,
    advance: Callable[[int], None] | None = None,
) -> StopReport:
    """Generate a reply to every conversation's last turn in `engine` and measure how it ends (see the module doc).

    model: transformers: a folder, a hub id or a loaded model; llamacpp: a GGUF file or a folder to convert;
    endpoint: the served model's name, if the server wants one. tokenizer: a folder, hub id or loaded tokenizer
    (transformers: default the model's; served: the one that reads role leaks, default the GGUF's own; none for an
    endpoint: role leaks not measured). `endpoint` implies engine "endpoint".
    """
    s = settings or EvalSettings()
    if endpoint is not None:
        engine = "endpoint"
    if engine == "transformers":
        return _transformers(conversations, model, tokenizer, s, advance)
    if engine == "llamacpp":
        if model is None:
            raise EosguardError("--engine llamacpp needs --model: a GGUF file, or a model folder to convert")
        with _as_gguf(Path(model)) as path:
            from eosguard.serve.engines import LlamaCpp
            from eosguard.serve.gguf_files import gguf_tokenizer

            tok = _tokenizer(tokenizer) if tokenizer is not None else gguf_tokenizer(path)
            return _served(LlamaCpp(path), conversations, tok, s, advance)
    if engine == "endpoint":
        if endpoint is None:
            raise EosguardError("the endpoint engine needs --endpoint URL")
        from eosguard.serve.engines import Endpoint

        served_name = None if model is None else str(model)
        tok = _tokenizer(tokenizer) if tokenizer is not None else None
        return _served(Endpoint(endpoint, model=served_name), conversations, tok, s, advance)
    raise EosguardError(f"engine {engine!r}: expected transformers, llamacpp or endpoint")


def _tokenizer(tokenizer: str | Any) -> Any:
    from eosguard.base.loading import load_tokenizer

    return load_tokenizer(str(tokenizer)) if isinstance(tokenizer, str | Path) else tokenizer


def _transformers(
    convs: Sequence[Conversation], model: Any, tokenizer: Any, s: EvalSettings, advance: Any
) -> StopReport:
    import copy

    import torch

    from eosguard.base.loading import load_model
    from eosguard.chat.render import ChatRenderer
    from eosguard.chat.template_args import with_arguments
    from eosguard.checks.evaluate import evaluate_stopping

    if model is None:
        raise EosguardError("give --model (a model folder or hub id)")
    on_disk = isinstance(model, str | Path)
    if tokenizer is None and not on_disk:
        raise EosguardError("a model in memory needs its tokenizer")
    tok = _tokenizer(tokenizer if tokenizer is not None else str(model))
    if s.template_args:
        tok = copy.deepcopy(tok)
        tok.chat_template = with_arguments(tok.chat_template or "", dict(s.template_args))
    loaded = load_model(str(model)) if on_disk else model
    stops = None
    if s.stop_on == "model":
        eos = loaded.generation_config.eos_token_id if loaded.generation_config is not None else None
        stops = [eos] if isinstance(eos, int) else list(eos or [])
    torch.manual_seed(s.seed)
    report = evaluate_stopping(
        loaded,
        tok,
        convs,
        max_new_tokens=s.max_new_tokens,
        batch_size=s.batch_size,
        do_sample=s.sample,
        temperature=s.temperature,
        renderer=ChatRenderer(tok, tools=s.tools),
        advance=advance,
        stop_ids=stops or None,
    )
    report.engine = "transformers" + (" (stopping on the model's generation config)" if s.stop_on == "model" else "")
    return report


@contextlib.contextmanager
def _as_gguf(path: Path) -> Any:
    """The GGUF file itself, or a model folder converted into a temporary one, deleted on the way out."""
    if not path.is_dir():
        yield path
        return
    from eosguard.serve.export import export_gguf

    with tempfile.TemporaryDirectory(prefix="eosguard-eval-") as tmp:
        yield export_gguf(path, Path(tmp) / "model.gguf").path


def _served(engine: Any, convs: Sequence[Conversation], tok: Any, s: EvalSettings, advance: Any) -> StopReport:
    from eosguard.serve.engines import evaluate_served, role_leaks

    with contextlib.closing(engine):
        report = evaluate_served(
            engine,
            convs,
            max_new_tokens=s.max_new_tokens,
            tools=s.tools,
            template_args=dict(s.template_args),
            leaks=None if tok is None else role_leaks(tok),
            advance=advance,
        )
    report.engine = engine.name
    return report


__all__ = ["EngineName", "EvalSettings", "StopOn", "evaluate"]
