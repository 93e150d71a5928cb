"""TRL's DPO preprocessing as a plain script: what `bench_preference.py` times against `eosguard prepare`.

`DPOTrainer._prepare_dataset` itself (TRL 1.16: the prompt extracted where needed, the tokenizer's eos appended to
plain-text completions, prompt and prompt + completion tokenized with the chat template, the completion cut where
the two diverge), called on a stand-in for the trainer that holds only the tokenizer it reads, so no model is loaded;
the result saved with `save_to_disk`. Only `datasets`, `transformers` and `trl` are imported.

Run as:
    python benchmarks/trl_dpo_prepare.py PAIRS.jsonl TOKENIZER_DIR OUT_DIR [MAX_LENGTH]
"""

import sys
from types import SimpleNamespace

import datasets
from transformers import AutoTokenizer
from trl import DPOConfig, DPOTrainer

data, tokenizer_dir, out = sys.argv[1:4]
max_length = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
tok = AutoTokenizer.from_pretrained(tokenizer_dir)
ds = datasets.load_dataset("json", data_files=data, split="train")
args = DPOConfig(output_dir=out + "-trainer", max_length=max_length, report_to=[], use_cpu=True)
stand_in = SimpleNamespace(_tokenizer=tok)
DPOTrainer._prepare_dataset(stand_in, ds, tok, args, "train").save_to_disk(out)
