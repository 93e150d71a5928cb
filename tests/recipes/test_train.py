"""`eosguard train` end to end on a tiny model, reloaded with plain transformers; config errors before loading."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from eosguard.cli.app import app

runner = CliRunner()
YAML = Path(__file__).parents[1] / "inputs" / "tiny.yaml"


def train(*args):
    result = runner.invoke(app, ["train", str(YAML), *map(str, args)])
    return result.exit_code, result.output


def test_train_saves_a_folder_that_stops_by_itself(train_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, code, log = train_run
    assert code == 0, log
    assert "pad token: <unk> (id 0)" in log and "eval: stop rate" in log
    folder = out / "model"
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.pad_token_id not in (None, im_end)
    assert model.generation_config.eos_token_id[0] == im_end  # was </s> (2) in the input folder
    summary = json.loads((folder / "eosguard.json").read_text())
    assert summary["train"]["steps"] == 40 and summary["eval"]["stop_rate"] >= 0.9

    messages = [{"role": "user", "content": "Repeat: apple river stone"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out_ids = model.generate(**prompt, max_new_tokens=24, do_sample=False)[0, prompt["input_ids"].shape[1] :]
    # No eos argument given: generation_config alone stops it at <|im_end|>.
    assert out_ids[-1].item() == im_end and len(out_ids) < 24
    # transformers.pipeline with a list of messages: the saved template and generation_config make it stop.
    from transformers import pipeline

    chat = pipeline("text-generation", model=str(folder), tokenizer=str(folder))
    reply = chat(messages, max_new_tokens=24, do_sample=False)[0]["generated_text"][-1]
    assert reply["role"] == "assistant"
    assert (
        len(tok(reply["content"], add_special_tokens=False)["input_ids"]) < 23
        and "<|im_start|>" not in reply["content"]
    )
    assert tok.decode(out_ids[:-1]) == reply["content"]

    model.generation_config.eos_token_id = 2  # what the input folder said: then it does not stop there
    with torch.no_grad():
        no_stop = model.generate(**prompt, max_new_tokens=24, do_sample=False)[0, prompt["input_ids"].shape[1] :]
    assert len(no_stop) == 24 and no_stop[len(out_ids) - 1].item() == im_end


def test_lora_on_new_token_trains_its_rows_and_packing(tiny_base_model_dir, task_files, tmp_path):
    out = tmp_path / "lora"
    code, log = train(
        "--set",
        f"model={tiny_base_model_dir}",
        "--set",
        f"data.train=[{task_files['train']}]",
        "--set",
        f"output_dir={out}",
        "--set",
        "max_steps=3",
        "--set",
        "packing=true",
        "--set",
        "lora={r: 4, alpha: 8}",
    )
    assert code == 0, log
    assert "added <|im_start|>, <|im_end|>" in log and "embeddings resized 32000 -> 32002" in log
    assert "modules_to_save = embed_tokens, lm_head" in log and "packing:" in log
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "model")  # merged: loads without peft
    assert model.get_input_embeddings().weight.shape[0] == 32002


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("colour=blue", "colour: unknown key"),
        ("lr=0", "lr: Input should be greater than 0"),
        ("lr=-1e-4", "lr: Input should be greater than 0"),
        ("batch_size=many", "batch_size: Input should be a valid integer"),
        ("data.train=[/no/such/file.jsonl]", "no such file or folder: /no/such/file.jsonl"),
        ("over_length=maybe", "over_length: Input should be 'drop', 'truncate' or 'error'"),
    ],
)
def test_bad_config_exit_2_before_any_model_is_loaded(override, message, tmp_path, task_files, monkeypatch):
    import eosguard.recipes.train as train_module

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(train_module, "load_model", boom)
    base = ["--set", "model=./no-model-needed", "--set", f"data.train=[{task_files['train']}]"]
    if override.startswith("data.train"):
        base = ["--set", "model=./no-model-needed"]
    code, log = train(*base, "--set", override)
    assert code == 2 and message in log and "Traceback" not in log


def test_missing_config_and_malformed_yaml(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "no such config file" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 2 and "malformed YAML" in result.output
