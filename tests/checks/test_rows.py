"""`eosguard doctor --prepared`: the ids and labels another tool wrote, audited against the tokenizer's template.

The seed's bug in three foreign forms (transformers' collator output with pad = eos saved to disk; axolotl's rows
with Gemma's `<end_of_turn>` at -100, packed; TRL's `assistant_masks` from a training template that leaves the end of
turn out), each beside the same rows built correctly; then each other finding on rows made to show it.
"""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from transformers import DataCollatorForLanguageModeling
from typer.testing import CliRunner

from eosguard.chat.render import ChatRenderer
from eosguard.cli.app import app
from eosguard.data.conversations import conversation
from eosguard.recipes.tasks import split_tasks
from eosguard.testing.fixtures import family_tokenizer, openhermes_tokenizer
from tests.integrations.test_integrations import TEMPLATE_WITH_STOP_IN_MASK, TEMPLATE_WITHOUT_STOP_IN_MASK

CHATS = split_tasks(["first", "last"], 12, 0, seed=4)[0] + [
    conversation(("user", "Hi"), ("assistant", "Hello!"), ("user", "Count to three."), ("assistant", "1, 2, 3."))
]
REPLIES = sum(m.role == "assistant" for c in CHATS for m in c.messages)


def doctor(*args) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["doctor", *map(str, args), "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def found(report: dict) -> dict[str, dict]:
    return {f["id"]: f for f in report["findings"]}


def save(tok, rows, path, tmp_path):
    tok.save_pretrained(tmp_path / "tok")
    if path.suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return tmp_path / "tok", path


@pytest.mark.parametrize("pad", ["eos", "unk"])
def test_transformers_collator_output_saved_to_disk(pad, tmp_path):
    tok = openhermes_tokenizer(pad=pad)
    texts = [tok.apply_chat_template(c.as_dicts(), tokenize=False) for c in CHATS]
    batch = DataCollatorForLanguageModeling(tok, mlm=False)([{"input_ids": i} for i in tok(texts)["input_ids"]])
    rows = []
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        keep = mask.bool()  # the rows without their padding, as a pipeline would have stored them
        rows.append({"input_ids": ids[keep].tolist(), "labels": labels[keep].tolist()})
    folder, data = save(tok, rows, tmp_path / "collated", tmp_path)
    code, report = doctor("--tokenizer", folder, "--prepared", data)
    ids = found(report)
    if pad == "eos":
        assert code == 1 and ids["eos-masked"]["count"] == REPLIES == report["facts"]["prepared"]["trained_replies"]
    else:
        assert code == 0 and "eos-masked" not in ids and report["facts"]["prepared"]["stop_trained"] == REPLIES
    assert ids["prompt-trained"]["severity"] == "warning"  # this collator trains the prompts too


def _axolotl_rows(tok, mask_end_of_turn: bool) -> list[dict]:
    """eosguard's rows, packed two examples a row (position_ids restart, `length`), as axolotl saves them; with
    `<end_of_turn>` at -100 as axolotl#3754's eot_tokens default did."""
    eot = tok.convert_tokens_to_ids("<end_of_turn>")
    examples = [r.to_example() for r in ChatRenderer(tok).examples(CHATS)]
    rows = []
    for a, b in zip(examples[::2], examples[1::2], strict=False):
        ids, labels = a["input_ids"] + b["input_ids"], a["labels"] + b["labels"]
        if mask_end_of_turn:
            labels = [-100 if i == eot else y for i, y in zip(ids, labels, strict=True)]
        positions = list(range(len(a["input_ids"]))) + list(range(len(b["input_ids"])))
        rows.append(
            {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "position_ids": positions,
             "length": len(ids)}
        )  # fmt: skip
    return rows


@pytest.mark.parametrize("masked", [True, False])
def test_axolotl_packed_rows_with_gemmas_end_of_turn_masked(masked, tmp_path):
    tok = family_tokenizer("gemma")
    rows = _axolotl_rows(tok, masked)
    folder, data = save(tok, rows, tmp_path / "prepared" / "abc123", tmp_path)
    code, report = doctor("--tokenizer", folder, "--prepared", data)
    facts = report["facts"]["prepared"]
    assert facts["sequences"] == len(CHATS) - len(CHATS) % 2 and facts["rows"] == len(rows)
    if masked:
        assert code == 1 and found(report)["eos-masked"]["count"] == facts["trained_replies"] > 0
        assert "<end_of_turn>" in found(report)["eos-masked"]["message"]
    else:
        assert code == 0 and all(f["severity"] == "warning" for f in report["findings"])
        assert facts["stop_trained"] == facts["trained_replies"] > 0


@pytest.mark.parametrize("template", ["without", "with"])
def test_trl_assistant_masks_from_a_training_template(template, tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    tok.chat_template = TEMPLATE_WITHOUT_STOP_IN_MASK if template == "without" else TEMPLATE_WITH_STOP_IN_MASK
    rows = []
    for c in CHATS:
        out = tok.apply_chat_template(c.as_dicts(), tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        rows.append({"input_ids": out["input_ids"], "assistant_masks": out["assistant_masks"]})
    folder, data = save(tok, rows, tmp_path / "trl.parquet", tmp_path)
    code, report = doctor("--tokenizer", folder, "--prepared", data)
    assert report["facts"]["prepared"]["labels_from"] == "assistant_masks"
    if template == "without":
        assert code == 1 and found(report)["eos-masked"]["count"] == REPLIES
    else:
        assert code == 0 and all(f["severity"] == "warning" for f in report["findings"])


def test_ids_alone_take_the_labels_the_named_collator_gives(tmp_path):
    tok = openhermes_tokenizer(pad="eos")
    texts = [tok.apply_chat_template(c.as_dicts(), tokenize=False) for c in CHATS]
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps({"input_ids": i}) + "\n" for i in tok(texts)["input_ids"]))
    tok.save_pretrained(tmp_path / "tok")
    code, report = doctor("--tokenizer", tmp_path / "tok", "--prepared", path, "--collator", "transformers")
    assert code == 1 and found(report)["eos-masked"]["count"] == REPLIES
    result = CliRunner().invoke(app, ["doctor", "--tokenizer", str(tmp_path / "tok"), "--prepared", str(path)])
    assert result.exit_code == 2 and "--collator" in result.output and "Traceback" not in result.output


def test_each_other_finding_on_rows_made_to_show_it(tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    good = [r.to_example() for r in ChatRenderer(tok).examples(CHATS[:4])]
    cut = dict(good[0], input_ids=good[0]["input_ids"][:-2], labels=good[0]["labels"][:-2])  # reply cut, no stop
    nothing = dict(good[1], labels=[-100] * len(good[1]["labels"]))
    plain = tok("Human: hi\nAssistant: hello", add_special_tokens=False)["input_ids"]  # another format
    foreign = {"input_ids": plain, "labels": plain}
    # LLaMA-Factory's cutoff_len keeps a short reply and cuts the prompt: a user turn, then the trained reply with no
    # assistant header before it.
    ids, labels = good[2]["input_ids"], good[2]["labels"]
    start = next(i for i, y in enumerate(labels) if y != -100)
    header = len(ids[:start]) - ids[:start][::-1].index(tok.convert_tokens_to_ids("<|im_start|>")) - 1
    headless = {"input_ids": ids[:header] + ids[start:], "labels": labels[:header] + labels[start:]}
    padded = dict(good[3], input_ids=good[3]["input_ids"] + [tok.pad_token_id] * 3)
    padded["labels"] = good[3]["labels"] + [tok.pad_token_id] * 3
    padded["attention_mask"] = [1] * len(good[3]["input_ids"]) + [0] * 3
    rows = [cut, nothing, foreign, headless, padded]
    for r in rows:
        r.setdefault("attention_mask", [1] * len(r["input_ids"]))
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok.save_pretrained(tmp_path / "tok")
    code, report = doctor("--tokenizer", tmp_path / "tok", "--prepared", path)
    ids = found(report)
    assert code == 1
    assert ids["truncation-drops-eos"]["count"] == 1 and f"{path}:1" in ids["truncation-drops-eos"]["message"]
    assert ids["no-trainable-tokens"]["count"] == 1 and f"{path}:2" in ids["no-trainable-tokens"]["message"]
    assert ids["template-mismatch"]["count"] == 1 and f"{path}:3" in ids["template-mismatch"]["message"]
    assert ids["reply-header-missing"]["count"] == 1 and f"{path}:4" in ids["reply-header-missing"]["message"]
    assert ids["pad-trained"]["count"] == 1 and f"{path}:5" in ids["pad-trained"]["message"]


def test_bad_prepared_input_exits_2_with_its_place(tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    tok.save_pretrained(tmp_path / "tok")
    short, gap = tmp_path / "short.jsonl", tmp_path / "gap.jsonl"
    short.write_text('{"input_ids": [1, 2], "labels": [1, 2]}\n{"input_ids": [1, 2], "labels": [1]}\n')
    gap.write_text('{"input_ids": [1, 2], "labels": [1, 2]}\n\n{"input_ids": [1, 2]}\n')
    cases = {
        tmp_path / "missing": "no such file or folder",
        short: f"{short}:2: `labels` and `input_ids` differ in length",
        gap: f"{gap}:3: no `labels`, which other rows of this file have",
    }
    for path, message in cases.items():
        result = CliRunner().invoke(app, ["doctor", "--tokenizer", str(tmp_path / "tok"), "--prepared", str(path)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_a_large_folder_is_read_in_batches(tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    one = ChatRenderer(tok).examples(CHATS[:1])[0].to_example()
    n = 10_000
    datasets.Dataset.from_dict({"input_ids": [one["input_ids"]] * n, "labels": [one["labels"]] * n}).save_to_disk(
        str(tmp_path / "big")
    )
    tok.save_pretrained(tmp_path / "tok")
    code, report = doctor("--tokenizer", tmp_path / "tok", "--prepared", tmp_path / "big")
    assert code == 0 and report["facts"]["prepared"]["rows"] == n and report["facts"]["prepared"]["stop_trained"] == n
    assert np.isfinite(report["facts"]["prepared"]["replies"])
