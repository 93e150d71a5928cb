"""FSDP2 on 2 CPU processes (gloo): sharded training, the full weights gathered, rank 0's folder equal to one process.

`tests/fsdp2_train.py` is the launch (why it shards with `fully_shard` itself rather than through `Trainer`: its
docstring). Each case runs the same steps twice, one process unsharded on the global batch and two processes each
holding half of every parameter (DTensors) on half the batch, and holds the two saved folders to the tolerance the
DDP test holds (tests/training/test_distributed.py), full fine-tune and LoRA (merged on rank 0 after gathering).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.helpers import run_together

pytestmark = pytest.mark.slow  # whole processes or real models: see tests/conftest.py

LAUNCH = Path(__file__).parents[1] / "fsdp2_train.py"
YAML = Path(__file__).parents[1] / "inputs" / "tiny.yaml"
STEPS = 4


def launch(nproc: int, model: Path, data: Path, out: Path, *sets: str) -> list[str]:
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    args = [f"model={model}", f"data.train=[{data}]", f"max_steps={STEPS}", "batch_size=4", *sets]
    return [*(prefix if nproc > 1 else [sys.executable]), str(LAUNCH), str(YAML), str(out), *args]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("sets", [(), ("lora={r: 4, alpha: 8, dropout: 0.0}",)], ids=["full", "lora"])
def test_fsdp2_two_processes_save_what_one_process_saves(sets, tiny_model_dir, task_files, tmp_path):
    one, two = run_together(
        launch(1, tiny_model_dir, task_files["train"], tmp_path / "one", *sets),
        launch(2, tiny_model_dir, task_files["train"], tmp_path / "two", *sets),
    )
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    sharded = json.loads((tmp_path / "two" / "fsdp2.json").read_text())
    assert sharded["world"] == 2 and sharded["dtensor_parameters"] > 0  # the parameters really were sharded
    folders = {name: tmp_path / name / "model" for name in ("one", "two")}
    summaries = {name: json.loads((f / "eosguard.json").read_text()) for name, f in folders.items()}
    for (_, a), (_, b) in zip(summaries["one"]["train"]["losses"], summaries["two"]["train"]["losses"], strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    a, b = (load_file(str(f / "model.safetensors")) for f in folders.values())
    assert a.keys() == b.keys() and not any("lora" in k for k in b)  # LoRA merged into plain weights
    assert max_diff(a, b) < 5e-5
    start = load_file(str(tiny_model_dir / "model.safetensors"))
    moved = {k: v for k, v in b.items() if k in start and v.shape == start[k].shape}
    assert max_diff(moved, {k: start[k] for k in moved}) > 1e-3  # the steps changed the weights (adapters too)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "eosguard.json", "report.html"):
        assert (folders["two"] / name).is_file(), name
    eos = json.loads((folders["two"] / "generation_config.json").read_text())["eos_token_id"]
    assert eos == json.loads((folders["one"] / "generation_config.json").read_text())["eos_token_id"]
