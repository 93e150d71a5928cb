"""The guard of TRL's `GRPOTrainer` and `RLOOTrainer`: the stop set checked at the first step, the completions read
after every generation (`eosguard.integrations.guard_trainer` puts it in place for them).

TRL finishes a completion on `trainer.eos_token_ids` (the model's generation config eos ids and the tokenizer's eos;
`eosguard.checks.rl_stops` says what TRL does with them) and never reads the chat template. The guard wraps the
trainer's `_generate_and_score_completions` (the one place both trainers generate and score completions, TRL 1.16):

- before the first generation, a stop token of the template missing from `eos_token_ids` stops the run
  (`StopTokenLossError`, exit 3) with the cause and the fix;
- after each generation (every `check_every`-th), the completions as TRL judged them: the share that never finished,
  the share that ran past a stop token of the template (a wrong stop set: vLLM stops on the model folder's files, not
  on the trainer's), and whether each finished one keeps its stop token in the loss mask; the first is printed, each
  is added to `trainer.state.log_history`, and a completion past a stop token or a masked stop token stops the run.

The seam is a private method of TRL's: where it (or `eos_token_ids`) is missing, the guard refuses with a clear error
instead of checking nothing. A tokenizer whose pad is a stop token (TRL sets pad = eos where there is none) gets a
warning, not a refusal: this run builds its masks from lengths and keeps the stop token (checked above), while the
harm comes in a later SFT stage on the saved tokenizer and config, where the doctor's `pad-is-eos` and the collator
guard catch it.

Use as:
    from eosguard.integrations import guard_trainer
    guard_trainer(GRPOTrainer(model=..., reward_funcs=..., args=..., train_dataset=..., processing_class=tok)).train()
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from eosguard.base.errors import EosguardError, StopTokenLossError
from eosguard.chat.templates import template_for
from eosguard.checks.rl_stops import CompletionCheck, check_completions, fixed_stop_ids, missing_closers

log = logging.getLogger("eosguard")

ONLINE_RL = ("GRPOTrainer", "RLOOTrainer")
SEAM = "_generate_and_score_completions"


def online_rl_kind(trainer: Any) -> str | None:
    """`GRPOTrainer` or `RLOOTrainer` for TRL's (or a subclass), read off the class without importing trl; else None."""
    return next((c.__name__ for c in type(trainer).__mro__ if c.__name__ in ONLINE_RL and _from_trl(c)), None)


def _from_trl(cls: type) -> bool:
    return cls.__module__ == "trl" or cls.__module__.startswith("trl.")


def _trl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trl")
    except PackageNotFoundError:
        return "unknown"


