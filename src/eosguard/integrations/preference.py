"""Preference training on TRL's own trainers (`DPOTrainer`, `KTOTrainer`), on eosguard's rows as written.

TRL 1.16 re-tokenizes every dataset it is given (`_prepare_dataset`: prompts and completions as text or messages;
a folder of ids alone fails with `KeyError: 'chosen'`), appending the tokenizer's eos to plain-text completions and
checking nothing of what the template closes them with. `rows_trainer(DPOTrainer)` is TRL's trainer with that one step
handing eosguard's rows through as written (`prompt_ids`, `chosen_ids`, `rejected_ids`, from
`eosguard.chat.preference`: each completion through its closing sequence once); TRL's collator, its loss, its
reference model and its logging are unchanged. For KTO the step still adds what TRL adds after tokenizing (the
mismatched `KL_completion_ids` its KL estimate needs, rotated within each batch as TRL rotates them).

`preference_collator` is TRL's own collator (`DataCollatorForPreference` / `DataCollatorForUnpairedPreference`)
wrapped in eosguard's guard: every completion of every batch, chosen and rejected, must hold its closing sequence
inside its `completion_mask` (TRL's loss trains exactly those tokens), or the run stops with the cause.

Use as:
    from trl import DPOConfig, DPOTrainer
    from eosguard.integrations.preference import rows_trainer
    trainer = rows_trainer(DPOTrainer)(model=model, args=DPOConfig(...), train_dataset=load_from_disk("prepared/"),
                                       processing_class=tokenizer)
"""

from __future__ import annotations

import functools
from typing import Any

from eosguard.base.errors import EosguardError

ROW_COLUMNS = {"paired": ("prompt_ids", "chosen_ids", "rejected_ids"), "unpaired": ("prompt_ids", "completion_ids")}


def _kind(dataset: Any) -> str | None:
    """Which preference rows a dataset holds (None: not ids: TRL's own step prepares it)."""
    names = set(getattr(dataset, "column_names", None) or [])
    return next((k for k, cols in ROW_COLUMNS.items() if set(cols) <= names), None)


def _with_kl_completions(dataset: Any, batch_size: int) -> Any:
    """KTO's mismatched completions: each batch's completions rotated by one (what TRL's `_prepare_dataset` adds)."""

    def rotate(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        batch["KL_completion_ids"] = [batch["completion_ids"][-1], *batch["completion_ids"][:-1]]
        return batch

    return dataset.map(rotate, batched=True, batch_size=batch_size, desc="KL completions")


@functools.cache
def rows_trainer(trainer_class: type) -> type:
    """`trainer_class` (TRL's `DPOTrainer` or `KTOTrainer`, or a subclass) taking rows of ids as written; a dataset
    of text or messages still goes through TRL's own preparation."""

    class RowsTrainer(trainer_class):  # type: ignore[misc, valid-type]
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
            kind = _kind(dataset)
            if kind is None:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if args.max_length is not None and getattr(args, "truncation_mode", "keep_start") == "keep_start":
                # as TRL does after tokenizing: a prompt that alone fills max_length leaves no completion token
                dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length, desc="prompts too long")
            if kind == "unpaired" and getattr(self, "calculate_KL", False):
                dataset = _with_kl_completions(dataset, args.per_device_train_batch_size)
            return dataset

    RowsTrainer.__name__ = RowsTrainer.__qualname__ = f"Rows{trainer_class.__name__}"
    return RowsTrainer


def preference_collator(
    tokenizer: Any, kind: str, *, max_length: int | None, truncation_mode: str = "keep_start", template: Any = None
) -> Any:
    """TRL's collator for `kind` ("paired": DPO, ORPO, CPO; "unpaired": KTO), guarded (see the module doc)."""
    from eosguard.checks.guard import guard

    try:
        if kind == "paired":
            from trl.trainer.dpo_trainer import DataCollatorForPreference as Collator
        else:
            from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference as Collator
    except ImportError:
        raise EosguardError("preference training needs TRL", hint="pip install 'eosguard[trl]'") from None
    if tokenizer.pad_token_id is None:
        raise EosguardError("the tokenizer has no pad token (eosguard.prepare_tokenizer chooses one, never eos)")
    keep = {"truncation_mode": truncation_mode} if kind == "paired" else {}  # KTO's collator keeps the start alone
    collator = Collator(pad_token_id=tokenizer.pad_token_id, max_length=max_length, **keep)
    return guard(collator, tokenizer, template=template)


__all__ = ["ROW_COLUMNS", "preference_collator", "rows_trainer"]
