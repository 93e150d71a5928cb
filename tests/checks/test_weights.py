"""`doctor --model` reads the stop tokens' own rows (safetensors, never the whole model): a `<|im_end|>` added to a
base model and never trained is found; trained, it passes; an adapter is read for whether it trains them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from eosguard.chat.tokenizer_setup import prepare_tokenizer
from eosguard.checks.weights import UNTRAINED, stop_rows
from eosguard.cli.app import app
from eosguard.testing.fixtures import mistral_base_tokenizer, tiny_mistral
from tests.conftest import DATA


def doctor(*args):
    result = CliRunner().invoke(app, ["doctor", *map(str, args), "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.slow
def test_a_new_stop_tokens_rows_untrained_then_trained(tmp_path, task_files):
    tok = mistral_base_tokenizer()
    model = tiny_mistral(len(tok), hidden=64, layers=2, bos_id=1, eos_id=2, pad_id=None)
    prepare_tokenizer(tok)  # ChatML: <|im_start|> / <|im_end|> added, as a LoRA recipe on a base model would
    model.resize_token_embeddings(len(tok))  # the new rows start at the vocabulary's mean
    model.generation_config.eos_token_id = [2, tok.convert_tokens_to_ids("<|im_end|>")]
    folder = tmp_path / "base-plus-chatml"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)

    end = tok.convert_tokens_to_ids("<|im_end|>")
    (state,) = stop_rows(folder, ["<|im_end|>"], [end])
    assert state.input < UNTRAINED and state.output < UNTRAINED
    code, report = doctor("--tokenizer", folder, "--model", folder)
    assert code == 1 and "stop-token-untrained" in [f["id"] for f in report["findings"]]
    assert f"<|im_end|> (id {end})" in next(
        f["message"] for f in report["findings"] if f["id"] == "stop-token-untrained"
    )

    out = tmp_path / "trained"
    sets = {"model": folder, "data.train": f"[{task_files['train']}]", "output_dir": out, "max_steps": 5}
    args = ["train", str(DATA / "tiny.yaml")] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    code, report = doctor("--tokenizer", out / "model", "--model", out / "model")
    assert "stop-token-untrained" not in [f["id"] for f in report["findings"]]
    step = next(s for s in report["steps"] if s["title"] == "stop-token rows")
    assert step["ok"] and "<|im_end|> input" in step["detail"]

    # A LoRA adapter on the untrained base: it must train those rows itself.
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"base_model_name_or_path": str(folder), "peft_type": "LORA", "target_modules": ["q_proj"]}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    code, report = doctor("--tokenizer", folder, "--model", adapter)
    assert code == 1 and "stop-token-untrained" in [f["id"] for f in report["findings"]]
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": ["embed_tokens", "lm_head"]}))
    code, report = doctor("--tokenizer", folder, "--model", adapter)
    assert "stop-token-untrained" not in [f["id"] for f in report["findings"]]
