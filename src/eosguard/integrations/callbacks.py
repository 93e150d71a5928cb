"""Trainer callbacks: the stop rate measured while training.

trainer.add_callback(StopRateCallback(heldout, every=200))

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from eosguard.chat.render import ChatRenderer
from eosguard.data.conversations import Conversation


class StopRateCallback(TrainerCallback):
    """Measures the stop rate on held-out conversations every `every` steps and logs it with the loss."""

    def __init__(
        self,
        conversations: Sequence[Conversation],
        every: int,
        max_new_tokens: int = 64,
        renderer: ChatRenderer | None = None,
    ) -> None:
        self.conversations = list(conversations)
        self.every = every
        self.max_new_tokens = max_new_tokens
        self.history: list[tuple[int, float]] = []
        self.renderer = renderer  # default: the trainer's tokenizer, its own template

    def on_step_end(
        self, args: Any, state: Any, control: Any, model: Any = None, processing_class: Any = None, **kwargs: Any
    ) -> None:
        if not self.conversations or state.global_step % self.every or model is None or processing_class is None:
            return
        if not state.is_world_process_zero:  # measured once per run; the other ranks go on to the next step
            return
        from eosguard.checks.evaluate import evaluate_stopping

        if self.renderer is None:
            self.renderer = ChatRenderer(processing_class)
        use_cache = model.config.use_cache
        model.config.use_cache = True
        rep = evaluate_stopping(
            model, processing_class, self.conversations, max_new_tokens=self.max_new_tokens, renderer=self.renderer
        )
        model.config.use_cache = use_cache
        self.history.append((state.global_step, rep.stop_rate))
        state.log_history.append({"step": state.global_step, "stop_rate": rep.stop_rate})
        print(f"step {state.global_step}: stop rate {rep.stop_rate:.0%} on {rep.n} held-out prompts")
