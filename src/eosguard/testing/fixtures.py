"""Test material: every tested family's tokenizer rebuilt on a real vocabulary with its real chat template, TRL's
templates on SmolLM2's real tokenizer, and the docs' table of what eosguard reads off each (no runtime module imports
this; the offline models themselves are `eosguard.recipes.offline_models`).

- `family_tokenizer(name, pad)`: each family of `eosguard.testing.families.FAMILIES` (Llama-3, Gemma, Phi-3, Mistral
  v3/v7, Qwen2.5, Qwen3, gpt-oss, ...);
- `trl_tokenizer(name)`: SmolLM2's tokenizer with each real template TRL ships (`TRL_TEMPLATES`);
- `demo_tokenizer()`: the OpenHermes-style tokenizer after `prepare_tokenizer` (doctests and tests);
- `template_table()`: the table of TRL's templates in docs/templates.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from eosguard.chat.tokenizer_setup import add_control_tokens
from eosguard.recipes.offline_models import (
    SENTENCEPIECE_FILES,
    cache_dir,
    mistral_base_tokenizer,
    mistral_common_file,
    openhermes_tokenizer,
    package_file,
    sentencepiece_tokenizer,
    smollm2_gguf_path,
    smollm2_model_dir,
    smollm2_tokenizer,
    tekken_tokenizer,
    tiny_mistral,
)
from eosguard.testing.families import FAMILIES, TRL_TEMPLATES, Family


def demo_tokenizer() -> Any:
    """The OpenHermes-style tokenizer after `prepare_tokenizer`: what eosguard trains with in the demo and tests."""
    from eosguard.chat.tokenizer_setup import prepare_tokenizer

    tok = openhermes_tokenizer()
    prepare_tokenizer(tok)
    return tok


# -- template families -------------------------------------------------------------------------------------------

FamilyPad = Literal["shipped", "eot", "none"]


def trl_template(name: str) -> str:
    """A real chat template from TRL's `chat_templates/` folder (read as a file; TRL is not imported)."""
    return package_file("trl", "chat_templates", name, hint="pip install 'eosguard[trl]'").read_text()


def _set_bos(tok: Any, bos: str | None, adds_bos: bool) -> None:
    """Make encoding add `bos` (as the family's tokenizer does) or nothing."""
    from tokenizers import processors

    tok.bos_token = bos
    if adds_bos and bos is not None:
        bos_id = tok.convert_tokens_to_ids(bos)
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    else:
        tok.backend_tokenizer.post_processor = None
    tok.add_bos_token = adds_bos


def family_tokenizer(name: str, pad: FamilyPad = "shipped", *, base: bool = False) -> Any:
    """A family's tokenizer as its instruct model ships it (see `eosguard.chat.templates.FAMILIES`).

    pad: "shipped" as the model ships it; "eot" pad = the end-of-turn token (the bug report's setup in that
    family: unsloth#416 for Llama-3); "none" no pad token. base: eos as the family's *base* model has it.
    """
    family = FAMILIES[name]
    if family.vocab == "smollm2":
        tok = smollm2_tokenizer()
    else:
        tok = tekken_tokenizer() if family.vocab == "tekken" else sentencepiece_tokenizer(family.vocab)
        if family.tokens:
            vocab = tok.get_vocab()  # a dict copy of the whole vocabulary per call: taken once
            add_control_tokens(tok, [t for t in family.tokens if t not in vocab])
        tok.chat_template = _template_source(family)
        _set_bos(tok, family.bos, adds_bos=family.bos is not None and name not in ("phi3",))
        tok.eos_token = family.eos
        tok.pad_token = family.pad
        tok.padding_side = "right"
    if base and family.base_eos:
        tok.eos_token = family.base_eos
    if pad == "eot":
        tok.pad_token = family.end_of_turn
    elif pad == "none":
        tok.pad_token = None
    return tok


def _template_source(family: Family) -> str:
    if family.template.startswith("trl:"):
        return trl_template(family.template.removeprefix("trl:"))
    if family.template == "mistral-common":
        from mistral_common.integrations.chat_templates.chat_templates import convert_tokenizer_to_chat_template

        return convert_tokenizer_to_chat_template(str(mistral_common_file(SENTENCEPIECE_FILES[family.vocab])))
    return family.template


