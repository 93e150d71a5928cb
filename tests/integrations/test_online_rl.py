"""The guard inside TRL's GRPOTrainer and RLOOTrainer: a base-style stop set stops the run at its first step, the
template's stop set trains; the completions read as TRL judged them (held to TRL's own clipped_ratio)."""

import logging

import datasets
import pytest
import torch

from eosguard.base.errors import EosguardError, StopTokenLossError
from eosguard.integrations import guard_trainer
from eosguard.recipes.tasks import make_conversations
from eosguard.testing.fixtures import openhermes_tokenizer, tiny_mistral

EOS, IM_END = 2, 32000  # </s> (a base model's eos) and <|im_end|> (what the ChatML template closes replies with)


def _trainer(kind, tmp_path, stops, *, pad="unk", always_closes=False):
    """A tiny Mistral with a ChatML tokenizer whose eos is </s> (base-style); `stops`: its generation config's eos ids;
    always_closes: its output layer writes <|im_end|> whatever it reads (a model that closes every reply at once)."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    tok = openhermes_tokenizer(pad=pad)
    tok.eos_token = "</s>"
    model = tiny_mistral(len(tok), hidden=32, layers=1, heads=2, kv_heads=1, bos_id=1, eos_id=EOS, pad_id=None)
    model.generation_config.eos_token_id = stops
    if always_closes:
        model.lm_head = torch.nn.Linear(32, len(tok), bias=True)
        torch.nn.init.zeros_(model.lm_head.weight)
        torch.nn.init.zeros_(model.lm_head.bias)
        model.lm_head.bias.data[IM_END] = 30.0
    config, trainer = (GRPOConfig, GRPOTrainer) if kind == "grpo" else (RLOOConfig, RLOOTrainer)
    args = config(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        beta=0.0,  # no reference model (it would be loaded by name)
        gradient_checkpointing=False,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
    )
    rows = [{"prompt": c.as_dicts()[:-1]} for c in make_conversations(["repeat"], 4, seed=0)]

    def length(completions, **kwargs):
        return [float(len(c[0]["content"])) for c in completions]

    return trainer(
        model=model,
        reward_funcs=length,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tok,
    )


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_base_style_stop_set_stops_at_the_first_step_and_the_template_one_trains(kind, tmp_path):
    trainer = guard_trainer(_trainer(kind, tmp_path / "base", EOS))
    name = type(trainer).__name__
    with pytest.raises(StopTokenLossError, match=rf"{name} finishes a completion only on ids \[2\] \(</s>\)") as err:
        trainer.train()
    assert f"<|im_end|> (id {IM_END}; final answers)" in str(err.value)
    assert f"model.generation_config.eos_token_id = [{EOS}, {IM_END}]" in str(err.value)
    assert trainer.state.global_step == 0 and trainer._generate_and_score_completions.first is None

    trainer = guard_trainer(_trainer(kind, tmp_path / "fixed", [EOS, IM_END]))
    trainer.train()
    guard = trainer._generate_and_score_completions
    assert trainer.state.global_step == 1 and guard.first.completions == 4 and guard.first.past_closer == 0


def test_completions_read_as_trl_judged_them(tmp_path, caplog):
    """A model that closes every reply with <|im_end|> at once: with the base-style stop set (the guard warning
    instead of stopping) every completion runs past it; with the template's, every one finishes there and keeps it in
    the loss. The guard's share of unfinished completions is TRL's own clipped_ratio. No pad: TRL sets pad = eos."""
    caplog.set_level(logging.WARNING, logger="eosguard")
    for stops, unfinished in ((EOS, 4), ([EOS, IM_END], 0)):
        trainer = guard_trainer(
            _trainer("grpo", tmp_path / str(unfinished), stops, pad="none", always_closes=True), mode="warn"
        )
        trainer.train()
        check = trainer._generate_and_score_completions.first
        clipped = next(h["completions/clipped_ratio"] for h in trainer.state.log_history if "loss" in h)
        assert (check.completions, check.unfinished, check.stop_masked) == (4, unfinished, 0)
        assert check.past_closer == unfinished and check.unfinished / check.completions == clipped
    warnings = [r.getMessage() for r in caplog.records]
    assert any("4 of 4 completions run past a <|im_end|>" in w for w in warnings)
    pad = "the tokenizer's pad '</s>' (id 2) is a stop token: GRPOTrainer sets pad = eos"
    assert sum(pad in w for w in warnings) == 2


def test_a_trainer_without_the_seam_is_refused():
    fake = type("GRPOTrainer", (), {"__module__": "trl.trainer.grpo_trainer", "processing_class": None})()
    with pytest.raises(EosguardError, match="has no `_generate_and_score_completions` or `eos_token_ids`"):
        guard_trainer(fake)
