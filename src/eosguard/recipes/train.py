"""`eosguard train CONFIG.yaml`: the run in named phases, with the stop token guaranteed to be trained.

`train_from_config` wires the pieces together (see `eosguard.recipes.config` for every key): `load_data` (tokenizer set
up, data read and rendered, counted), `doctor_gate` (the doctor on this configuration refuses errors), `build_model`
(safetensors, embeddings grown for new tokens, LoRA with new stop-token rows trained), `rows_and_collator` (packed or
padded rows, the guarded collator), `fit` (`eosguard.training.trainer`), `finish` (LoRA merged, held-out stop rate, a
folder that stops by itself: `eosguard.training.saving`, `report.html`: `eosguard.recipes.pages`). Each phase is usable
on its own.

Run as:
    eosguard train examples/tiny.yaml
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from eosguard.base.errors import EosguardError, RefusedByDoctor
from eosguard.base.loading import load_model
from eosguard.chat.examples import PrepStats, build_examples
from eosguard.chat.render import ChatRenderer
from eosguard.checks.evaluate import Generation
from eosguard.checks.report import DoctorReport
from eosguard.data.conversations import Conversation
from eosguard.integrations.callbacks import StopRateCallback
from eosguard.recipes import pages
from eosguard.recipes.config import TrainConfig
from eosguard.recipes.train_data import TrainData
from eosguard.training.checkpoints import last_checkpoint
from eosguard.training.saving import save_model_folder
from eosguard.training.trainer import FitResult, fit, run_trainer


def _apply_lora(model: Any, lora: Any, new_rows: bool, eot: str, log: Callable[[str], None]) -> Any:
    from peft import LoraConfig, get_peft_model

    modules_to_save = None
    if new_rows:
        # The end-of-turn token's rows are new: LoRA alone would leave them at their initial values, and the
        # model could never learn to emit it. Train the embedding and output layers fully.
        modules_to_save = ["embed_tokens", "lm_head"]
        log(f"LoRA: {eot} is a new token -> modules_to_save = embed_tokens, lm_head (its rows get trained)")
    cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        modules_to_save=modules_to_save,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def load_data(cfg: TrainConfig, log: Callable[[str], None]) -> TrainData:
    """Phase 1: prepare the tokenizer (each choice reported), read and validate data, render and fit examples."""
    from eosguard.base.loading import load_tokenizer
    from eosguard.chat.tokenizer_setup import prepare_tokenizer
    from eosguard.data.records import load_conversations

    settings = cfg.render_settings()
    tok = load_tokenizer(cfg.tokenizer or cfg.model, trust_remote_code=cfg.trust_remote_code)
    setup = prepare_tokenizer(tok, template=cfg.template, template_args=settings.template_args)
    for line in setup.lines():
        log(f"tokenizer: {line}")
    eval_convs: list[Conversation] = []
    if cfg.data.eval:
        eval_convs, eval_report = load_conversations(cfg.data.eval, skip_invalid=settings.skip_invalid)
        log(f"eval data: {eval_report.summary()}")
    if cfg.data.prepared:
        from eosguard.recipes.prepare import read_prepared

        prepared, manifest = read_prepared(cfg.data.prepared, tok, settings)
        prep = PrepStats(**manifest["prep"])
        log(f"data: {cfg.data.prepared} (prepared: {manifest['load']}); {len(prepared)} examples read on demand")
        return TrainData(tok, setup, [], eval_convs, prepared, manifest["load"], prep, settings.tools)
    convs, load_report = load_conversations(cfg.data.train, skip_invalid=settings.skip_invalid)
    log(f"data: {load_report.summary()}")
    if not cfg.data.eval and cfg.data.eval_fraction > 0:
        import random

        order = list(range(len(convs)))
        random.Random(cfg.seed).shuffle(order)
        k = max(1, int(len(convs) * cfg.data.eval_fraction))
        eval_convs = [convs[i] for i in order[:k]]
        convs = [convs[i] for i in sorted(order[k:])]
    renderer = ChatRenderer(tok, train_on=settings.train_on, tools=settings.tools)
    examples, prep = build_examples(convs, renderer, max_length=settings.max_length, over_length=settings.over_length)
    log(f"examples: {prep.summary()}")
    return TrainData(tok, setup, convs, eval_convs, examples, load_report.summary(), prep, settings.tools)


def doctor_gate(cfg: TrainConfig, data: TrainData, *, force: bool, log: Callable[[str], None]) -> DoctorReport:
    """Phase 2: the doctor judges eosguard's own pipeline on this configuration; an error that blocks training
    refuses the run (RefusedByDoctor, exit 1) unless forced."""
    from eosguard.checks.doctor import diagnose

    doctor = diagnose(  # eosguard's own rows: of the conversations, or of the preference records
        data.tokenizer,
        conversations=data.conversations[:256],
        preferences=list(data.preferences[:256]) or None,
        max_length=cfg.max_length,
        tools=data.tools,
    )
    for f in doctor.findings:
        log(f"doctor: [{f.severity}] {f.id}: {f.message}")
    blocking = doctor.blocks_training
    if blocking and not force:
        raise RefusedByDoctor(
            "the doctor found errors in this configuration: " + ", ".join(f.id for f in blocking),
            hint="fix them, or pass --force to train anyway (the findings are written to eosguard.json)",
        )
    if blocking:
        log("!!! --force: training despite doctor errors: " + ", ".join(f.id for f in blocking))
    if not data.examples:
        raise EosguardError(f"no training examples left: {data.prep.summary()}")
    return doctor


def build_model(cfg: TrainConfig, data: TrainData, log: Callable[[str], None]) -> Any:
    """Phase 3: load the model, grow its embeddings for new tokens, add LoRA (training new end-of-turn rows)."""
    dtype = torch.bfloat16 if cfg.precision == "bf16-pure" else None  # bf16 keeps fp32 master weights (autocast)
    from eosguard.training.packing import choose_attention

    attention, why = choose_attention(cfg.attention)
    model = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, dtype=dtype, attn_implementation=attention)
    log(f"model: attention {attention} ({why}); precision {cfg.precision}")
    tok, setup = data.tokenizer, data.setup
    original_vocab = model.get_input_embeddings().weight.shape[0]
    if len(tok) > original_vocab:
        model.resize_token_embeddings(len(tok))
        log(f"model: embeddings resized {original_vocab} -> {len(tok)} rows (new rows mean-initialised)")
    model.config.eosguard_original_vocab_size = original_vocab
    eot_new = setup.end_of_turn_id >= original_vocab or setup.end_of_turn in setup.added_tokens
    if cfg.lora is not None:
        model = _apply_lora(model, cfg.lora, eot_new, setup.end_of_turn, log)
    return model


def rows_and_collator(
    cfg: TrainConfig, data: TrainData, log: Callable[[str], None], *, attention: str = "sdpa"
) -> tuple[list, Callable]:
    """Phase 4: packed or padded rows, and the guarded collator that proves every batch trains the stop token;
    `attention` is the model's attention implementation (it decides how packed rows are laid out)."""
    from eosguard.checks.guard import guard
    from eosguard.training.collate import PackedCollator, PadCollator
    from eosguard.training.packing import PackedRows

    # FlashAttention-2 reads packed rows as variable-length sequences: one long row costs nothing extra. Attention
    # with a mask costs the square of the row length, so there each packed row stays its own row.
    one_row = attention == "flash_attention_2"
    if cfg.packing == "rows":
        rows: Sequence[dict[str, Any]] = PackedRows(
            data.examples, cfg.max_length, lengths=getattr(data.examples, "lengths", None)
        )
        log(f"packing: {len(data.examples)} examples -> {len(rows)} rows of <= {cfg.max_length} tokens")
        collator: Any = PackedCollator(one_row=one_row, pad_token_id=data.tokenizer.pad_token_id)
    elif cfg.packing == "batch":
        rows = data.examples
        log(f"packing: the {cfg.batch_size} examples of each step into rows of <= {cfg.max_length} tokens")
        collator = PackedCollator(one_row=one_row, pad_token_id=data.tokenizer.pad_token_id, pack_to=cfg.max_length)
    else:
        rows = data.examples
        collator = PadCollator(pad_token_id=data.tokenizer.pad_token_id, padding_side="right")
    return rows, guard(collator, data.tokenizer)