# Control tokens as templates write them: <|name|>, <｜name｜> (DeepSeek), <|name> / <name|> (Gemma 4), [NAME].
_TOKEN_TEXT = re.compile(
    r"<\|[^<>|\s']{1,40}\|>|<｜[^｜]{1,40}｜>|<\|[a-z_\"]{1,20}>|<[a-z_]{1,20}\|>|\[[A-Z_]{2,20}\]"
)


def trl_tokenizer(name: str, *, tags: bool = True) -> Any:
    """SmolLM2's real tokenizer with one of TRL's chat templates (`eosguard.testing.families.TRL_TEMPLATES`): the
    control tokens the template writes added, bos / eos as the model ships them, and a pad distinct from every one of
    them. tags=False leaves the plain tags (`<think>`, `</think>`) as the text SmolLM2's vocabulary splits them into."""
    spec = TRL_TEMPLATES[name]
    source = trl_template(f"{name}.jinja")
    tok = smollm2_tokenizer()
    wanted = [*dict.fromkeys(m.group(0) for m in _TOKEN_TEXT.finditer(source)), *(spec.tags if tags else ())]
    wanted += [t for t in (spec.bos, spec.eos) if t]
    vocab = tok.get_vocab()
    add_control_tokens(tok, [t for t in dict.fromkeys(wanted) if t not in vocab])
    tok.chat_template = source
    tok.bos_token = spec.bos
    tok.eos_token = spec.eos
    tok.pad_token = "<|endoftext|>" if spec.eos != "<|endoftext|>" else None
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": "<|fixture_pad|>"})
    tok.padding_side = "right"
    return tok


def template_table(tokenizer: Callable[[str], Any] | None = None) -> str:
    """The docs' table of TRL's templates (`docs/templates.md`), read off each template by eosguard itself: what
    closes a final answer and a tool call, how a two-exchange chat is trained, how that differs from TRL's mask.
    `tokenizer`: name -> its tokenizer (default `trl_tokenizer`; the tests pass the ones they already built)."""
    from eosguard.chat.render import ChatRenderer
    from eosguard.data.conversations import conversation
    from eosguard.testing.families import DIFFERENCES

    conv = conversation(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye"), ("assistant", "See you"))
    rows = [
        "| model | TRL template | final answers end with | tool calls end with | two exchanges train as | differs "
        "from TRL's mask |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in sorted(TRL_TEMPLATES.items(), key=lambda kv: kv[1].model.lower()):
        r = ChatRenderer((tokenizer or trl_tokenizer)(name))
        closers = r.template.closers
        examples = r.render(conv)
        why = ["the first reply rewritten in history"] if any(e.own and not e.treated for e in examples) else []
        why += ["the prompt's opened `<think>` closed empty"] if any(e.treated for e in examples) else []
        how = "one example" if len(examples) == 1 else f"{len(examples)} examples ({'; '.join(why)})"
        ends = [
            "`" + "".join(closers[k].sequence) + "`" + (" (next turn's, appended)" if closers[k].appended else "")
            if k in closers
            else "not rendered"
            for k in ("reply", "tool_call")
        ]
        cells = [spec.model, f"`{name}.jinja`", *ends, how, ", ".join(spec.differences) or "none"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")  # a pipe inside a cell: escaped
    legend = [f"- `{key}`: {why}" for key, why in DIFFERENCES.items()]
    return "\n".join([*rows, "", "What each difference is, and why eosguard trains its way:", "", *legend])


__all__ = [  # the offline models too, so tests, doctests and benchmarks take all their material from one module
    "cache_dir",
    "demo_tokenizer",
    "family_tokenizer",
    "mistral_base_tokenizer",
    "openhermes_tokenizer",
    "sentencepiece_tokenizer",
    "smollm2_gguf_path",
    "smollm2_model_dir",
    "smollm2_tokenizer",
    "tekken_tokenizer",
    "template_table",
    "tiny_mistral",
    "trl_template",
    "trl_tokenizer",
]
