"""`eosguard doctor --prepared`: the ids and labels another tool wrote, audited against the tokenizer's template.

The seed's bug in three foreign forms (transformers' collator output with pad = eos saved to disk; axolotl's rows
with Gemma's `<end_of_turn>` at -100, packed; TRL's `assistant_masks` from a training template that leaves the end of
turn out), each beside the same rows built correctly; then each other finding on rows made to show it; then issue
#33's rows: batches with no user header, no stop token, or replies closed by the next turn's token (GLM); labels
written shifted by one; LLaMA-Factory's own rows cut inside its default system prompt; and the malformed inputs of
tests/inputs/bad_prepared/ (exit 2, with file, row or line and column), each beside its well-formed twin.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from transformers import DataCollatorForLanguageModeling
from typer.testing import CliRunner

from eosguard.chat.render import ChatRenderer
from eosguard.cli.app import app
from eosguard.data.conversations import conversation
from eosguard.data.tokenized import read_rows
from eosguard.recipes.tasks import split_tasks
from eosguard.testing.fixtures import (
    family_tokenizer,
    openhermes_tokenizer,
    smollm2_model_dir,
    trl_template,
    trl_tokenizer,
)
from tests.checks.test_doctor import model_folder
from tests.integrations.test_integrations import TEMPLATE_WITH_STOP_IN_MASK, TEMPLATE_WITHOUT_STOP_IN_MASK

CHATS = split_tasks(["first", "last"], 12, 0, seed=4)[0] + [
    conversation(("user", "Hi"), ("assistant", "Hello!"), ("user", "Count to three."), ("assistant", "1, 2, 3."))
]
REPLIES = sum(m.role == "assistant" for c in CHATS for m in c.messages)
INPUTS = Path(__file__).parents[1] / "inputs"
BAD = INPUTS / "bad_prepared"


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


def _masked_rows(tok, chats, *, system_first=False) -> list[dict]:
    """TRL's rows: the ids and `assistant_masks` its `apply_chat_template(..., return_assistant_tokens_mask=True)`
    writes with the tokenizer's (training) template; system_first: each chat as a system message and a reply alone."""
    rows = []
    for c in chats:
        messages = c.as_dicts()
        if system_first:
            messages = [{"role": "system", "content": messages[-2]["content"]}, messages[-1]]
        out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        rows.append({"input_ids": out["input_ids"], "assistant_masks": out["assistant_masks"]})
    return rows


def _cut_before_stop(tok, rows: list[dict], stop: str) -> list[dict]:
    """Each row cut just before its last stop token, as a plain truncating pipeline leaves a long reply."""
    stop_id = tok.convert_tokens_to_ids(stop)
    out = []
    for r in rows:
        at = len(r["input_ids"]) - 1 - r["input_ids"][::-1].index(stop_id)
        out.append({k: v[:at] for k, v in r.items()})
    return out


def _without(values: list[int], ids: list[int], token: int, to: int) -> list[int]:
    """`values` set to `to` wherever `ids` holds `token`."""
    return [to if i == token else v for i, v in zip(ids, values, strict=True)]


def _audit(tok, rows, tmp_path, name, *extra):
    folder, data = save(tok, rows, tmp_path / name, tmp_path)
    return doctor("--tokenizer", folder, "--prepared", data, *extra)


@pytest.mark.parametrize("style", ["gemma", "mistral-v3"])
def test_a_batch_of_replies_all_cut_before_their_stop_token(style, tmp_path):
    """Every reply cut before its stop token (Gemma's `<end_of_turn>`; Mistral's `</s>`, which its `[INST]` user turns
    never hold: that batch has no stop token at all): each cut reply counted, never a crash; the rows uncut pass."""
    tok = family_tokenizer(style)
    single = [c for c in CHATS if sum(m.role == "assistant" for m in c.messages) == 1]
    rows = [r.to_example() for r in ChatRenderer(tok).examples(single)]
    code, report = _audit(tok, rows, tmp_path, "whole")
    assert code == 0 and not found(report) and report["facts"]["prepared"]["stop_trained"] == len(single)
    stop = ChatRenderer(tok).template.end_of_turn
    cut = _cut_before_stop(tok, rows, stop)
    assert style == "gemma" or not any(tok.convert_tokens_to_ids(stop) in r["input_ids"] for r in cut)
    code, report = _audit(tok, cut, tmp_path, "cut")
    ids = found(report)
    assert code == 0 and ids["truncation-drops-eos"]["count"] == len(single) and set(ids) == {"truncation-drops-eos"}