def _resume_point(cfg: TrainConfig, log: Callable[[str], None]) -> str | None:
    if not cfg.resume:
        return None
    ckpt_dir = Path(cfg.output_dir) / "checkpoints"
    resume_from = last_checkpoint(ckpt_dir)
    log(
        f"resuming from {resume_from}"
        if resume_from
        else f"resume: no complete checkpoint in {ckpt_dir}, starting over"
    )
    return resume_from


REPORT_SAMPLES = 8  # held-out prompts generated before and after training for report.html


def sample_generations(model: Any, data: TrainData, max_new_tokens: int) -> list[Generation]:
    """Greedy generations for the first held-out prompts (empty without held-out data): the report's samples."""
    from eosguard.checks.evaluate import evaluate_stopping

    if not data.eval_conversations:
        return []
    convs = data.eval_conversations[:REPORT_SAMPLES]
    renderer = data.renderer()
    return evaluate_stopping(model, data.tokenizer, convs, max_new_tokens=max_new_tokens, renderer=renderer).generations


def finish(
    cfg: TrainConfig,
    data: TrainData,
    model: Any,
    doctor: DoctorReport,
    result: FitResult,
    log: Callable[[str], None],
    *,
    before: Sequence[Generation] = (),
    stop_history: Sequence[tuple[int, float]] = (),
) -> dict[str, Any]:
    """Phase 6: merge LoRA, measure the stop rate on held-out data, save a folder that stops by itself, with
    eosguard.json and report.html in it. In a multi-process run only rank 0 does this (the others return the
    summary without evaluation)."""
    from eosguard.training.distributed import is_main

    summary = {
        "config": cfg.model_dump(),
        "tokenizer_setup": data.setup.lines(),
        "data": data.load_summary,
        "examples": data.prep.summary(),
        "doctor": doctor.to_dict()["findings"],
        "forced": bool(doctor.blocks_training),
        "train": result.to_dict(),
        "attention": getattr(model.config, "_attn_implementation", None),
        "stop_rate_history": [list(p) for p in stop_history],
    }
    if not is_main():
        return summary
    if cfg.lora is not None and cfg.lora.merge:
        model = model.merge_and_unload()
    after: list[Generation] = []
    if data.eval_conversations:
        from eosguard.checks.evaluate import evaluate_stopping

        rep = evaluate_stopping(
            model, data.tokenizer, data.eval_conversations, max_new_tokens=cfg.max_new_tokens, renderer=data.renderer()
        )
        summary["eval"] = rep.to_dict()
        after = rep.generations[:REPORT_SAMPLES]
        summary["samples"] = {"before": [asdict(g) for g in before], "after": [asdict(g) for g in after]}
        log(
            f"eval: stop rate {rep.stop_rate:.0%}, runaway {rep.runaway_rate:.0%}, role leaks {rep.role_leak_rate:.0%}"
            f" on {rep.n} held-out conversations"
        )
    folder = save_model_folder(model, data.tokenizer, Path(cfg.output_dir) / "model", extra=summary)
    eot = data.setup.end_of_turn
    from eosguard.base.files import write_text

    write_text(folder / "report.html", pages.train_report_html(summary, doctor, before, after, stop_history, eot))
    log(f"saved {folder} (loads with AutoModelForCausalLM / AutoTokenizer; generate() stops at {eot}); report.html")
    return summary


