"""eosguard's `transformers.Trainer`: the loss at labelled positions only, crash-safe checkpoints, and `fit`, one run.

`fit` is one Trainer run with a given collator (eosguard's own, or any other for comparison), returning the loss
curve, steps and wall time; `training_arguments` are the TrainingArguments with the choices eosguard makes explicit.
`eosguard train` (`eosguard.recipes.train`) and the demo both train through them.

Run as:
    eosguard train CONFIG.yaml
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from eosguard.base.errors import EosguardError
from eosguard.training.checkpoints import AtomicCheckpoints
from eosguard.training.loss import release_workspace


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


class EosguardTrainer(AtomicCheckpoints, Trainer):
    """`transformers.Trainer` with two changes, both explicit:

    - the loss is computed at labelled positions only (`eosguard.training.loss.causal_lm_loss`), so the vocabulary
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
            from eosguard.training.loss import route_loss_through_forward

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
    args_class: type[TrainingArguments] = TrainingArguments,
    **extra: Any,
) -> TrainingArguments:
    """TrainingArguments with the choices eosguard makes explicit (columns kept, no hidden eval, seeded order);
    `args_class`: a subclass (TRL's `DPOConfig`, ...) built with the same choices and its own `extra` settings."""
    return args_class(
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
        **extra,
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
    model.config.use_cache = False  # a KV cache is for generation; in training it would also disable packing masks
    trainer = EosguardTrainer(
        selective_loss=selective_loss,
        checkpoint_files=checkpoint_files,
        model=model,
        args=args,
        train_dataset=_ListDataset(examples),
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    return run_trainer(trainer, resume_from_checkpoint=resume_from_checkpoint)


def run_trainer(trainer: Trainer, *, resume_from_checkpoint: str | bool | None = None) -> FitResult:
    """Train with a built Trainer (eosguard's, or TRL's preference trainers) and return the loss curve, steps and
    wall time; after a sharded run, the gathered weights."""
    model, args = trainer.model, trainer.args
    model.config.use_cache = False
    recorder = LossRecorder()
    trainer.add_callback(recorder)
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
