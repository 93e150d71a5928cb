"""`eosguard train` with `method: dpo | kto`: TRL's trainers on eosguard's rows, through the CLI; the saved folder
stops by itself (every closer in its generation config, pad never eos); checkpoints resume; data of the other kind
and SFT-only settings are refused with their reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eosguard.cli.app import app
from tests.conftest import DATA

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    with (root / "pairs.jsonl").open("w") as f, (root / "kto.jsonl").open("w") as g:
        for i in range(24):
            prompt = [{"role": "user", "content": f"What is {i} + {i}?"}]
            good, bad = {"role": "assistant", "content": str(2 * i)}, {"role": "assistant", "content": "No idea."}
            f.write(json.dumps({"prompt": prompt, "chosen": [good], "rejected": [bad]}) + "\n")
            g.write(json.dumps({"prompt": prompt, "completion": [good], "label": True}) + "\n")
    return {"pairs": root / "pairs.jsonl", "kto": root / "kto.jsonl"}


def train(tiny_model_dir, out, data, *extra: str):
    sets = {"model": tiny_model_dir, "data.train": f"[{data}]", "output_dir": out, "method": "dpo", "max_steps": 2,
            "batch_size": 4, "data.eval_fraction": 0.1}  # fmt: skip
    args = ["train", str(DATA / "tiny.yaml")] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    return CliRunner().invoke(app, [*args, *extra])


def test_dpo_run_saves_a_folder_that_stops_by_itself_and_resumes(tiny_model_dir, pairs, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_model_dir, out, pairs["pairs"], "--set", "save_steps=1")
    assert result.exit_code == 0, result.output
    assert "every completion ending with its closing sequence once" in result.output
    folder = out / "model"
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    gen = json.loads((folder / "generation_config.json").read_text())
    vocab = json.loads((folder / "tokenizer.json").read_text())
    im_end = next(t["id"] for t in vocab["added_tokens"] if t["content"] == "<|im_end|>")
    assert im_end in gen["eos_token_id"] and gen["pad_token_id"] not in gen["eos_token_id"]
    assert tok["eos_token"] == "<|im_end|>" and tok["pad_token"] != "<|im_end|>"  # TRL would have set pad = eos
    summary = json.loads((folder / "eosguard.json").read_text())
    assert summary["train"]["steps"] == 2 and summary["config"]["method"] == "dpo"
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    again = train(tiny_model_dir, out, pairs["pairs"], "--set", "save_steps=1", "--set", "max_steps=3", "--resume")
    assert again.exit_code == 0 and "resuming from" in again.output and "checkpoint-2" in again.output, again.output
    assert json.loads((folder / "eosguard.json").read_text())["train"]["steps"] == 3


def test_the_wrong_kind_of_data_and_sft_settings_are_refused(tiny_model_dir, pairs, tmp_path):
    result = train(tiny_model_dir, tmp_path / "a", pairs["kto"])
    assert result.exit_code == 2 and "trains on paired records, and these hold unpaired" in result.output
    result = train(tiny_model_dir, tmp_path / "b", pairs["pairs"], "--set", "packing=rows")
    assert result.exit_code == 2 and "packing: SFT settings, not for `method: dpo`" in result.output
    result = train(tiny_model_dir, tmp_path / "c", pairs["kto"], "--set", "method=kto", "--set", "data.eval_fraction=0")
    assert result.exit_code == 0, result.output
