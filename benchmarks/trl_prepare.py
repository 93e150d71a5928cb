"""The TRL-path preprocessing as a plain script: what `bench_prepare.py` times against `eosguard prepare`.

TRL's conversational preprocessing with `assistant_only_loss`: the tokenizer's chat template (marked with
`{% generation %}`) applied to each conversation in `Dataset.map` with `return_assistant_tokens_mask=True`, labels
from that mask, and the result saved with `save_to_disk`. Only `datasets` and `transformers` are imported.

Run as:
    python benchmarks/trl_prepare.py DATA.jsonl TOKENIZER_DIR OUT_DIR
"""

import sys

import datasets
from transformers import AutoTokenizer

data, tokenizer_dir, out = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(tokenizer_dir)
ds = datasets.load_dataset("json", data_files=data, split="train")


def tokenize(example):
    enc = tok.apply_chat_template(
        example["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = enc["input_ids"]
    return {"input_ids": ids, "labels": [i if m else -100 for i, m in zip(ids, enc["assistant_masks"], strict=True)]}


ds.map(tokenize, remove_columns=ds.column_names).save_to_disk(out)
