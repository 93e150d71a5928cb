"""The guard inside TRL's SFTTrainer and transformers' Trainer, on their own collators and templates."""

import datasets
import pytest
from transformers import DataCollatorForLanguageModeling, Trainer

from eosguard.base.errors import StopTokenLossError
from eosguard.integrations import guard_trainer
from eosguard.recipes.tasks import make_conversations
from eosguard.testing.fixtures import openhermes_tokenizer, tiny_mistral
from eosguard.training.trainer import training_arguments

# A TRL training template whose {% generation %} block stops *before* <|im_end|>: assistant-only loss then never
# trains the stop token (TRL only logs a warning).
TEMPLATE_WITHOUT_STOP_IN_MASK = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ m['content'] }}{% endgeneration %}{{ '<|im_end|>\\n' }}{% else %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TEMPLATE_WITH_STOP_IN_MASK = TEMPLATE_WITHOUT_STOP_IN_MASK.replace(
    "{{ m['content'] }}{% endgeneration %}{{ '<|im_end|>\\n' }}",
    "{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}",
)


def _sft_trainer(template, tmp_path):
    from trl import SFTConfig, SFTTrainer

    tok = openhermes_tokenizer(pad="unk")
    tok.chat_template = template
    model = tiny_mistral(len(tok), hidden=32, layers=1, heads=2, kv_heads=1, bos_id=1, eos_id=32000, pad_id=0)
    rows = [{"messages": c.as_dicts()} for c in make_conversations(["repeat"], 16, seed=0)]
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        assistant_only_loss=True,
        report_to=[],
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        disable_tqdm=True,
    )
    return SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tok)


def test_guard_catches_trl_template_that_leaves_the_stop_token_unmasked(tmp_path):
    trainer = guard_trainer(_sft_trainer(TEMPLATE_WITHOUT_STOP_IN_MASK, tmp_path))
    with pytest.raises(StopTokenLossError, match="4 of 4 assistant turns"):
        trainer.train()


def test_guard_passes_trl_with_a_correct_template(tmp_path):
    trainer = guard_trainer(_sft_trainer(TEMPLATE_WITH_STOP_IN_MASK, tmp_path))
    trainer.train()
    totals = trainer.data_collator.totals  # the dataloader may collate one batch ahead: at least the 4 trained
    assert totals.stop_trained == totals.supervised_turns >= 4


def test_guard_in_plain_trainer_with_pad_equal_to_eos(tmp_path):
    tok = openhermes_tokenizer(pad="eos")
    model = tiny_mistral(len(tok), hidden=32, layers=1, heads=2, kv_heads=1, bos_id=1, eos_id=32000, pad_id=32000)
    texts = [tok.apply_chat_template(c.as_dicts(), tokenize=False) for c in make_conversations(["repeat"], 8, seed=0)]
    trainer = Trainer(
        model=model,
        args=training_arguments(tmp_path, steps=1, lr=1e-3, batch_size=4, progress=False),
        train_dataset=[tok(t) for t in texts],
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        processing_class=tok,
    )
    with pytest.raises(StopTokenLossError, match=r"pad_token_id == 32000"):
        guard_trainer(trainer).train()
