"""The floor of any preprocessing, as a whole process: the tokenizer's own `encode_batch` on text already rendered by
the chat template, read from a file (one JSON string per line) and written as an Arrow list column with pyarrow.

Run as:
    python benchmarks/encode_only.py RENDERED.jsonl TOKENIZER_DIR OUT_DIR
"""

import json
import sys
from pathlib import Path

import pyarrow as pa
from transformers import AutoTokenizer

rendered, tokenizer_dir, out = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(tokenizer_dir)
texts = [json.loads(line) for line in Path(rendered).read_text().splitlines()]
ids = [e.ids for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
Path(out).mkdir(parents=True, exist_ok=True)
with (
    pa.OSFile(str(Path(out) / "ids.arrow"), "wb") as sink,
    pa.ipc.new_stream(sink, pa.schema([("input_ids", pa.list_(pa.int32()))])) as w,
):
    w.write_batch(pa.record_batch([pa.array(ids, type=pa.list_(pa.int32()))], names=["input_ids"]))
