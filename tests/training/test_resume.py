"""Crash-safe training: SIGKILL mid-run and during a save, resume, and end with the weights of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # whole processes or real models: see tests/conftest.py

YAML = Path(__file__).parents[1] / "inputs" / "tiny.yaml"
STEPS, EVERY = 12, 4


def _cmd(model_dir, train_file, out, *extra):
    return [
        sys.executable,
        "-m",
        "eosguard",
        "train",
        str(YAML),
        "--set",
        f"model={model_dir}",
        "--set",
        f"data.train=[{train_file}]",
        "--set",
        f"output_dir={out}",
        "--set",
        f"max_steps={STEPS}",
        "--set",
        f"save_steps={EVERY}",
        "--set",
        "batch_size=8",
        *extra,
    ]


def _weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


def _kill_when(proc, ready, timeout=120):
    start = time.time()
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before the kill point (rc={proc.returncode})")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("kill point never reached")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def reference(tiny_model_dir, task_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(_cmd(tiny_model_dir, task_files["train"], out), check=True, capture_output=True)
    return _weights(out)


@pytest.mark.parametrize("when", ["mid-training", "during-save"])
def test_kill_and_resume_matches_uninterrupted_run(reference, tiny_model_dir, task_files, tmp_path, when):
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    # Saves pause before their final rename (tests/slow_save.py wraps the checkpoint writer), so a kill can land
    # inside a save.
    cmd = _cmd(tiny_model_dir, task_files["train"], out)
    cmd[1:3] = [str(Path(__file__).parents[1] / "slow_save.py")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if when == "mid-training":
        _kill_when(proc, lambda: (ckpts / f"checkpoint-{EVERY}").exists())
    else:
        _kill_when(proc, lambda: (ckpts / ".staging" / f"checkpoint-{2 * EVERY}" / "trainer_state.json").exists())
        assert not (ckpts / f"checkpoint-{2 * EVERY}").exists()  # the interrupted save never became a checkpoint
    assert (ckpts / f"checkpoint-{EVERY}" / "trainer_state.json").exists()
    # Each checkpoint carries the resolved config and the tokenizer with its chat template.
    assert '"max_steps": 12' in (ckpts / f"checkpoint-{EVERY}" / "eosguard_config.json").read_text()
    assert "<|im_start|>" in (ckpts / f"checkpoint-{EVERY}" / "chat_template.jinja").read_text()
    assert not (out / "model").exists()

    done = subprocess.run(_cmd(tiny_model_dir, task_files["train"], out, "--resume"), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"resuming from {ckpts / f'checkpoint-{EVERY}'}" in done.stdout  # really resumed, not restarted
    resumed = _weights(out)
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert (resumed[name] - tensor).abs().max().item() < 1e-5, name
