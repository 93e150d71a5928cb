"""Shared pieces of the benchmarks: seeded synthetic conversations, timing, and JSON results."""

from __future__ import annotations

import json
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eosguard.data.conversations import Conversation, Message

_WORDS = [
    "the",
    "model",
    "learns",
    "to",
    "answer",
    "and",
    "then",
    "to",
    "stop",
    "when",
    "a",
    "turn",
    "ends",
    "the",
    "tokenizer",
    "splits",
    "text",
    "into",
    "pieces",
    "each",
    "assistant",
    "reply",
    "closes",
    "with",
    "a",
    "stop",
    "token",
    "training",
    "data",
    "holds",
    "many",
    "conversations",
    "about",
    "code",
    "science",
    "history",
    "cooking",
    "travel",
    "music",
    "and",
    "numbers",
    "like",
    "42",
    "or",
    "3.14",
    "with",
    "punctuation,",
    "questions?",
    "and",
    "answers!",
]

CHATML_TRAINING_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""OpenHermes-2.5's ChatML template (the demo tokenizer's own) with TRL's {% generation %} markers around each
assistant content + <|im_end|>."""


def synthetic_conversations(n: int, *, seed: int = 0, max_words: int = 120) -> list[Conversation]:
    """`n` multi-turn conversations of realistic shape (system prompt, 1-3 exchanges, 5-max_words words a turn)."""
    rng = random.Random(seed)

    def text() -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, max_words))).capitalize() + "."

    out = []
    for _ in range(n):
        msgs = [Message("system", "You are a helpful assistant.")]
        for _ in range(rng.randint(1, 3)):
            msgs += [Message("user", text()), Message("assistant", text())]
        out.append(Conversation(messages=tuple(msgs)))
    return out


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Minimum wall time over `repeats` runs (and the last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def environment() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    env = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "threads": str(torch.get_num_threads()),
    }
    try:
        import trl

        env["trl"] = trl.__version__
    except ImportError:
        pass
    return env


def write_result(name: str, result: dict[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "environment": environment()}, indent=2) + "\n")
    return path


def trl_anchor_config(output_dir: str, *, batch: int, lr: float, scheduler: str, max_length: int | None, **kw: Any):
    """TRL's SFTConfig as every benchmark's anchor uses it: padded batches, assistant-only loss, CPU, logged each
    step, nothing saved; `kw` sets the length of the run (max_steps or num_train_epochs) and bf16."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        lr_scheduler_type=scheduler,
        seed=0,
        data_seed=0,
        logging_steps=1,
        report_to=[],
        assistant_only_loss=True,
        max_length=max_length,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        save_strategy="no",
        packing=False,
        **kw,
    )


def counting_collator(collate: Callable[[list], dict], counted: dict[str, int]) -> Callable[[list], dict]:
    """Wrap a collator to add up the trained (next-token) labels and the positions of every batch it builds."""

    def run(features: list) -> dict:
        out = collate(features)
        counted["trained"] = counted.get("trained", 0) + int((out["labels"][:, 1:] != -100).sum())
        counted["positions"] = counted.get("positions", 0) + int(out["input_ids"].numel())
        return out

    return run
