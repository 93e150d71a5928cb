"""Shared fixtures: real Mistral tokenizers from mistral-common, tiny seeded models saved as local folders.

The suite runs on two pytest-xdist workers (`-n 2 --dist loadfile` in pyproject.toml: a file's tests share one
worker, so its module fixtures are built once), each on cores of its own, and the files holding slow tests first.
`-n 0` runs it in one process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eosguard.recipes.tasks import make_conversations
from eosguard.testing.fixtures import demo_tokenizer, mistral_base_tokenizer, openhermes_tokenizer, tiny_mistral

DATA = Path(__file__).parent / "inputs"


def pytest_configure(config: pytest.Config) -> None:
    """Give this xdist worker its share of the cores before a test module imports torch: torch, llama.cpp and
    `prepare` size their threads by the cores they may use, and two workers each spinning two threads on two cores
    ran the torch-bound tests ~3x slower (measured 2026-12-05) than one worker per core."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and count.isdigit() and hasattr(os, "sched_setaffinity")):
        return
    cores = sorted(os.sched_getaffinity(0))
    workers = max(int(count), 1)
    os.sched_setaffinity(0, cores[int(worker[2:]) % len(cores) :: workers])


@pytest.fixture(scope="session")
def tok():
    """The OpenHermes-style tokenizer after eosguard's setup (pad = unk, ChatML template with BOS)."""
    return demo_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory) -> dict[str, Path]:
    """OpenHermes-style tokenizer folders for each pad setup: none, eos (the bug), unk, dedicated."""
    root = tmp_path_factory.mktemp("tokenizers")
    out = {}
    for pad in ("none", "eos", "unk", "dedicated"):
        openhermes_tokenizer(pad=pad).save_pretrained(root / pad)
        out[pad] = root / pad
    base = mistral_base_tokenizer()
    base.save_pretrained(root / "mistral-base")
    out["mistral-base"] = root / "mistral-base"
    return out


def write_jsonl(path: Path, convs) -> Path:
    with path.open("w") as f:
        for c in convs:
            f.write(json.dumps({"messages": c.as_dicts()}) + "\n")
    return path


@pytest.fixture(scope="session")
def task_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tasks")
    train = make_conversations(["repeat", "first"], 240, seed=1)
    held = make_conversations(["repeat", "first"], 24, seed=2, exclude={c.messages[1].content for c in train})
    return {"train": write_jsonl(root / "train.jsonl", train), "heldout": write_jsonl(root / "heldout.jsonl", held)}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Mistral-architecture 'base chat model' folder with the OpenHermes-style tokenizer (no pad token)."""
    root = tmp_path_factory.mktemp("models") / "tiny-openhermes"
    t = openhermes_tokenizer()
    model = tiny_mistral(len(t), hidden=64, layers=2, bos_id=t.bos_token_id, eos_id=2, pad_id=None)
    model.generation_config.eos_token_id = 2  # like a base model: eos is </s>, not <|im_end|>
    model.save_pretrained(root)
    t.save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory) -> Path:
    """A tiny model on the plain Mistral vocabulary (32,000 rows): <|im_end|> must be added and trained."""
    root = tmp_path_factory.mktemp("models") / "tiny-mistral-base"
    t = mistral_base_tokenizer()
    model = tiny_mistral(len(t), hidden=64, layers=2, bos_id=1, eos_id=2, pad_id=None)
    model.save_pretrained(root)
    t.save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def train_run(tiny_model_dir, task_files, tmp_path_factory) -> tuple[Path, int, str]:
    """One `eosguard train` of the tiny model via the CLI (40 steps, stop rate every 20): (output_dir, exit, log)."""
    from typer.testing import CliRunner

    from eosguard.cli.app import app

    out = tmp_path_factory.mktemp("train") / "run"
    sets = {
        "model": tiny_model_dir,
        "data.train": f"[{task_files['train']}]",
        "data.eval": f"[{task_files['heldout']}]",
        "output_dir": out,
        "stop_eval_steps": 20,
    }
    args = ["train", str(DATA / "tiny.yaml")] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(app, args)
    return out, result.exit_code, result.output


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory) -> tuple[Path, dict]:
    """`eosguard demo --quick` (the tiny model) run once: (its folder, its report)."""
    import torch

    from eosguard.recipes.demo import DemoSettings, run_demo

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, run_demo(out, DemoSettings.quick(), log=lambda _: None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a `slow` test run first, so that the last files two workers take are short ones."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's tests keep their order


# not test modules: a helper script run as a subprocess, and the scripts that wrote the inputs
collect_ignore = ["slow_save.py", "inputs"]


from tests.browser import browser, open_page  # noqa: E402, F401  (fixtures for the page tests)
