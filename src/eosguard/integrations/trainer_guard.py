"""`transformers.Trainer` / TRL `SFTTrainer`, `GRPOTrainer`, `RLOOTrainer` integration: the stop-token guard.

`guard_trainer(trainer)` wraps the trainer's collator with `eosguard.checks.guard`, so the first batch whose assistant
turns would not train their end-of-turn token stops the run with the cause and the fix, whatever built the labels
(transformers' collator with pad == eos, a TRL training template whose `{% generation %}` block leaves the stop
token out, a hand-written collator). TRL's `SFTTrainer` is a `Trainer`, so one function serves both. TRL's online RL
trainers (`GRPOTrainer`, `RLOOTrainer`) build no labels: their stop set and completions are guarded instead
(`eosguard.checks.rl_guard`), recognised by class name without importing trl.

Use as:
    from eosguard.integrations import guard_trainer
    guard_trainer(trainer)   # before trainer.train()
"""

from __future__ import annotations

from typing import Any, Literal

from eosguard.base.errors import EosguardError
from eosguard.checks.guard import guard
from eosguard.checks.rl_guard import guard_online_rl, online_rl_kind


def guard_trainer(trainer: Any, mode: Literal["raise", "warn"] = "raise", check_every: int = 1) -> Any:
    """Wrap `trainer.data_collator` with the stop-token guard (for GRPOTrainer / RLOOTrainer: their generation, see
    `eosguard.checks.rl_guard`), in place; returns the trainer.

    Example:
        >>> # trainer = SFTTrainer(model=..., args=..., train_dataset=..., processing_class=tokenizer)
        >>> # guard_trainer(trainer).train()
    """
    kind = online_rl_kind(trainer)
    if kind is not None:
        guard_online_rl(trainer, kind, mode=mode, check_every=check_every)
        return trainer
    tokenizer = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    if tokenizer is None:
        raise EosguardError("the trainer has no tokenizer (processing_class): the guard reads its chat template")
    trainer.data_collator = guard(trainer.data_collator, tokenizer, mode=mode, check_every=check_every)
    return trainer


__all__ = ["guard_trainer"]