@pytest.mark.parametrize("template", ["with", "without"])
def test_a_batch_of_system_first_replies_with_no_user_turn(template, tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    tok.chat_template = TEMPLATE_WITH_STOP_IN_MASK if template == "with" else TEMPLATE_WITHOUT_STOP_IN_MASK
    rows = _masked_rows(tok, CHATS[:4], system_first=True)
    assert not any(tok.encode("user", add_special_tokens=False)[0] in r["input_ids"] for r in rows)
    code, report = _audit(tok, rows, tmp_path, "system-first")
    if template == "with":
        assert code == 0 and not found(report) and report["facts"]["prepared"]["stop_trained"] == 4
    else:
        assert code == 1 and found(report)["eos-masked"]["count"] == 4


@pytest.fixture(scope="module")
def glm(tmp_path_factory):
    """GLM-4.5's tokenizer (TRL's `glm4moe.jinja` on SmolLM2's vocabulary), saved; and TRL's rows for CHATS built
    with TRL's own training template (`glm4moe_training.jinja`): each reply's mask runs through the next turn's
    `<|user|>`, which closes it, and no user turn opens with a header of its own after a reply."""
    folder = tmp_path_factory.mktemp("glm")
    tok = trl_tokenizer("glm4moe")
    tok.pad_token = "<|endoftext|>"
    tok.save_pretrained(folder / "tok")
    tok.chat_template = trl_template("glm4moe_training.jinja")
    return tok, folder / "tok", _masked_rows(tok, CHATS)


def test_glm_replies_closed_by_the_next_turns_token(glm, tmp_path):
    """What closes a GLM reply is the next turn's `<|user|>` (eosguard trains it the same way): trained in TRL's
    masks, so the rows pass; the same rows with `<|user|>` out of the mask are `eos-masked`; and against a model
    that does not stop on `<|user|>` (its generation config: `<|endoftext|>` alone) nothing closes a reply at all:
    `template-no-eos`, and the rows' step says why it could not run."""
    tok, folder, rows = glm
    user = tok.convert_tokens_to_ids("<|user|>")
    assert all(r["input_ids"][-1] == user and r["assistant_masks"][-1] == 1 for r in rows)
    data = tmp_path / "glm.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(data))
    code, report = doctor("--tokenizer", folder, "--prepared", data)
    assert code == 0 and not found(report) and report["facts"]["prepared"]["stop_trained"] == REPLIES
    masked = [dict(r, assistant_masks=_without(r["assistant_masks"], r["input_ids"], user, 0)) for r in rows]
    datasets.Dataset.from_list(masked).to_parquet(str(tmp_path / "masked.parquet"))
    code, report = doctor("--tokenizer", folder, "--prepared", tmp_path / "masked.parquet")
    assert code == 1 and found(report)["eos-masked"]["count"] == REPLIES
    model = model_folder(tmp_path / "model", tok, [tok.convert_tokens_to_ids("<|endoftext|>")])
    code, report = doctor("--tokenizer", folder, "--model", model, "--prepared", data)
    step = next(s for s in report["steps"] if s["title"] == "prepared rows")
    assert code == 1 and "template-no-eos" in found(report) and step["skipped"] and "end-of-turn" in step["detail"]


def test_labels_shifted_by_one_are_read_unshifted_and_said(tmp_path):
    """Labels saved already shifted (`labels[i] = input_ids[i + 1]`) are recognised row by row, audited unshifted
    and named in the step; the seed's bug in that form is still `eos-masked`; rows as written are never taken for
    shifted ones."""
    tok = openhermes_tokenizer(pad="unk")
    rows = [r.to_example() for r in ChatRenderer(tok).examples(CHATS)]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    shifted = [dict(r, labels=[*r["labels"][1:], -100]) for r in rows]
    # The seed's bug, shifted: the label that predicts <|im_end|> (one position before it) at -100.
    masked = [dict(r, labels=_without(r["labels"], [*r["input_ids"][1:], -1], end, -100)) for r in shifted]
    cases = (("as-written", rows, 0, 0), ("shifted", shifted, 0, 0), ("masked", masked, 1, REPLIES))
    for name, data, code_, eos_masked in cases:
        code, report = _audit(tok, data, tmp_path, name)
        facts, step = report["facts"]["prepared"], next(s for s in report["steps"] if s["title"].startswith("rows"))
        assert code == code_ and facts["shifted_rows"] == (0 if name == "as-written" else len(rows)), name
        assert facts.get("eos-masked", {}).get("count", 0) == eos_masked and "prompt-trained" not in facts, name
        assert ("shifted by one" in step["detail"]) == (name != "as-written")


def test_llamafactory_rows_cut_inside_its_default_system_prompt_are_truncation():
    """LLaMA-Factory's own rows (`template: qwen`, `cutoff_len: 48`, long replies: tests/inputs/llamafactory/make.py)
    keep the start of its default system prompt and the start of the reply: the template's own format, cut, so
    reported as a cut (with the rows' length and the cutoff to raise), never as another format."""
    folder = INPUTS / "llamafactory" / "qwen-cutoff48" / "tokenized"
    code, report = doctor("--tokenizer", smollm2_model_dir(), "--prepared", folder)
    ids = found(report)
    assert code == 1 and set(ids) == {"reply-header-missing", "truncation-drops-eos"}
    assert ids["reply-header-missing"]["count"] == ids["truncation-drops-eos"]["count"] == 8
    for finding in ids.values():
        assert "48 tokens" in finding["message"] and "raise the cutoff" in finding["message"]


# file -> where the message must point, and the words it must hold (files made by tests/inputs/bad_prepared/make.py)
BAD_INPUTS = {
    "labels_nested.jsonl": (":2: ", "`labels` holds a list ([-100])"),
    "labels_half.jsonl": (":2: ", "`labels` holds 0.5"),
    "labels_string.jsonl": (":3: ", "`labels` is str, not a list"),
    "labels_cut_shifted.jsonl": (":2: ", "`labels` holds 59 tokens where `input_ids` holds 60 (shifted by one"),
    "labels_minus_one.jsonl": (":2: ", "`labels` holds -1: neither -100"),
    "ids_out_of_vocab.jsonl": (":3: ", "`input_ids` holds 99999: not an id of this tokenizer"),
    "rows_as_array.json": (":1: ", "a JSON array: rows are read as JSON Lines"),
    "labels_misaligned.parquet": (": row 1: ", "`labels` holds 62 tokens where `input_ids` holds 60"),
    "masks_misaligned.parquet": (": row 1: ", "`assistant_masks` holds 62 tokens where `input_ids` holds 60"),
    "attention_misaligned_dataset": (": row 0: ", "`attention_mask` holds 46 tokens where `input_ids` holds 44"),
    "labels_nested_dataset": (": row 0: ", "`labels` holds lists ([-100])"),
    "ids_null.parquet": (": row 1: ", "`input_ids` is null"),
    "no_input_ids.parquet": (": ", "no `input_ids` column (columns: ids, labels, text)"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_each_bad_prepared_input_exits_2_with_file_row_and_column(name):
    where, words = BAD_INPUTS[name]
    result = CliRunner().invoke(app, ["doctor", "--tokenizer", str(smollm2_model_dir()), "--prepared", str(BAD / name)])
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2 and f"{BAD / name}{where}" in output and words in output, output
    assert "Traceback" not in output
    if where != ": " and name != "rows_as_array.json":  # a row's fault: the file's columns named with it
        assert "(columns: input_ids, " in output


@pytest.mark.parametrize("name", ["good.jsonl", "good.parquet", "good_dataset", "last_run_prepared"])
def test_the_well_formed_twins_of_the_bad_inputs_pass(name):
    """The rows the bad inputs were made from, in each format; and axolotl's `last_run_prepared` root, a
    `datasets` folder per content hash, each read whole (never its metadata files as rows)."""
    code, report = doctor("--tokenizer", smollm2_model_dir(), "--prepared", BAD / name)
    facts = report["facts"]["prepared"]
    assert code == 0 and not found(report) and facts["rows"] == 3 and facts["stop_trained"] == 4


def test_bad_prepared_input_exits_2_with_its_place(tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    tok.save_pretrained(tmp_path / "tok")
    gap = tmp_path / "gap.jsonl"
    gap.write_text('{"input_ids": [1, 2], "labels": [1, 2]}\n\n{"input_ids": [1, 2]}\n')
    cases = {tmp_path / "missing": "no such file or folder", gap: f"{gap}:3: no `labels`, which other rows"}
    for path, message in cases.items():
        result = CliRunner().invoke(app, ["doctor", "--tokenizer", str(tmp_path / "tok"), "--prepared", str(path)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_a_large_folder_is_read_in_batches_of_tokens(tmp_path):
    tok = openhermes_tokenizer(pad="unk")
    one = ChatRenderer(tok).examples(CHATS[:1])[0].to_example()
    n, length = 10_000, len(one["input_ids"])
    long_row = {"input_ids": one["input_ids"] * 40, "labels": one["labels"] * 40}  # one row of 40 chats
    rows = {k: [one[k]] * n + [long_row[k]] for k in ("input_ids", "labels")}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "big"))
    budget = 20 * length
    sizes = [(len(b), int(b.offsets[-1])) for b in read_rows(tmp_path / "big", tokens=budget)]
    assert sum(r for r, _ in sizes) == n + 1 and sizes[-1] == (1, 40 * length)  # the long row alone
    assert all(t <= budget for _, t in sizes[:-1]) and len(sizes) == -(-n // 20) + 1
    tok.save_pretrained(tmp_path / "tok")
    code, report = doctor("--tokenizer", tmp_path / "tok", "--prepared", tmp_path / "big")
    facts = report["facts"]["prepared"]
    replies = sum(m.role == "assistant" for m in CHATS[0].messages)
    assert code == 0 and facts["rows"] == n + 1 and facts["sequences"] == n + 1
    assert facts["replies"] == facts["stop_trained"] == replies * (n + 40)
