"""LLaMA-Factory's own data path on SmolLM2, its outputs written here for tests/checks/test_frameworks.py to audit.

Runs LLaMA-Factory 0.9.5's `get_template_and_fix_tokenizer` and `get_dataset` (the code its `llamafactory-cli train`
runs before training) on eight short chats, for three configs, and keeps what it writes: the `tokenized_path`
folders (`DatasetDict.save_to_disk`) and the tokenizer files it changed:

- `qwen/`: `template: qwen` (ChatML, as SmolLM2's tokenizer ships it);
- `default/`: `template: default` (`Human: ... Assistant:`, not the tokenizer's ChatML), and `default/tokenizer/`:
  the chat template LLaMA-Factory wrote into the tokenizer;
- `cutoff/`: `template: qwen`, `cutoff_len: 24` (its `infer_seqlen` cuts the prompt, keeping a short reply);
- `qwen-cutoff48/`: `template: qwen`, `cutoff_len: 48`, on eight chats with long replies and no system message of
  their own: `infer_seqlen` cuts both sides, so each row keeps the start of LLaMA-Factory's default system prompt
  (`You are Qwen, created by Alibaba Cloud. ...`, neither user nor assistant header) and the start of the reply,
  with no `<|im_end|>`.

It needs LLaMA-Factory's own venv (it pins transformers <= 5.6, trl <= 0.24, datasets <= 4.0); its audio module
does not load against torch 2.13 and text-only preprocessing never uses it, so a stand-in is put in its place.

Run as (from the repository root, with eosguard's venv active for the model folder's path; torch the CPU build;
names after the folder: only those cases, else all of them):
    python -m venv /tmp/lf && /tmp/lf/bin/pip install torch==2.13.0 && /tmp/lf/bin/pip install llamafactory==0.9.5
    /tmp/lf/bin/python tests/inputs/llamafactory/make.py "$(python -c 'from eosguard.testing.fixtures import
        smollm2_model_dir; print(smollm2_model_dir())')" [qwen-cutoff48 ...]
"""

from __future__ import annotations

import importlib.machinery
import json
import shutil
import sys
import tempfile
import types
from pathlib import Path

_stand_in = types.ModuleType("torchaudio")  # text only: never used (not installed: its metadata says so to others)
_stand_in.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
sys.modules.setdefault("torchaudio", _stand_in)

HERE = Path(__file__).parent
SYSTEM = "You are a precise assistant. Answer with the result only."
CHATS = [
    [("Add: 79 + 32", "111")],
    [("Add: 17 + 72", "89")],
    [("First word: meadow coral dragon", "meadow")],
    [("Last word: candle thunder velvet island", "island")],
    [("Count the words: apple river stone", "3")],
    [("Add: 5 + 8", "13"), ("Add: 40 + 2", "42")],
    [("Sort: pear apple fig", "apple fig pear")],
    [("First word: lemon falcon island", "lemon"), ("Last word: ember pillow needle", "needle")],
]
LONG_REPLY = (
    "is worth a careful description. It has a long history, many parts that work together, and a few details that "
    "most people never notice. First, consider its shape and size; then how it is made; finally, how it is used every "
    "day by people who rarely think about it at all."
)
# Replies far longer than the cutoff, and no system message: LLaMA-Factory writes its template's default one.
LONG_CHATS = [
    [(f"Describe the {thing} in detail.", f"The {thing} {LONG_REPLY}")]
    for thing in ("river", "bridge", "lighthouse", "violin", "glacier", "library", "compass", "orchard")
]
CONFIGS = {  # name -> (data set, LLaMA-Factory arguments)
    "qwen": ("chats", {"template": "qwen"}),
    "default": ("chats", {"template": "default"}),
    "cutoff": ("chats", {"template": "qwen", "cutoff_len": 24}),
    "qwen-cutoff48": ("long_chats", {"template": "qwen", "cutoff_len": 48}),
}


def _sharegpt(chat: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [t for q, a in chat for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]


def main(model_dir: str, names: list[str]) -> None:
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        rows = [{"system": SYSTEM, "conversations": _sharegpt(chat)} for chat in CHATS]
        (data / "chats.json").write_text(json.dumps(rows))
        (data / "long_chats.json").write_text(json.dumps([{"conversations": _sharegpt(chat)} for chat in LONG_CHATS]))
        info = {
            "chats": {
                "file_name": "chats.json",
                "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system"},
            },
            "long_chats": {
                "file_name": "long_chats.json",
                "formatting": "sharegpt",
                "columns": {"messages": "conversations"},
            },
        }
        (data / "dataset_info.json").write_text(json.dumps(info))
        for name, (dataset, extra) in CONFIGS.items():
            if names and name not in names:
                continue
            out = HERE / name
            shutil.rmtree(out, ignore_errors=True)
            args = {
                "stage": "sft",
                "do_train": True,
                "model_name_or_path": model_dir,
                "dataset": dataset,
                "dataset_dir": str(data),
                "finetuning_type": "lora",
                "output_dir": str(Path(tmp) / "out" / name),
                "tokenized_path": str(out / "tokenized"),
                "overwrite_cache": True,
                "report_to": "none",
                "cutoff_len": 1024,
                **extra,
            }
            model_args, data_args, training_args, _, _ = get_train_args(args)
            tokenizer = load_tokenizer(model_args)["tokenizer"]
            template = get_template_and_fix_tokenizer(tokenizer, data_args)
            get_dataset(template, model_args, data_args, training_args, "sft", tokenizer)
            if name == "default":  # the tokenizer as LLaMA-Factory leaves it: its template, not ChatML
                tokenizer.save_pretrained(str(out / "tokenizer"))
                (out / "tokenizer" / "tokenizer.json").unlink()  # SmolLM2's own vocabulary: the test puts it back
            print(name, "->", out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
