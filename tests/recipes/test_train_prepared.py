"""`eosguard train` from a folder written by `eosguard prepare`: the same training as from the conversations, checked
against the run's tokenizer and options, examples read on demand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eosguard.cli.app import app
from eosguard.recipes.prepare import FORMAT_VERSION

runner = CliRunner()
YAML = Path(__file__).parents[1] / "inputs" / "tiny.yaml"


def train(model, out, *sets):
    """tests/inputs/tiny.yaml with overrides; `data.prepared=...` clears the YAML's `data.train` placeholder."""
    if any(s.startswith("data.prepared=") for s in sets) and not any(s.startswith("data.train=") for s in sets):
        sets = ("data.train=[]", *sets)
    args = ["train", str(YAML), "--set", f"model={model}", "--set", f"output_dir={out}", "--set", "max_steps=8"]
    result = runner.invoke(app, args + [a for s in sets for a in ("--set", s)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def prepared(tiny_model_dir, task_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "p"
    result = runner.invoke(
        app,
        [
            "prepare",
            str(task_files["train"]),
            "--tokenizer",
            str(tiny_model_dir),
            "--out",
            str(out),
            "--max-length",
            "96",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "eosguard_prepare.json").read_text())
    assert manifest["format"] == FORMAT_VERSION and manifest["tokenizer_key"] and manifest["prep"]["examples"] == 240
    return out


@pytest.mark.parametrize("packing", [False, True])
def test_training_from_prepared_equals_training_from_conversations(
    prepared, tiny_model_dir, task_files, tmp_path, packing
):
    code, log_a = train(tiny_model_dir, tmp_path / "a", f"data.train=[{task_files['train']}]", f"packing={packing}")
    assert code == 0, log_a
    code, log_b = train(tiny_model_dir, tmp_path / "b", f"data.prepared={prepared}", f"packing={packing}")
    assert code == 0, log_b
    assert "240 examples read on demand" in log_b
    a, b = (json.loads((tmp_path / x / "model" / "eosguard.json").read_text()) for x in "ab")
    assert a["train"]["losses"] == b["train"]["losses"]  # same examples, same order, same steps
    assert a["examples"] == b["examples"]  # the counts come from the manifest


def test_prepared_data_from_another_tokenizer_or_options_is_refused(
    prepared, tiny_base_model_dir, tiny_model_dir, tmp_path
):
    code, log = train(tiny_base_model_dir, tmp_path / "c", f"data.prepared={prepared}")
    assert code == 2 and "prepared with another tokenizer" in log and "Traceback" not in log
    code, log = train(tiny_model_dir, tmp_path / "d", f"data.prepared={prepared}", "train_on=last")
    assert code == 2 and "train_on: prepared 'all', this run 'last'" in log
    code, log = train(tiny_model_dir, tmp_path / "e", f"data.prepared={prepared}", "max_length=64")
    assert code == 2 and "max_length: prepared 96" in log
    code, log = train(tiny_model_dir, tmp_path / "f", f"data.prepared={prepared}", f"data.train=[{prepared}]")
    assert code == 2 and "give `train`" in log
    code, log = train(tiny_model_dir, tmp_path / "g", f"data.prepared={tmp_path}")
    assert code == 2 and "not a folder written by `eosguard prepare`" in log


def test_resuming_on_prepared_data_continues_the_same_order(prepared, tiny_model_dir, tmp_path):
    """Packed rows from a prepared folder: a run resumed from its step-4 checkpoint ends with the uninterrupted run's
    weights (the same rows after the checkpoint, in the same order)."""
    import shutil

    from safetensors.torch import load_file

    sets = (f"data.prepared={prepared}", "packing=true", "save_steps=4", "batch_size=4")
    code, log = train(tiny_model_dir, tmp_path / "whole", *sets)
    assert code == 0, log
    staged = tmp_path / "resumed" / "checkpoints" / "checkpoint-4"
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "checkpoint-4", staged)
    code, log = train(tiny_model_dir, tmp_path / "resumed", *sets, "resume=true")
    assert code == 0 and f"resuming from {staged}" in log, log
    whole, resumed = (load_file(str(tmp_path / x / "model" / "model.safetensors")) for x in ("whole", "resumed"))
    assert whole.keys() == resumed.keys()
    for name, tensor in whole.items():
        assert (resumed[name] - tensor).abs().max().item() < 1e-6, name
    losses = [
        json.loads((tmp_path / x / "model" / "eosguard.json").read_text())["train"]["losses"]
        for x in ("whole", "resumed")
    ]
    assert losses[0][4:] == losses[1][-len(losses[0][4:]) :]  # steps 5-8 logged the same losses


@pytest.mark.slow
def test_packing_batch_keeps_the_steps_of_padded_training(tiny_model_dir, task_files, tmp_path):
    """`packing: batch` packs each step's own examples: the same steps, examples and losses as padded batches, on
    fewer positions; `packing: true` still means rows."""
    runs = {}
    for packing in ("off", "batch", "true"):
        code, log = train(
            tiny_model_dir, tmp_path / packing, f"data.train=[{task_files['train']}]", f"packing={packing}"
        )
        assert code == 0, log
        runs[packing] = json.loads((tmp_path / packing / "model" / "eosguard.json").read_text())
    padded, batch = runs["off"]["train"]["losses"], runs["batch"]["train"]["losses"]
    assert [s for s, _ in padded] == [s for s, _ in batch]
    assert all(abs(a - b) <= 1e-4 * abs(a) for (_, a), (_, b) in zip(padded, batch, strict=True)), (padded, batch)
    assert runs["true"]["config"]["packing"] == "rows" and runs["batch"]["config"]["packing"] == "batch"