def from_gathered(cfg: TrainConfig, data: TrainData, full_state_dict: dict[str, Any]) -> Any:
    """After sharded training (FSDP, ZeRO-3) no process holds the model: rebuild the same one (LoRA included) on
    rank 0 and load the gathered weights into it, so merging, evaluation and saving run as in a single process.
    Strict: a key missing or left over means the gathered weights are not this model's. Under `Trainer` this runs
    only where accelerate shards (GPUs); on CPU, tests/training/test_fsdp2.py shards with `fully_shard` and runs it."""
    model = build_model(cfg, data, lambda _line: None)
    model.load_state_dict(full_state_dict, strict=True)
    return model


def _data_and_doctor(cfg: TrainConfig, force: bool, log: Callable[[str], None]) -> tuple[TrainData, DoctorReport]:
    if cfg.method == "sft":
        data = load_data(cfg, log)
    else:
        from eosguard.recipes.train_preference import load_preference_data

        data = load_preference_data(cfg, log)
    return data, doctor_gate(cfg, data, force=force, log=log)


def train_from_config(cfg: TrainConfig, *, force: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run `eosguard train`: data, doctor gate, model, rows and collator, Trainer, a folder that stops by itself.

    Raises EosguardError (exit 2) for unusable input and `RefusedByDoctor` (exit 1) on an error finding unless
    `force` is set.
    """
    from eosguard.training import distributed

    log = distributed.main_only(log)
    distributed.quiet_replicas()
    if distributed.world_size() > 1:
        log(f"processes: {distributed.world_size()} (data and doctor on rank 0, shared with every rank)")
    data, doctor = distributed.once(lambda: _data_and_doctor(cfg, force, log))
    model = build_model(cfg, data, log)
    attention = getattr(model.config, "_attn_implementation", None) or "sdpa"
    rows, collator = (
        rows_and_collator(cfg, data, log, attention=attention) if cfg.method == "sft" else (data.examples, None)
    )
    steps = cfg.max_steps or max(1, int(cfg.epochs * len(rows) / (cfg.batch_size * cfg.grad_accum)))
    stop_rates = None
    if cfg.stop_eval_steps and data.eval_conversations:
        stop_rates = StopRateCallback(
            data.eval_conversations[:64], cfg.stop_eval_steps, cfg.max_new_tokens, renderer=data.renderer()
        )
    before = sample_generations(model, data, cfg.max_new_tokens) if distributed.is_main() else []
    if cfg.method == "sft":
        result = _fit_sft(cfg, data, model, rows, collator, steps, stop_rates, log)
    else:  # phase 5 on TRL's preference trainer
        from eosguard.recipes.train_preference import preference_arguments, preference_trainer

        args = preference_arguments(cfg, steps)
        trainer = preference_trainer(cfg, data, model, args, [stop_rates] if stop_rates else [])
        result = run_trainer(trainer, resume_from_checkpoint=_resume_point(cfg, log))
    log(f"trained {result.steps} steps in {result.seconds:.1f}s, final loss {result.final_loss}")
    if result.full_state_dict is not None and distributed.is_main():
        model = from_gathered(cfg, data, result.full_state_dict)
    history = stop_rates.history if stop_rates else []
    return finish(cfg, data, model, doctor, result, log, before=before, stop_history=history)


def _fit_sft(
    cfg: TrainConfig,
    data: TrainData,
    model: Any,
    rows: Sequence[Any],
    collator: Any,
    steps: int,
    stop_rates: StopRateCallback | None,
    log: Callable[[str], None],
) -> FitResult:
    """Phase 5 for SFT: eosguard's Trainer on the rows, the guarded collator."""
    args = cfg.trainer_arguments(steps)
    return fit(
        model,
        data.tokenizer,
        rows,
        collator,
        args,
        callbacks=[stop_rates] if stop_rates else [],
        resume_from_checkpoint=_resume_point(cfg, log),
        checkpoint_files={"eosguard_config.json": cfg.model_dump_json(indent=2)},
    )
