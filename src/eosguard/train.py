"""Training on `transformers.Trainer` (accelerate underneath), with the stop token guaranteed to be trained.

The pieces, each usable on its own (examples come from `eosguard.examples.build_examples`):
- `fit`: one Trainer run with a given collator (eosguard's own, or any other for comparison), returning the loss
  curve, steps and wall time;
- `save_model_folder`: a folder that works as-is with plain transformers: safetensors weights, the tokenizer with its
  chat template and a pad distinct from the end-of-turn token, and a generation_config whose eos is the
  end-of-turn id, so `generate()` stops by itself.

`eosguard train CONFIG.yaml` (see `eosguard.config`) wires them together in named phases (`load_data`,
`doctor_gate`, `build_model`, `rows_and_collator`, `fit`, `finish`). Why ~500 lines in one module: the phases and the
Trainer pieces they call are read together when following a run; each is a short function.

Run as:
    eosguard train examples/tiny.yaml
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, Trainer, TrainerCallback, TrainingArguments

from eosguard.config import TrainConfig
from eosguard.conversations import Conversation
from eosguard.doctor import DoctorReport
from eosguard.errors import EXIT_FINDINGS, EosguardError
from eosguard.evaluate import Generation
from eosguard.examples import PrepStats, build_examples
from eosguard.integrations.callbacks import StopRateCallback
from eosguard.loss import release_workspace
from eosguard.render import ChatRenderer
from eosguard.tokenizer_setup import SetupReport


class LossRecorder(TrainerCallback):
    """Keeps (step, loss) pairs from the Trainer's logs, for reports and figures."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))


@dataclass
class FitResult:
    steps: int
    seconds: float
    losses: list[tuple[int, float]] = field(default_factory=list)
    final_loss: float | None = None
    # Sharded runs (FSDP, DeepSpeed ZeRO-3): the full weights gathered on rank 0 after training, since no single
    # process holds them; None otherwise (the model object itself is complete).
    full_state_dict: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "seconds": self.seconds, "losses": self.losses, "final_loss": self.final_loss}


