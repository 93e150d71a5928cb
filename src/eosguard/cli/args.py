"""The options of the `eosguard` commands, declared once: the same name, type, help and default wherever an option
appears. Choices are `Literal` types, so typer checks them and `--help` lists them. Nothing heavy is imported here
(`eosguard --help` loads neither numpy nor torch: a test holds it).

Run as:
    eosguard eval --help
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from eosguard.chat.settings import MAX_NEW_TOKENS, OverLength, TrainOn

Tokenizer = Annotated[
    str | None, typer.Option(help="Tokenizer folder or hub id (its tokenizer files are read, nothing else).")
]
MODEL_HELP = (
    "Model folder or hub id; a GGUF file where the command takes one (fix; eval --engine llamacpp); with eval "
    "--endpoint, the served model's name. The doctor reads only its config.json and generation_config.json."
)
Model = Annotated[str | None, typer.Option(help=MODEL_HELP)]
ModelPath = Annotated[Path, typer.Option("--model", help=MODEL_HELP)]
DATA_HELP = (
    "Conversations: JSONL files or `datasets` folders; repeatable (held-out ones for eval and fix: the last reply of "
    "each is the reference)."
)
Data = Annotated[list[str] | None, typer.Option(help=DATA_HELP)]
HeldOut = Annotated[list[str], typer.Option("--data", help=DATA_HELP)]
SkipInvalid = Annotated[
    bool, typer.Option("--skip-invalid", help="Skip malformed records (counted) instead of stopping at the first.")
]
TemplateArgs = Annotated[
    list[str] | None,
    typer.Option(
        "--template-arg",
        help="A chat-template argument, KEY=VALUE (value read as YAML), e.g. enable_thinking=false; repeatable.",
    ),
]
Tools = Annotated[
    Path | None, typer.Option(help="JSON file of function schemas for conversations that bring no `tools`.")
]
MaxNewTokens = Annotated[int, typer.Option(min=1, help="Generation budget per prompt.")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Show = Annotated[
    int,
    typer.Option("--show", min=0, help="Print N examples: the doctor's collated rows token by token, eval's replies."),
]
OUT_HELP = "Where the result goes: a new folder or file (the command's help says which)."
Out = Annotated[Path, typer.Option(help=OUT_HELP)]
MAX_LENGTH_HELP = "Longest example in tokens (the doctor: the training run's, for its truncation checks)."
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow code shipped with the tokenizer or model.")
]

Engine = Literal["transformers", "llamacpp"]
StopOn = Literal["template", "model"]
OutType = Literal["f16", "bf16", "q8_0", "f32"]
DemoModel = Literal["tiny", "smollm2"]

__all__ = [
    "MAX_NEW_TOKENS",
    "Data",
    "DemoModel",
    "Engine",
    "HeldOut",
    "Json",
    "MaxNewTokens",
    "Model",
    "ModelPath",
    "Out",
    "OutType",
    "OverLength",
    "Show",
    "SkipInvalid",
    "StopOn",
    "TemplateArgs",
    "Tokenizer",
    "Tools",
    "TrainOn",
    "TrustRemoteCode",
]
