"""`eosguard train` with `method: dpo | kto`: preference training on TRL's own trainers, the stop token kept.

The run's phases are SFT's (`eosguard.recipes.train`): the tokenizer set up (a pad that is never a stop token: TRL
would set pad = eos and save it), the doctor gate, the model (embeddings grown, LoRA training new stop rows), a
folder that stops by itself. What differs: the data are preference records rendered into TRL's rows by the one
renderer (`eosguard.chat.preference`: each completion after the generation prompt, through its closing sequence
once; over length whole earlier turns of the prompt are dropped, never a completion), or a folder `eosguard prepare`
wrote; and the trainer is TRL's `DPOTrainer` / `KTOTrainer` taking those rows as written
(`eosguard.integrations.preference.rows_trainer`), its own collator guarded (every completion's closer inside TRL's
completion mask, or the run stops), its loss and reference unchanged (the reference is the model training starts
from), with eosguard's crash-safe checkpoints.

Run as:
    eosguard train dpo.yaml          # method: dpo, data.train: pairs.jsonl
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from eosguard.chat.preference import PreferenceStats, fit_preferences
from eosguard.chat.render import ChatRenderer
from eosguard.data.conversations import Conversation
from eosguard.data.preferences import Preference
from eosguard.recipes.config import TrainConfig
from eosguard.recipes.train_data import TrainData

KINDS = {"dpo": "paired", "kto": "unpaired"}


def held_out(records: list[Any]) -> list[Conversation]:
    """Held-out conversations from held-out data: conversations as they are; preference records as their prompt
    with the chosen (or desirable) completion as the reference."""
    out = []
    for r in records:
        if isinstance(r, Conversation):
            out.append(r)
        elif isinstance(r, Preference) and r.conversational and r.label is not False:
            out.append(r.conversation(r.chosen))  # type: ignore[arg-type]
    return out


def load_preference_data(cfg: TrainConfig, log: Callable[[str], None]) -> TrainData:
    """Phase 1 for preference training: the tokenizer set up, preference records read and rendered into TRL's rows
    (or a prepared folder read), held-out prompts; a `TrainData` whose examples are a `datasets.Dataset`."""
    import datasets

    from eosguard.base.errors import DataError
    from eosguard.base.loading import load_tokenizer
    from eosguard.chat.tokenizer_setup import prepare_tokenizer
    from eosguard.data.records import data_kind, load_conversations, load_preferences

    settings = cfg.render_settings()
    kind = KINDS[cfg.method]
    tok = load_tokenizer(cfg.tokenizer or cfg.model, trust_remote_code=cfg.trust_remote_code)
    setup = prepare_tokenizer(tok, template=cfg.template, template_args=settings.template_args)
    for line in setup.lines():
        log(f"tokenizer: {line}")
    eval_records: list[Any] = []
    if cfg.data.eval:
        prefs = data_kind(cfg.data.eval) != "conversations"
        read = load_preferences if prefs else load_conversations
        eval_records, eval_report = read(cfg.data.eval, skip_invalid=settings.skip_invalid)
        log(f"eval data: {eval_report.summary()}")
    if cfg.data.prepared:
        from eosguard.recipes.prepare import read_prepared

        rows, manifest = read_prepared(cfg.data.prepared, tok, settings, kind)
        log(f"data: {cfg.data.prepared} (prepared: {manifest['load']}); {len(rows)} rows")
        prep = PreferenceStats(**manifest["prep"])
        return TrainData(tok, setup, [], held_out(eval_records), rows, manifest["load"], prep, settings.tools)
    found = data_kind(cfg.data.train)
    if found != kind:
        raise DataError(f"`method: {cfg.method}` trains on {kind} records, and these hold {found}",
                        path=", ".join(cfg.data.train))  # fmt: skip
    records, load_report = load_preferences(cfg.data.train, skip_invalid=settings.skip_invalid)
    log(f"data: {load_report.summary()}")
    if not cfg.data.eval and cfg.data.eval_fraction > 0:
        import random

        order = list(range(len(records)))
        random.Random(cfg.seed).shuffle(order)
        k = max(1, int(len(records) * cfg.data.eval_fraction))
        eval_records = [records[i] for i in order[:k]]
        records = [records[i] for i in sorted(order[k:])]
    prep = PreferenceStats()
    renderer = ChatRenderer(tok, train_on="last", tools=settings.tools)
    fitted = fit_preferences(records, renderer, prep, max_length=cfg.max_length, over_length=cfg.over_length)
    rows = datasets.Dataset.from_list([r.columns() for r in fitted])
    log(f"{kind} preferences: {prep.summary()}")
    summary = load_report.summary()
    return TrainData(tok, setup, [], held_out(eval_records), rows, summary, prep, settings.tools, records)


def preference_trainer(cfg: TrainConfig, data: Any, model: Any, args: Any, callbacks: list[Any]) -> Any:
    """TRL's trainer for the method, on eosguard's rows as written, its collator guarded, checkpoints crash-safe;
    the reference model is a frozen copy of the model training starts from (with LoRA: the adapter disabled)."""
    from peft import PeftModel
    from trl import DPOTrainer, KTOTrainer

    from eosguard.integrations.preference import preference_collator, rows_trainer
    from eosguard.training.checkpoints import AtomicCheckpoints

    base = rows_trainer(DPOTrainer if cfg.method == "dpo" else KTOTrainer)
    trainer_class = type(f"Eosguard{base.__name__}", (AtomicCheckpoints, base), {})
    collator = preference_collator(
        data.tokenizer, KINDS[cfg.method], max_length=cfg.max_length, truncation_mode=cfg.preference.truncation_mode
    )
    trainer = trainer_class(
        model=model,
        ref_model=None if isinstance(model, PeftModel) else copy.deepcopy(model).eval(),
        args=args,
        train_dataset=data.examples,
        processing_class=data.tokenizer,
        data_collator=collator,
        callbacks=callbacks,
    )
    trainer.checkpoint_files = {"eosguard_config.json": cfg.model_dump_json(indent=2)}
    return trainer


def preference_arguments(cfg: TrainConfig, steps: int) -> Any:
    """TRL's DPOConfig / KTOConfig with eosguard's explicit choices (`eosguard.training.trainer.training_arguments`)
    and the run's preference settings; TRL's own defaults that would change the run silently are set explicitly."""
    from trl import DPOConfig, KTOConfig

    pref = cfg.preference
    extra: dict[str, Any] = {"beta": pref.beta, "max_length": cfg.max_length, "gradient_checkpointing": False}
    if cfg.method == "dpo":
        extra["truncation_mode"] = pref.truncation_mode
    if pref.loss_type is not None:
        extra["loss_type"] = [pref.loss_type] if cfg.method == "dpo" else pref.loss_type
    return cfg.trainer_arguments(steps, DPOConfig if cfg.method == "dpo" else KTOConfig, **extra)


__all__ = ["held_out", "load_preference_data", "preference_arguments", "preference_trainer"]
