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
    "--endpoint, the served model's name. The doctor reads its config.json, generation_config.json and the stop "
    "tokens' own rows of its weights (a PEFT adapter folder: what it trains, and its local base's rows)."
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
MAX_LENGTH_HELP = (
    "Longest example in tokens (the doctor: the training run's, for its truncation checks; on preference data TRL's "
    "max_length, 1024 unless given)."
)
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Allow code shipped with the tokenizer or model.")
]

# The doctor's own options (the typed group they fill: `eosguard.recipes.doctor.DoctorOptions`).
Prepared = Annotated[
    Path | None,
    typer.Option(
        help="Rows another tool wrote (a `datasets` folder, parquet, JSONL or Arrow: input_ids with labels, "
        "assistant_masks or completion_mask; without any, --collator builds the labels)."
    ),
]
TrainingConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="An axolotl or LLaMA-Factory training config: its stop-token settings, its data."),
]
Gguf = Annotated[
    Path | None, typer.Option(help="A GGUF file: what llama.cpp / Ollama stop on (with --tokenizer: as trained).")
]
Modelfile = Annotated[
    Path | None,
    typer.Option(help="An Ollama Modelfile: its TEMPLATE and stop lines (with --tokenizer: as trained)."),
]
DoctorMaxLength = Annotated[int | None, typer.Option(min=9, help=MAX_LENGTH_HELP)]
TruncationModeOption = Annotated[
    Literal["keep_start", "keep_end"],
    typer.Option(
        "--truncation-mode",
        help="Preference data: TRL's collator keeps the start of prompt + completion at --max-length (keep_start, "
        "TRL's default and KTO's only mode) or the end (keep_end, deprecated in TRL 1.16); the report says what the "
        "other would do.",
    ),
]
Collator = Annotated[str, typer.Option(help="eosguard | transformers | trl | MODULE:FACTORY")]
Compare = Annotated[str | None, typer.Option(help="A second collator beside --collator (e.g. eosguard).")]
Lora = Annotated[bool, typer.Option("--lora", help="The run uses LoRA without training the embedding rows.")]
Html = Annotated[Path | None, typer.Option(help="Write the label viewer: one self-contained HTML page.")]

Engine = Literal["transformers", "llamacpp"]
StopOn = Literal["template", "model"]
OutType = Literal["f16", "bf16", "q8_0", "f32"]
DemoModel = Literal["tiny", "smollm2"]

# train
TrainConfigFile = Annotated[Path, typer.Argument(help="YAML config (every key: docs/training.md).")]
Sets = Annotated[
    list[str] | None, typer.Option("--set", help="Override a key: --set lr=1e-4 --set data.train=[a.jsonl]")
]
Force = Annotated[bool, typer.Option("--force", help="Train even when the doctor finds errors (loudly).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")]

# eval
EngineOption = Annotated[
    Engine,
    typer.Option("--engine", help="transformers (generate) | llamacpp (llama.cpp's server in process, from a GGUF)."),
]
Endpoint = Annotated[
    str | None, typer.Option(help="An OpenAI-compatible server (vLLM, llama-server, Ollama, TGI): its base URL.")
]
BatchSize = Annotated[int, typer.Option(min=1, help="Prompts generated together (transformers).")]
Sample = Annotated[bool, typer.Option("--sample", help="Sample (temperature) instead of greedy decoding.")]
Temperature = Annotated[float, typer.Option(min=0.01)]
StopOnOption = Annotated[
    StopOn,
    typer.Option(
        "--stop-on",
        help="transformers: stop on the template's stop tokens (template: do the weights stop?) or on the "
        "folder's own generation_config.json (model: what generate() stops on; vLLM adds the tokenizer's eos).",
    ),
]
Limit = Annotated[int | None, typer.Option(min=1, help="Evaluate the first N conversations only.")]
Seed = Annotated[int, typer.Option(help="Seed for sampling.")]

# fix, export gguf
FixTemplate = Annotated[
    str | None, typer.Option(help="A chat template for a model that has none: chatml, or a tokenizer folder.")
]
AddPad = Annotated[
    bool, typer.Option("--add-pad", help="Add a new pad token (one more embedding row) where no existing one can pad.")
]
OutTypeOption = Annotated[OutType, typer.Option("--outtype", help="The weights' type in the file.")]
Ollama = Annotated[bool, typer.Option("--ollama", help="Also write an Ollama Modelfile: its TEMPLATE and stop lines.")]

# demo
OutOption = Annotated[Path, typer.Option("--out", help=OUT_HELP)]
Quick = Annotated[bool, typer.Option("--quick", help="A smaller, faster run (figures are weaker).")]
DemoModelOption = Annotated[
    DemoModel,
    typer.Option("--model", help="tiny: a tiny Mistral trained here; smollm2: the real SmolLM2-135M-Instruct."),
]
DemoStage = Literal["sft", "dpo"]
DemoStageOption = Annotated[
    DemoStage,
    typer.Option(
        "--stage",
        help="sft: the SFT bug and its fix; dpo: DPO (TRL as users run it vs eosguard's rows) and GRPO's stop set, "
        "after eosguard's SFT (--model smollm2).",
    ),
]

# prepare
PrepareData = Annotated[list[str], typer.Argument(help="Conversations: JSONL files or `datasets` folders.")]
MaxLength = Annotated[int, typer.Option(min=9, help=MAX_LENGTH_HELP)]
OverLengthOption = Annotated[
    OverLength, typer.Option("--over-length", help="Longer examples: drop, truncate keeping the stop token, or error.")
]
TrainOnOption = Annotated[TrainOn, typer.Option("--train-on", help="all | last | each (one example per reply)")]
NumProc = Annotated[int | None, typer.Option(min=1, help="Processes that render and tokenize (default: one per core).")]

__all__ = [
    "MAX_NEW_TOKENS",
    "AddPad",
    "BatchSize",
    "Collator",
    "Compare",
    "Data",
    "DemoModel",
    "DemoModelOption",
    "DemoStage",
    "DemoStageOption",
    "DoctorMaxLength",
    "Endpoint",
    "Engine",
    "EngineOption",
    "FixTemplate",
    "Force",
    "Gguf",
    "HeldOut",
    "Html",
    "Json",
    "Limit",
    "Lora",
    "MaxLength",
    "MaxNewTokens",
    "Model",
    "ModelPath",
    "Modelfile",
    "NumProc",
    "Ollama",
    "Out",
    "OutOption",
    "OutType",
    "OutTypeOption",
    "OverLength",
    "OverLengthOption",
    "PrepareData",
    "Prepared",
    "Quick",
    "Resume",
    "Sample",
    "Seed",
    "Sets",
    "Show",
    "SkipInvalid",
    "StopOn",
    "StopOnOption",
    "Temperature",
    "TemplateArgs",
    "Tokenizer",
    "Tools",
    "TrainConfigFile",
    "TrainOn",
    "TrainOnOption",
    "TrainingConfigFile",
    "TruncationModeOption",
    "TrustRemoteCode",
]