class OnlineRLGuard:
    """Stands in for the trainer's `_generate_and_score_completions`: checks, calls the real one, reads its output.

    `first` holds the first generation's counts, `totals` every checked one's."""

    def __init__(self, trainer: Any, kind: str, mode: Literal["raise", "warn"] = "raise", check_every: int = 1):
        generate = getattr(trainer, SEAM, None)
        if not callable(generate) or not hasattr(trainer, "eos_token_ids"):
            raise EosguardError(
                f"this {kind} (trl {_trl_version()}) has no `{SEAM}` or `eos_token_ids`, where eosguard's guard reads "
                "the stop set and the completions (written against trl 1.16): it cannot check this run",
                hint="use a trl version the guard knows (1.16), or run without guard_trainer and watch "
                "completions/clipped_ratio",
            )
        from transformers import ProcessorMixin

        processing = getattr(trainer, "processing_class", None)
        self.tokenizer = processing.tokenizer if isinstance(processing, ProcessorMixin) else processing  # as TRL
        if self.tokenizer is None:
            raise EosguardError(f"the {kind} has no processing_class: the guard reads its chat template")
        self.chat = template_for(self.tokenizer)
        self.chat.require_end_of_turn()
        self.trainer, self.kind, self.mode = trainer, kind, mode
        self.check_every = max(1, check_every)
        self.generate = generate
        self.calls = 0
        self.first: CompletionCheck | None = None
        self.totals = CompletionCheck()
        self._warn_pad()

    def __call__(self, inputs: Any) -> Any:
        if self.calls == 0:
            self._report(self.stop_set_problem())
        output = self.generate(inputs)
        self.calls += 1
        if (self.calls - 1) % self.check_every == 0:
            self._read(output)
        return output

    # -- the stop set ---------------------------------------------------------------------------------------------

    def stop_set_problem(self) -> str | None:
        """Why the trainer's stop set would not finish every kind of reply, with the fix; None when it does."""
        ids = [int(i) for i in self.trainer.eos_token_ids]
        missing = missing_closers(self.chat, ids)
        if not missing:
            return None
        tokens = ", ".join(self.tokenizer.convert_ids_to_tokens(ids))
        fixed = fixed_stop_ids(self.chat, ids)
        limit = getattr(getattr(self.trainer, "args", None), "max_completion_length", None)
        return (
            f"{self.kind} finishes a completion only on ids {ids} ({tokens}): the model's "
            "generation_config.eos_token_id and the tokenizer's eos; it never reads the chat template, which closes "
            f"replies with {', '.join(missing)}. A reply the model closes there does not finish: generation runs on "
            f"to max_completion_length={limit}, the completion counts as truncated (completions/clipped_ratio), the "
            "reward scores and the loss trains what follows the reply's end, and the saved model runs on when served. "
            f"Fix: before building the trainer, model.generation_config.eos_token_id = {fixed} ({self.kind} reads it "
            "once, in __init__), or train from the folder `eosguard fix` writes (its generation_config.json lists "
            "every stop token)." + self._vllm_note(fixed)
        )

    def _vllm_note(self, fixed: list[int]) -> str:
        if not getattr(getattr(self.trainer, "args", None), "use_vllm", False):
            return ""
        return (
            " With use_vllm, TRL passes vLLM no stop ids: vLLM stops on the model folder's generation_config.json, so "
            f"repair the folder, or pass generation_kwargs={{'stop_token_ids': {fixed}}}."
        )

    # -- the completions ------------------------------------------------------------------------------------------

    def _read(self, output: Any) -> None:
        if not isinstance(output, dict) or not {"completion_ids", "completion_mask"} <= output.keys():
            raise EosguardError(
                f"{self.kind}.{SEAM} returned no completion_ids / completion_mask (trl {_trl_version()}; the guard "
                "was written against trl 1.16): it cannot read the completions",
                hint="use a trl version the guard knows (1.16), or run without guard_trainer",
            )
        closers = set(self.chat.stop_ids)
        pad = self.tokenizer.pad_token_id
        check = check_completions(output, [int(i) for i in self.trainer.eos_token_ids], pad, closers)
        self.totals += check
        state = getattr(self.trainer, "state", None)
        step = getattr(state, "global_step", 0)
        if self.first is None:
            self.first = check
            if self.trainer.is_world_process_zero():
                print(f"eosguard: {self.kind} step {step}: {check.line()}")
        if state is not None and check.completions:
            state.log_history.append(
                {
                    "step": step,
                    "eosguard/unfinished": check.unfinished / check.completions,
                    "eosguard/past_stop_token": check.past_closer / check.completions,
                    "eosguard/stop_masked": check.stop_masked,
                }
            )
        self._report(self.completion_problem(check))

    def completion_problem(self, check: CompletionCheck) -> str | None:
        """Why these completions show a wrong stop set or an untrained stop token; None when they do not."""
        problems = []
        if check.past_closer:
            stops = "/".join(self.chat.stop_tokens)
            ids = [int(i) for i in self.trainer.eos_token_ids]
            cause = self.stop_set_problem() or (
                f"the stop set {ids} holds them, so the generator did not stop there: TRL passes vLLM no stop ids and "
                "vLLM stops on the model folder's generation_config.json (repair the folder with `eosguard fix`, or "
                f"pass generation_kwargs={{'stop_token_ids': {fixed_stop_ids(self.chat, ids)}}}), or a rollout_func "
                "generated on"
            )
            problems.append(
                f"{check.past_closer} of {check.completions} completions run past a {stops} that closed the reply: "
                f"{cause}"
            )
        if check.stop_masked:
            problems.append(
                f"{check.stop_masked} of {check.finished} finished completions have their stop token out of the loss "
                "(completion_mask, or a tool / env mask, is 0 there): the policy is never taught to stop; a "
                "rollout_func's env_mask must keep the model's own stop token at 1"
            )
        return " ".join(problems) or None

    def _report(self, message: str | None) -> None:
        if message is None:
            return
        if self.mode == "raise":
            raise StopTokenLossError(message)
        log.warning("eosguard: !!! %s", message)

    # -- pad ------------------------------------------------------------------------------------------------------

    def _warn_pad(self) -> None:
        tok = self.tokenizer
        stops = {*self.chat.stop_ids, tok.eos_token_id}
        if tok.pad_token_id is None or tok.pad_token_id not in stops:
            return
        log.warning(
            "eosguard: !!! the tokenizer's pad %r (id %s) is a stop token: %s sets pad = eos where the tokenizer has "
            "none and writes that id into the model's config and generation config, which are saved with it. This run "
            "keeps its stop tokens in the loss (the guard checks it), but a later SFT stage whose collator masks "
            "labels equal to the pad (transformers' DataCollatorForLanguageModeling) erases every one. Fix: before "
            "building the trainer, give the tokenizer a pad that is no stop token (tokenizer.pad_token = "
            "tokenizer.unk_token, or eosguard.prepare_tokenizer)",
            tok.pad_token,
            tok.pad_token_id,
            self.kind,
        )


def guard_online_rl(
    trainer: Any, kind: str, mode: Literal["raise", "warn"] = "raise", check_every: int = 1
) -> OnlineRLGuard:
    """Put the guard in place of `trainer._generate_and_score_completions` (once); returns it."""
    current = getattr(trainer, SEAM, None)
    if isinstance(current, OnlineRLGuard):
        return current
    guard = OnlineRLGuard(trainer, kind, mode=mode, check_every=check_every)
    setattr(trainer, SEAM, guard)
    return guard


__all__ = ["OnlineRLGuard", "guard_online_rl", "online_rl_kind"]
