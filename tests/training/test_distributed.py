"""`eosguard train` under torchrun on CPU (gloo): equal to one process, printed once, resumable, and it fails whole.

Each test launches real processes (`python -m torch.distributed.run --nproc_per_node 2 -m eosguard train ...`), as a
user does; nothing is simulated.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.helpers import launch_env, run_together

pytestmark = pytest.mark.slow  # whole processes or real models: see tests/conftest.py

YAML = Path(__file__).parents[1] / "inputs" / "tiny.yaml"
BAD = Path(__file__).parents[1] / "inputs" / "bad" / "truncated_json.jsonl"
STEPS = 6


def command(nproc: int, model: Path, data: Path, out: Path, *sets: str) -> list[str]:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    prefix = launch if nproc > 1 else [sys.executable]
    args = [f"model={model}", f"data.train=[{data}]", f"output_dir={out}", f"max_steps={STEPS}", *sets]
    return [*prefix, "-m", "eosguard", "train", str(YAML), *(a for s in args for a in ("--set", s))]


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=launch_env())


def weights(out: Path) -> dict:
    return load_file(str(out / "model" / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tiny_model_dir, task_files, tmp_path_factory):
    """One process x batch 4 and two processes x batch 2, same model, data, seed and steps (checkpoint at step 3)."""
    root = tmp_path_factory.mktemp("ddp")
    one, two = run_together(
        command(1, tiny_model_dir, task_files["train"], root / "one", "batch_size=4", "save_steps=3"),
        command(2, tiny_model_dir, task_files["train"], root / "two", "batch_size=2", "save_steps=3"),
    )
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    return root, one, two


def test_two_processes_equal_one_process_with_twice_the_batch(runs):
    root, _, _ = runs
    summaries = {name: json.loads((root / name / "model" / "eosguard.json").read_text()) for name in ("one", "two")}
    losses = {name: s["train"]["losses"] for name, s in summaries.items()}
    assert [s for s, _ in losses["one"]] == [s for s, _ in losses["two"]] == list(range(1, STEPS + 1))
    for (_, a), (_, b) in zip(losses["one"], losses["two"], strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    assert max_diff(weights(root / "one"), weights(root / "two")) < 5e-5


def test_dpo_under_two_processes_equals_one_process_with_twice_the_batch(tiny_model_dir, tmp_path):
    """`method: dpo` (TRL's DPOTrainer on eosguard's rows) under torchrun, as SFT: the same loss and weights."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
                                         "chosen": [{"role": "assistant", "content": str(2 * i)}],
                                         "rejected": [{"role": "assistant", "content": "No idea."}]}) + "\n"
                             for i in range(16)))  # fmt: skip
    sets = ("method=dpo", "max_steps=2", "data.eval_fraction=0")
    one, two = run_together(
        command(1, tiny_model_dir, pairs, tmp_path / "one", *sets, "batch_size=4"),
        command(2, tiny_model_dir, pairs, tmp_path / "two", *sets, "batch_size=2"),
    )
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    losses = [
        json.loads((tmp_path / n / "model" / "eosguard.json").read_text())["train"]["losses"] for n in ("one", "two")
    ]
    assert [b for _, b in losses[0]] == pytest.approx([b for _, b in losses[1]], rel=1e-5) and len(losses[0]) == 2
    assert max_diff(weights(tmp_path / "one"), weights(tmp_path / "two")) < 5e-5


def test_two_processes_print_each_line_once_and_write_one_complete_folder(runs):
    root, _, two = runs
    out = two.stdout
    assert out.count("processes: 2") == 1
    for line in ("tokenizer: end-of-turn token", "data: read 240 records", "examples: 240 conversations", "saved "):
        assert out.count(line) == 1, line
    assert (two.stdout + two.stderr).count("The tokenizer has new PAD/BOS/EOS") <= 1  # library lines too
    folder = root / "two" / "model"
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "eosguard.json", "report.html"):
        assert (folder / name).is_file(), name
    assert not [p for p in (root / "two").rglob("*") if ".staging" in p.name or p.name.endswith(".partial")]
    ckpt = root / "two" / "checkpoints" / "checkpoint-3"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()


def test_two_process_resume_ends_where_the_uninterrupted_run_ends(runs, tiny_model_dir, task_files):
    root, _, _ = runs
    resumed = root / "resumed"
    shutil.copytree(root / "two", resumed)
    shutil.rmtree(resumed / "checkpoints" / "checkpoint-6")
    shutil.rmtree(resumed / "model")
    cmd = command(2, tiny_model_dir, task_files["train"], resumed, "batch_size=2", "save_steps=3")
    result = run([*cmd, "--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("resuming from") == 1 and "checkpoint-3" in result.stdout
    assert max_diff(weights(root / "two"), weights(resumed)) == 0.0


def test_bad_data_stops_every_rank_with_one_message(tiny_model_dir, tmp_path):
    result = run(command(2, tiny_model_dir, BAD, tmp_path / "out"), timeout=120)
    assert result.returncode != 0
    both = result.stdout + result.stderr
    assert both.count(f"{BAD}:2: malformed JSON") == 1
    # torchrun names rank 0 and our exit code (2: bad input) as the root cause; the other rank did not hang.
    root_cause = both.split("Root Cause")[1]
    assert "rank      : 0" in root_cause and "exitcode  : 2" in root_cause
    assert not (tmp_path / "out" / "model").exists()


def _rank_pid(parent: int, rank: int, deadline: float) -> int:
    """The pid of the worker with RANK=rank among the launcher's children."""
    while time.time() < deadline:
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(child)
        time.sleep(0.2)
    raise AssertionError(f"no worker with RANK={rank}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the worker processes")
def test_killing_one_rank_stops_the_run_with_a_clear_message(tiny_model_dir, task_files, tmp_path):
    log = tmp_path / "log.txt"
    cmd = command(2, tiny_model_dir, task_files["train"], tmp_path / "out", "batch_size=2", "save_steps=100000")
    cmd = [c if c != f"max_steps={STEPS}" else "max_steps=100000" for c in cmd]
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=launch_env())
        try:
            deadline = time.time() + 120
            while "examples:" not in log.read_text() and time.time() < deadline:
                time.sleep(0.3)
            time.sleep(3)  # into the training loop
            os.kill(_rank_pid(proc.pid, 1, deadline), signal.SIGKILL)
            code = proc.wait(timeout=90)  # no hang: the launcher stops the surviving rank
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert code != 0
    assert "rank      : 1 (local_rank: 1)" in text and "SIGKILL" in text
    assert not (tmp_path / "out" / "model").exists()


EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("path", sorted((EXAMPLES / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_example_accelerate_configs_load(path):
    """The multi-GPU configs of docs/distributed.md are real accelerate configs (parsed by accelerate itself)."""
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.num_processes >= 2 and cfg.distributed_type.value in {"FSDP", "DEEPSPEED", "MULTI_GPU"}
    if cfg.distributed_type.value == "FSDP":
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # the final folder needs full weights


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_train_configs_validate(path, task_files):
    from eosguard.recipes.config import load_config

    cfg = load_config(path, [f"data.train=[{task_files['train']}]"])
    assert cfg.data.train and cfg.precision == "bf16"
