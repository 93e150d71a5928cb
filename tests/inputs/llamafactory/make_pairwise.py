"""LLaMA-Factory's own pairwise rows (`stage: dpo`, `pref_loss: sigmoid | orpo | simpo`) on SmolLM2, written here for
tests/checks/test_preference_doctor.py to audit.

Runs LLaMA-Factory 0.9.5's `get_template_and_fix_tokenizer` and `PairwiseDatasetProcessor.preprocess_dataset` (the
code `get_dataset(..., stage="rm")` maps over a DPO run's records) on eight pairs in its aligned format (`_prompt`,
`_response` = [chosen, rejected], as its converter leaves sharegpt records with `ranking: true`), `template: qwen`
(SmolLM2's own ChatML): long chosen replies, short rejected ones, a short system message. Its outputs, saved as
`get_dataset` saves `tokenized_path` (a DatasetDict):

- `pairwise/`: `cutoff_len: 1024`: every completion whole, through `<|im_end|>\\n`;
- `pairwise-cutoff48/`: `cutoff_len: 48`: `infer_seqlen` cuts chosen and rejected to one target length keeping their
  start, so every long chosen reply loses its `<|im_end|>` and every short rejected one keeps it.

It imports LLaMA-Factory's source (`pip download --no-deps llamafactory==0.9.5`, unzipped) with eosguard's venv, and
`omegaconf` (`pip install --target DEPS omegaconf`); its model loader (it needs trl <= 0.24) is never imported.

Run as (from the repository root, eosguard's venv active):
    python tests/inputs/llamafactory/make_pairwise.py /tmp/src/lf /tmp/lfp/deps
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import sys
import types
from pathlib import Path

HERE = Path(__file__).parent
CUTOFFS = {"pairwise": 1024, "pairwise-cutoff48": 48}
LONG = "It is long, and it goes on. " * 4
THINGS = ("river", "bridge", "lighthouse", "violin", "glacier", "library", "compass", "orchard")


def main(source: str, deps: str) -> None:
    stand_in = types.ModuleType("torchaudio")  # text only: never used
    stand_in.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules.setdefault("torchaudio", stand_in)
    sys.path[:0] = [source]
    sys.path.append(deps)
    os.environ["DISABLE_VERSION_CHECK"] = "1"  # its pins (transformers <= 5.6) are not this venv's
    import datasets
    from llamafactory.data.processor.pairwise import PairwiseDatasetProcessor
    from llamafactory.data.template import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments
    from transformers import AutoTokenizer

    from eosguard.testing.fixtures import smollm2_model_dir

    n = len(THINGS)
    examples = {
        "_prompt": [[{"role": "user", "content": f"Describe the {t}."}] for t in THINGS],
        "_response": [[{"role": "assistant", "content": LONG}, {"role": "assistant", "content": "No."}]] * n,
        "_system": ["Be brief."] * n,
        "_tools": [""] * n,
        "_images": [None] * n,
        "_videos": [None] * n,
        "_audios": [None] * n,
    }
    for name, cutoff in CUTOFFS.items():
        tok = AutoTokenizer.from_pretrained(str(smollm2_model_dir()))
        args = DataArguments(template="qwen", cutoff_len=cutoff)
        template = get_template_and_fix_tokenizer(tok, args)
        rows = PairwiseDatasetProcessor(template=template, tokenizer=tok, processor=None, data_args=args)
        out = HERE / name / "tokenized"
        shutil.rmtree(out.parent, ignore_errors=True)
        data = datasets.Dataset.from_dict(rows.preprocess_dataset(examples))
        datasets.DatasetDict({"train": data}).save_to_disk(str(out))
        print(name, "->", out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
