"""TRL 1.16's own preference trainers on eosguard's rows as written: `eosguard prepare` writes them, TRL's
`DPOTrainer` / `KTOTrainer` train on the folder (TRL's collator, loss and reference unchanged), the guard proves every
completion's closing sequence inside TRL's `completion_mask`, and stops a run whose collator cuts it."""

from __future__ import annotations

import copy
import json

import datasets
import pytest
import torch

from eosguard.base.errors import StopTokenLossError
from eosguard.integrations.preference import preference_collator, rows_trainer
from eosguard.recipes.prepare import prepare_dataset
from eosguard.testing.fixtures import demo_tokenizer, tiny_mistral

trl = pytest.importorskip("trl")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Pairs and unpaired records, prepared by `eosguard prepare` (one process), with their tokenizer."""
    root = tmp_path_factory.mktemp("pref")
    with (root / "pairs.jsonl").open("w") as f, (root / "kto.jsonl").open("w") as g:
        for i in range(12):
            prompt = [{"role": "user", "content": f"What is {i} + {i}?"}]
            good, bad = {"role": "assistant", "content": str(2 * i)}, {"role": "assistant", "content": "I forget."}
            f.write(json.dumps({"prompt": prompt, "chosen": [good], "rejected": [bad]}) + "\n")
            g.write(json.dumps({"prompt": prompt, "completion": [good if i % 2 else bad], "label": bool(i % 2)}) + "\n")
    tok = demo_tokenizer()
    for name in ("pairs", "kto"):
        prepare_dataset([str(root / f"{name}.jsonl")], tok, root / name, num_proc=1)
    return root, tok


def _model(tok):
    return tiny_mistral(len(tok), hidden=32, layers=1, bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, pad_id=None)


def _train(trainer_class, config_class, data, tok, max_length, **config):
    model = _model(tok)
    args = config_class(
        output_dir=str(data.parent / f"run-{data.name}"),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        max_length=max_length,
        **config,
    )
    kind = "paired" if "chosen_ids" in datasets.load_from_disk(str(data)).column_names else "unpaired"
    collator = preference_collator(tok, kind, max_length=max_length)
    trainer = rows_trainer(trainer_class)(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=datasets.load_from_disk(str(data)),
        processing_class=tok,
        data_collator=collator,
    )
    before = model.get_input_embeddings().weight.detach().clone()
    trainer.train()
    return trainer, before, model


def test_dpo_trainer_trains_on_eosguards_rows_with_every_closer_in_its_completion_mask(prepared):
    root, tok = prepared
    trainer, before, model = _train(trl.DPOTrainer, trl.DPOConfig, root / "pairs", tok, 128)
    totals = trainer.data_collator.totals
    # 2 steps of 4 pairs, chosen and rejected: every completion found, trained, closed by its trained <|im_end|>.
    assert totals.supervised_turns >= 16 and totals.stop_trained == totals.supervised_turns
    assert trainer.state.global_step == 2 and not torch.equal(before, model.get_input_embeddings().weight)
    batch = trainer.data_collator.collator([datasets.load_from_disk(str(root / "pairs"))[0]])
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for ids, mask in zip(batch["input_ids"], batch["completion_mask"], strict=True):
        assert mask[ids == end][-1] == 1  # the completion's closer is inside TRL's completion mask, on both sides


def test_a_collator_that_cuts_the_closer_stops_the_run(prepared):
    root, tok = prepared
    row = datasets.load_from_disk(str(root / "pairs"))[0]
    limit = len(row["prompt_ids"]) + len(row["chosen_ids"])  # the longer rejected completion loses its <|im_end|>
    with pytest.raises(StopTokenLossError, match="end without their <\\|im_end\\|>"):
        _train(trl.DPOTrainer, trl.DPOConfig, root / "pairs", tok, limit)


def test_kto_trainer_trains_on_eosguards_unpaired_rows(prepared):
    root, tok = prepared
    trainer, _, _ = _train(trl.KTOTrainer, trl.KTOConfig, root / "kto", tok, 128)
    totals = trainer.data_collator.totals
    assert totals.supervised_turns >= 8 and totals.stop_trained == totals.supervised_turns
    assert trainer.state.global_step == 2