class EosguardTrainer(Trainer):
    """`transformers.Trainer` with two changes, both explicit:

    - the loss is computed at labelled positions only (`eosguard.loss.causal_lm_loss`), so the vocabulary
      projection costs what the trained tokens cost, not the padded sequence length;
    - checkpoints are written atomically: into `output_dir/.staging/checkpoint-N`, then renamed into place. A
      crash or SIGKILL while saving leaves the previous checkpoint intact, and `resume` picks the last complete one
      (a `.staging` folder is never taken for a checkpoint).
    """

    def __init__(
        self, *args: Any, selective_loss: bool = True, checkpoint_files: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.selective_loss = selective_loss
        self.checkpoint_files = checkpoint_files or {}  # written into every checkpoint (e.g. the resolved config)
        if selective_loss:
            from eosguard.loss import route_loss_through_forward

            route_loss_through_forward(self.model)  # so DDP's wrapper sees the call that computes the loss

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if not self.selective_loss or return_outputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # When divided by the token count of the whole accumulated batch, the loss is already scaled for
        # gradient accumulation; otherwise the Trainer divides the per-batch mean by the accumulation steps.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        # Through the (possibly DDP-wrapped) forward, into `causal_lm_loss` (`route_loss_through_forward`); under
        # bf16 the decoder and projection run in autocast, the cross-entropy in fp32.
        with self.accelerator.autocast():
            loss = model(**inputs, eosguard_labels=labels, eosguard_num_items=num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return loss

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        import os
        import shutil

        run_dir = self._get_output_dir(trial=trial)
        staging = os.path.join(run_dir, ".staging")
        main = self.is_world_process_zero()
        # Several processes write one checkpoint (rank 0 the weights and optimizer, each rank its RNG state): rank 0
        # clears the staging folder before anyone writes and commits it after everyone has.
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        original = self.args.output_dir
        self.args.output_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = original
        self.accelerator.wait_for_everyone()
        if main:
            name = f"checkpoint-{self.state.global_step}"
            for filename, text in self.checkpoint_files.items():
                Path(staging, name, filename).write_text(text)
            CheckpointWriter.commit(Path(staging, name), Path(run_dir, name))
            shutil.rmtree(staging, ignore_errors=True)
            if self.args.save_total_limit:
                from transformers.trainer_utils import rotate_checkpoints

                rotate_checkpoints(output_dir=run_dir, save_total_limit=self.args.save_total_limit)
        self.accelerator.wait_for_everyone()


class CheckpointWriter:
    """Moves a completely written checkpoint from staging into place in one rename (tests wrap `commit` to widen
    the window in which they kill a save)."""

    @staticmethod
    def commit(staging: Path, final: Path) -> None:
        import shutil

        if final.exists():
            shutil.rmtree(final)
        staging.replace(final)  # atomic on one filesystem


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def training_arguments(
    out_dir: str | Path,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    grad_accum: int = 1,
    seed: int = 0,
    bf16: bool = False,
    warmup_steps: int = 0,
    scheduler: str = "constant_with_warmup",
    weight_decay: float = 0.0,
    logging_steps: int = 10,
    save_steps: int | None = None,
    tensorboard: bool = False,
    progress: bool = True,
) -> TrainingArguments:
    """TrainingArguments with the choices eosguard makes explicit (columns kept, no hidden eval, seeded order)."""
    return TrainingArguments(
        output_dir=str(out_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=lr,
        lr_scheduler_type=scheduler,
        warmup_steps=warmup_steps,
        weight_decay=weight_decay,
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        logging_steps=logging_steps,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to=_report_to(tensorboard),
        remove_unused_columns=False,  # our examples carry exactly what the collator needs
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,  # every trainable parameter takes part in the loss
        log_level_replica="error",  # ranks other than 0 stay quiet: rank 0 prints each line once
    )


def _report_to(tensorboard: bool) -> list[str]:
    """TensorBoard when asked for and installed; asked for but missing is a clear error, not a crash mid-setup."""
    if not tensorboard:
        return []
    try:
        import tensorboard as _  # noqa: F401
    except ImportError:
        raise EosguardError("tensorboard: true needs the tensorboard package", hint="pip install tensorboard") from None
    return ["tensorboard"]


def fit(
    model: Any,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
    args: TrainingArguments,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    resume_from_checkpoint: str | bool | None = None,
    selective_loss: bool = True,
    checkpoint_files: dict[str, str] | None = None,
) -> FitResult:
    """One Trainer run; returns the loss curve, steps and wall time."""
    recorder = LossRecorder()
    model.config.use_cache = False  # a KV cache is for generation; in training it would also disable packing masks
    trainer = EosguardTrainer(
        selective_loss=selective_loss,
        checkpoint_files=checkpoint_files,
        model=model,
        args=args,
        train_dataset=_ListDataset(examples),
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[recorder, *callbacks],
    )
    if args.disable_tqdm:  # quiet mode (the demo): the losses are kept by LossRecorder, not printed as dicts
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    seconds = time.perf_counter() - start
    model.config.use_cache = True
    release_workspace(model)  # the loss's kept buffers (hundreds of MB) are not needed for generation
    losses = recorder.losses
    full = None
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:  # a collective: every rank takes part
        full = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return FitResult(
        steps=trainer.state.global_step,
        seconds=seconds,
        losses=losses,
        final_loss=losses[-1][1] if losses else None,
        full_state_dict=full,
    )


def stop_generation_config(model: Any, tokenizer: Any) -> GenerationConfig:
    """A generation config that stops on every stop token of the chat template: the end-of-turn token first (the
    tokenizer's eos after `prepare_tokenizer`), then the others the template closes replies with (a tool call's
    `<|call|>`, `<|eom_id|>`, ...), keeping any other eos ids the model had."""
    from eosguard.templates import ChatTemplate

    stops = [tokenizer.eos_token_id, *ChatTemplate(tokenizer).stop_ids]
    old = model.generation_config.eos_token_id if model.generation_config is not None else None
    old_ids = [old] if isinstance(old, int) else list(old or [])
    cfg = (
        GenerationConfig.from_model_config(model.config) if model.generation_config is None else model.generation_config
    )
    cfg.eos_token_id = list(dict.fromkeys([*stops, *old_ids]))
    cfg.pad_token_id = tokenizer.pad_token_id
    cfg.bos_token_id = tokenizer.bos_token_id
    return cfg


def save_model_folder(model: Any, tokenizer: Any, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Save a model folder that stops by itself with plain transformers (see the module doc).

    Written next to its destination first and renamed into place, so an interrupted save never leaves a
    half-written folder where a complete one is expected.
    """
    from eosguard.files import atomic_folder

    out = Path(out_dir)
    model.generation_config = stop_generation_config(model, tokenizer)
    model.config.eos_token_id = model.generation_config.eos_token_id[0]
    model.config.pad_token_id = tokenizer.pad_token_id
    with atomic_folder(out) as staging:
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        if extra is not None:
            (staging / "eosguard.json").write_text(json.dumps(extra, indent=2, default=str) + "\n")
    return out


# -- `eosguard train CONFIG.yaml` -----------------------------------------------------------------------------


def load_model(
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> Any:
    """Load a causal LM from a folder or hub id: safetensors only, no remote code unless asked."""
    from transformers import AutoModelForCausalLM

    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, use_safetensors=True, trust_remote_code=trust_remote_code, dtype=dtype, **extra
        )
    except (OSError, ValueError) as exc:
        raise EosguardError(
            f"cannot load a model from {name_or_path!r}: {str(exc).splitlines()[0]}",
            hint="eosguard loads safetensors weights only; convert .bin checkpoints first",
        ) from None


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


@dataclass
class TrainData:
    """What the data phase hands on: the prepared tokenizer, training examples and held-out conversations."""

    tokenizer: Any
    setup: SetupReport
    conversations: list[Conversation]
    eval_conversations: list[Conversation]
    examples: Sequence[dict[str, list[int]]]  # a list, or a prepared folder's examples read on demand
    load_summary: str
    prep: PrepStats
    tools: tuple[dict[str, Any], ...] | None = None  # offered in conversations that bring none (data.tools)

    def renderer(self) -> ChatRenderer:
        """The renderer of held-out prompts: this run's tokenizer and default tools."""
        return ChatRenderer(self.tokenizer, tools=self.tools)


def load_data(cfg: TrainConfig, log: Callable[[str], None]) -> TrainData:
    """Phase 1: prepare the tokenizer (each choice reported), read and validate data, render and fit examples."""
    from eosguard.conversations import load_conversations, load_tools
    from eosguard.tokenizer_setup import load_tokenizer, prepare_tokenizer

    tok = load_tokenizer(cfg.tokenizer or cfg.model, trust_remote_code=cfg.trust_remote_code)
    setup = prepare_tokenizer(tok, template=cfg.template, template_args=cfg.chat_template_kwargs)
    tools = load_tools(cfg.data.tools) if cfg.data.tools else None
    for line in setup.lines():
        log(f"tokenizer: {line}")
    eval_convs: list[Conversation] = []
    if cfg.data.eval:
        eval_convs, eval_report = load_conversations(cfg.data.eval, skip_invalid=cfg.data.skip_invalid)
        log(f"eval data: {eval_report.summary()}")
    if cfg.data.prepared:
        from eosguard.prepare import read_prepared

        options = {
            "max_length": cfg.max_length,
            "over_length": cfg.over_length,
            "train_on": cfg.train_on,
            "tools": list(tools) if tools else None,
        }
        prepared, manifest = read_prepared(cfg.data.prepared, tok, options)
        prep = PrepStats(**manifest["prep"])
        log(f"data: {cfg.data.prepared} (prepared: {manifest['load']}); {len(prepared)} examples read on demand")
        return TrainData(tok, setup, [], eval_convs, prepared, manifest["load"], prep, tools)
    convs, load_report = load_conversations(cfg.data.train, skip_invalid=cfg.data.skip_invalid)
    log(f"data: {load_report.summary()}")
    if not cfg.data.eval and cfg.data.eval_fraction > 0:
        import random

        order = list(range(len(convs)))
        random.Random(cfg.seed).shuffle(order)
        k = max(1, int(len(convs) * cfg.data.eval_fraction))
        eval_convs = [convs[i] for i in order[:k]]
        convs = [convs[i] for i in sorted(order[k:])]
    renderer = ChatRenderer(tok, train_on=cfg.train_on, tools=tools)
    examples, prep = build_examples(convs, renderer, max_length=cfg.max_length, over_length=cfg.over_length)
    log(f"examples: {prep.summary()}")
    return TrainData(tok, setup, convs, eval_convs, examples, load_report.summary(), prep, tools)


def doctor_gate(cfg: TrainConfig, data: TrainData, *, force: bool, log: Callable[[str], None]) -> DoctorReport:
    """Phase 2: the doctor judges eosguard's own pipeline on this configuration; an error that blocks training
    refuses the run (RefusedByDoctor, exit 1) unless forced."""
    from eosguard.doctor import diagnose

    doctor = diagnose(
        data.tokenizer, conversations=data.conversations[:256], max_length=cfg.max_length, tools=data.tools
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
    from eosguard.packing import choose_attention

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
    from eosguard.collate import PackedCollator, PadCollator
    from eosguard.guard import guard
    from eosguard.packing import PackedRows

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
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(cfg.output_dir) / "checkpoints"
    resume_from = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    log(
        f"resuming from {resume_from}"
        if resume_from
        else f"resume: no complete checkpoint in {ckpt_dir}, starting over"
    )
    return resume_from


REPORT_SAMPLES = 8  # held-out prompts generated before and after training for report.html


def sample_generations(model: Any, data: TrainData, max_new_tokens: int) -> list[Generation]:
    """Greedy generations for the first held-out prompts (empty without held-out data): the report's samples."""
    from eosguard.evaluate import evaluate_stopping

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
    from eosguard.distributed import is_main

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
        from eosguard.evaluate import evaluate_stopping

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
    from eosguard.files import write_text

    write_text(folder / "report.html", train_report_html(summary, doctor, before, after, stop_history, eot))
    log(f"saved {folder} (loads with AutoModelForCausalLM / AutoTokenizer; generate() stops at {eot}); report.html")
    return summary


def train_report_html(
    summary: dict[str, Any],
    doctor: DoctorReport,
    before: Sequence[Generation],
    after: Sequence[Generation],
    stop_history: Sequence[tuple[int, float]],
    end_of_turn: str,
) -> str:
    """report.html of `eosguard train`: loss and stop rate over training, samples before/after, findings, config."""
    from eosguard import pages

    train = summary["train"]
    ev = summary.get("eval")
    rows = [
        ("model", summary["config"]["model"]),
        ("data", summary["data"]),
        ("examples", summary["examples"]),
        ("steps", f"{train['steps']} in {train['seconds']:.1f} s"),
        ("final training loss", "-" if train["final_loss"] is None else f"{train['final_loss']:.4f}"),
        (
            "held-out stop rate",
            f"{ev['stop_rate']:.0%} of {ev['n']} prompts (runaway {ev['runaway_rate']:.0%}, role leaks "
            f"{ev['role_leak_rate']:.0%})"
            if ev
            else "not measured: no held-out data",
        ),
        ("forced past doctor errors", "yes" if summary["forced"] else "no"),
    ]
    fig = pages.training_figure(train["losses"], stop_history, end_of_turn)
    figure = pages.figure_svg(fig, "training loss by step; held-out stop rate by step (stop_eval_steps)")
    pages.close(fig)
    outputs = {}
    if before:
        outputs["before training"] = [(g.output, g.stopped) for g in before]
    if after:
        outputs["after training"] = [(g.output, g.stopped) for g in after]
    return pages.run_report_page(
        "eosguard train report",
        f"{summary['config']['model']} -> {summary['config']['output_dir']}",
        summary=pages.table([], rows),
        figures=[figure],
        findings={"doctor on this configuration": doctor.to_dict()["findings"]},
        tokenizer_lines=summary["tokenizer_setup"],
        prompts=[g.prompt for g in (after or before)],
        outputs=outputs,
        end_of_turn=end_of_turn,
        config=summary["config"],
    )


def _data_and_doctor(cfg: TrainConfig, force: bool, log: Callable[[str], None]) -> tuple[TrainData, DoctorReport]:
    data = load_data(cfg, log)
    return data, doctor_gate(cfg, data, force=force, log=log)


def train_from_config(cfg: TrainConfig, *, force: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run `eosguard train`: data, doctor gate, model, rows and collator, Trainer, a folder that stops by itself.

    Raises EosguardError (exit 2) for unusable input and `RefusedByDoctor` (exit 1) on an error finding unless
    `force` is set.
    """
    from eosguard import distributed

    log = distributed.main_only(log)
    distributed.quiet_replicas()
    if distributed.world_size() > 1:
        log(f"processes: {distributed.world_size()} (data and doctor on rank 0, shared with every rank)")
    data, doctor = distributed.once(lambda: _data_and_doctor(cfg, force, log))
    model = build_model(cfg, data, log)
    attention = getattr(model.config, "_attn_implementation", None) or "sdpa"
    rows, collator = rows_and_collator(cfg, data, log, attention=attention)
    steps = cfg.max_steps or max(1, int(cfg.epochs * len(rows) / (cfg.batch_size * cfg.grad_accum)))
    args = training_arguments(
        Path(cfg.output_dir) / "checkpoints",
        steps=steps,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        seed=cfg.seed,
        bf16=cfg.precision in ("bf16", "bf16-pure"),
        warmup_steps=cfg.warmup_steps,
        scheduler=cfg.scheduler,
        weight_decay=cfg.weight_decay,
        logging_steps=max(1, min(10, steps // 10)),
        save_steps=cfg.save_steps,
        tensorboard=cfg.tensorboard,
    )
    stop_rates = None
    if cfg.stop_eval_steps and data.eval_conversations:
        stop_rates = StopRateCallback(
            data.eval_conversations[:64], cfg.stop_eval_steps, cfg.max_new_tokens, renderer=data.renderer()
        )
    before = sample_generations(model, data, cfg.max_new_tokens) if distributed.is_main() else []
    result = fit(  # phase 5
        model,
        data.tokenizer,
        rows,
        collator,
        args,
        callbacks=[stop_rates] if stop_rates else [],
        resume_from_checkpoint=_resume_point(cfg, log),
        checkpoint_files={"eosguard_config.json": cfg.model_dump_json(indent=2)},
    )
    log(f"trained {result.steps} steps in {result.seconds:.1f}s, final loss {result.final_loss}")
    if result.full_state_dict is not None and distributed.is_main():
        # Sharded training: rebuild the same model (LoRA included) on rank 0 and load the gathered weights, so
        # merging, evaluation and saving run as in a single process. Not run here: accelerate runs DDP on CPU.
        model = build_model(cfg, data, lambda _line: None)
        model.load_state_dict(result.full_state_dict)
    history = stop_rates.history if stop_rates else []
    return finish(cfg, data, model, doctor, result, log, before=before, stop_history=history)


class RefusedByDoctor(EosguardError):
    """Training refused because of doctor errors (exit code 1)."""

    exit_code = EXIT_FINDINGS
