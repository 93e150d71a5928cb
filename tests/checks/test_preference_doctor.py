"""`eosguard doctor` on preference data (#34): the rows TRL 1.16's own DPO / KTO preprocessing makes of records
(`--data --collator trl`, its `_prepare_dataset` run for real), eosguard's rows of the same records (`--collator
eosguard`: they must pass), rows saved to disk (`--prepared`: TRL's, LLaMA-Factory's), axolotl's and
LLaMA-Factory's preference configs; each finding beside its correct twin (exit 0), then malformed preference rows
(exit 2 naming the file, the row or line and the column; tests/inputs/bad_preference/make.py writes them)."""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eosguard.cli.app import app
from eosguard.testing.fixtures import family_tokenizer, smollm2_model_dir, trl_tokenizer

trl = pytest.importorskip("trl")

INPUTS = Path(__file__).parents[1] / "inputs"
N = 6  # pairs per file
LONG = " ".join(["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"] * 2)


def _chatml(q: str) -> str:
    return f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def _pair(q: str, good: str, bad: str, text: bool, closer: str = "") -> dict:
    if text:
        return {"prompt": _chatml(q), "chosen": good + closer, "rejected": bad + closer}
    return {"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}]}  # fmt: skip


RECORDS = {  # name -> one record per i
    "templated": lambda i: _pair(f"What is {i} + {i}?", str(2 * i), "I forget.", True, "<|im_end|>\n"),
    "untemplated": lambda i: _pair(f"What is {i} + {i}?", str(2 * i), "I forget.", True),
    "messages": lambda i: _pair(f"What is {i} + {i}?", str(2 * i), "I forget.", False),
    "long-chosen": lambda i: _pair(f"Count from {i} upwards, in words.", LONG, "No.", False),
    "newline-first": lambda i: _pair(f"Greet me {i}.", "\n\nHello", "No.", False),
    "kto-long": lambda i: {"prompt": [{"role": "user", "content": f"Count from {i}."}], "label": i % 2 == 0,
                           "completion": [{"role": "assistant", "content": LONG if i % 2 == 0 else "No."}]},
}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The records above as JSONL, and the tokenizers: Qwen2.5's (eos `<|im_end|>`), its base model's (eos
    `<|endoftext|>`), and GLM-4.5's TRL template (a last reply closed by no token of its own)."""
    root = tmp_path_factory.mktemp("preference")
    out = {}
    for name, make in RECORDS.items():
        out[name] = root / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(make(i)) + "\n" for i in range(N)))
    for name, tok in (("qwen", family_tokenizer("qwen2.5")), ("qwen-base", family_tokenizer("qwen2.5", base=True)),
                      ("glm", trl_tokenizer("glm4moe"))):  # fmt: skip
        tok.save_pretrained(root / name)
        out[name] = root / name
    return out


def doctor(*args) -> tuple[int, dict[str, dict], dict]:
    result = CliRunner().invoke(app, ["doctor", *map(str, args), "--json"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    return result.exit_code, {f["id"]: f for f in report["findings"]}, report


def facts(report: dict) -> dict:
    return report["facts"]["preference"]


def test_templated_text_gets_a_second_closer_from_trl_and_messages_do_not(files):
    code, found, report = doctor("--tokenizer", files["qwen"], "--data", files["templated"], "--collator", "trl")
    doubled = found["closer-doubled"]
    # TRL appends eos_token (<|im_end|>) to `...<|im_end|>\n`: every chosen and every rejected completion, counted
    assert doubled["count"] == 2 * N and doubled["severity"] == "warning" and facts(report)["closed_once"] == 0
    assert f"{files['templated']}:1" in doubled["message"] and "'<|im_end|>' twice" in doubled["message"]
    for data, collator in (("messages", "trl"), ("templated", "eosguard")):  # TRL on messages; eosguard on the text
        code, found, report = doctor("--tokenizer", files["qwen"], "--data", files[data], "--collator", collator)
        assert code == 0 and not found and facts(report)["closed_once"] == 2 * N, (data, collator)


def test_a_base_tokenizers_eos_where_the_template_closes_with_its_end_of_turn(files):
    base = files["qwen-base"]
    code, found, _ = doctor("--tokenizer", base, "--data", files["untemplated"], "--collator", "trl")
    assert code == 1 and found["closer-replaced"]["count"] == 2 * N and "'<|endoftext|>'" in found[
        "closer-replaced"]["message"]  # fmt: skip
    code, found, _ = doctor("--tokenizer", base, "--data", files["templated"], "--collator", "trl")
    assert code == 0 and found["closer-doubled"]["count"] == 2 * N  # <|im_end|>\n then TRL's <|endoftext|>
    assert "with the eos '<|endoftext|>' after it" in found["closer-doubled"]["message"]
    for data, collator in (("messages", "trl"), ("untemplated", "eosguard")):
        code, found, _ = doctor("--tokenizer", base, "--data", files[data], "--collator", collator)
        assert code == 0 and not found, (data, collator)


@pytest.mark.parametrize(("collator", "length", "mode"), [("trl", 48, "keep_start"), ("trl", 1024, "keep_start"),
                         ("eosguard", 48, "keep_start"), ("trl", 48, "keep_end")])  # fmt: skip
def test_keep_start_truncation_of_longer_chosen_completions_teaches_not_to_stop(files, collator, length, mode):
    code, found, report = doctor("--tokenizer", files["qwen"], "--data", files["long-chosen"], "--collator", collator,
                                 "--max-length", length, "--truncation-mode", mode)  # fmt: skip
    if (collator, length, mode) == ("trl", 48, "keep_start"):
        assert code == 1 and found["chosen-loses-stop"]["count"] == N
        assert found["truncation-drops-eos"]["count"] == N and "6 chosen)" in found["truncation-drops-eos"]["message"]
        assert facts(report)["pairs_only_rejected_without_stop"] == 0
    elif collator == "eosguard":  # one-turn prompts: no earlier turn to drop, so eosguard drops each pair, counted
        assert code == 0 and not found and facts(report)["dropped_too_long_to_hold_whole"] == N
        assert "6 records dropped by eosguard" in json.dumps(report["steps"]) and "skipped" in json.dumps(
            report["steps"]
        )
    elif mode == "keep_end":  # every stop token kept; the long chosen replies' prompts cut at their start instead
        assert code == 0 and set(found) == {"prompt-truncated"} and found["prompt-truncated"]["count"] == N
        assert "6 chosen)" in found["prompt-truncated"]["message"]
        assert facts(report)["without_stop"] == {"chosen": 0, "rejected": 0}
    else:  # the run's length holds every pair
        assert code == 0 and not found and facts(report)["without_stop"] == {"chosen": 0, "rejected": 0}
    if mode == "keep_end":
        assert (
            f"'keep_start' (TRL's default) would drop 0 rows (the prompt alone fills max_length) and cut {N}"
            in (report["steps"][-1]["detail"])
        )


def test_trl_cuts_a_prompt_that_is_not_a_prefix_and_glm_closes_no_last_reply(files):
    code, found, _ = doctor("--tokenizer", files["qwen"], "--data", files["newline-first"], "--collator", "trl")
    assert code == 0 and found["prompt-not-prefix"]["count"] == N  # "\n" of the generation prompt merged into "\n\n"
    assert "ends with '\\n<|im_start|>assistant'" in found["prompt-not-prefix"]["message"]
    code, found, _ = doctor("--tokenizer", files["glm"], "--data", files["messages"], "--collator", "trl")
    assert code == 1 and found["completion-unclosed"]["count"] == 2 * N
    for data, tok in (("newline-first", "qwen"), ("messages", "glm")):  # eosguard's rows of the same records
        code, found, _ = doctor("--tokenizer", files[tok], "--data", files[data], "--collator", "eosguard")
        assert code == 0 and not found, (data, tok)


@pytest.mark.parametrize("length", [40, 1024])
def test_kto_desirable_completions_cut_more_often_than_undesirable(files, length):
    code, found, report = doctor("--tokenizer", files["qwen"], "--data", files["kto-long"], "--collator", "trl",
                                 "--max-length", length)  # fmt: skip
    if length == 40:
        assert code == 1 and found["chosen-loses-stop"]["count"] == N // 2
        assert f"{N // 2} of {N // 2} desirable" in found["chosen-loses-stop"]["message"]
    else:
        assert code == 0 and not found and facts(report)["completions"]["desirable"] == N // 2


def test_trls_own_rows_saved_to_disk(files, tmp_path):
    """TRL's processed datasets as a user saves them, audited with --prepared: DPO's (its text columns beside
    `prompt_ids` / `chosen_ids` / `rejected_ids`) of templated text, ORPO's (`tokenize_row`: `chosen_input_ids` /
    `chosen_labels`, ...) of messages, whose ChatML completions end in a newline, so TRL appends `<|im_end|>` again."""
    import datasets
    from trl.data_utils import maybe_apply_chat_template
    from trl.experimental.orpo import ORPOTrainer

    tok = family_tokenizer("qwen2.5")
    args = trl.DPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False)
    records = datasets.load_dataset("json", data_files=str(files["templated"]), split="train")
    rows = trl.DPOTrainer._prepare_dataset(types.SimpleNamespace(_tokenizer=tok), records, tok, args, "train")
    rows.to_parquet(str(tmp_path / "dpo.parquet"))
    orpo = types.SimpleNamespace(processing_class=tok, is_encoder_decoder=False, max_length=1024)
    orpo.build_tokenized_answer = types.MethodType(ORPOTrainer.build_tokenized_answer, orpo)
    chats = [maybe_apply_chat_template(RECORDS["messages"](i), tok) for i in range(N)]
    datasets.Dataset.from_list([ORPOTrainer.tokenize_row(orpo, c) for c in chats]).to_parquet(
        str(tmp_path / "orpo.parquet")
    )
    for name in ("dpo.parquet", "orpo.parquet"):
        code, found, _ = doctor("--tokenizer", files["qwen"], "--prepared", tmp_path / name)
        assert code == 0 and found["closer-doubled"]["count"] == 2 * N, name
        assert f"{name} row 0" in found["closer-doubled"]["message"] and "'<|im_end|>' twice" in found[
            "closer-doubled"]["message"]  # fmt: skip


LF_CONFIG = textwrap.dedent("""\
    model_name_or_path: HuggingFaceTB/SmolLM2-135M-Instruct
    stage: dpo
    pref_loss: {loss}
    template: qwen
    cutoff_len: {cutoff}
    tokenized_path: {rows}
""")


@pytest.mark.parametrize(("rows", "cutoff"), [("pairwise-cutoff48", 48), ("pairwise", 1024)])
def test_llamafactory_pairwise_rows_cut_by_cutoff_len(tmp_path, rows, cutoff):
    path = INPUTS / "llamafactory" / rows / "tokenized"
    config = tmp_path / "dpo.yaml"
    config.write_text(LF_CONFIG.format(loss="orpo", cutoff=cutoff, rows=path))
    code, found, report = doctor("--config", config, "--tokenizer", smollm2_model_dir())
    if cutoff == 48:  # infer_seqlen cut the long chosen replies, not the short rejected ones
        assert code == 1 and found["chosen-loses-stop"]["count"] == 8 and found["completion-unclosed"]["count"] == 8
        assert found["chosen-loses-stop"]["fix"].startswith("LLaMA-Factory: a larger `cutoff_len`")
    else:
        assert code == 0 and not found and facts(report)["closed_once"] == 16
    detail = next(s for s in report["steps"] if s["title"].startswith("llamafactory preference run"))["detail"]
    assert "`pref_loss: orpo`" in detail and f"`cutoff_len: {cutoff}`" in detail


AXOLOTL_DPO = textwrap.dedent("""\
    base_model: Qwen/Qwen2.5-0.5B
    rl: dpo
    chat_template: tokenizer_default
    datasets:
      - path: pairs.jsonl
        type: chat_template.default
    sequence_len: 1024
    excess_length_strategy: {strategy}
""")


@pytest.mark.parametrize("fixed", [False, True])
def test_axolotl_dpo_on_a_base_tokenizer_appends_its_eos_after_the_end_of_turn(files, tmp_path, fixed):
    """axolotl's `chat_template.default` writes `...<|im_end|>`; TRL appends the eos axolotl set up unless the text
    ends with it: the base eos `<|endoftext|>` after every completion, unless `special_tokens.eos_token` is the end of
    turn. Said from the config, then counted on the text records axolotl saved, run through TRL's preprocessing."""
    import datasets

    text = AXOLOTL_DPO.format(strategy="truncate" if not fixed else "drop")
    text += 'special_tokens:\n  eos_token: "<|im_end|>"\n' if fixed else ""
    config = tmp_path / "dpo.yaml"
    config.write_text(text)
    code, found, _ = doctor("--config", config, "--tokenizer", files["qwen-base"])
    if not fixed:
        assert code == 0 and found["closer-doubled"]["fix"].startswith("axolotl: `special_tokens: {eos_token: END}`")
        assert "`excess_length_strategy: truncate`" in found["truncation-drops-eos"]["message"]
    else:
        assert code == 0 and not found
    saved = [{**RECORDS["templated"](i), "chosen": f"{2 * i}<|im_end|>", "rejected": "I forget.<|im_end|>"}
             for i in range(N)]  # fmt: skip
    datasets.Dataset.from_list(saved).save_to_disk(str(tmp_path / "prepared" / "abc123"))
    code, found, report = doctor("--config", config, "--tokenizer", files["qwen-base"], "--prepared",
                                 tmp_path / "prepared" / "abc123")  # fmt: skip
    assert facts(report)["max_length"] == 1024 and ("closer-doubled" in found) != fixed
    assert not fixed or facts(report)["closed_once"] == 2 * N
    assert fixed or found["closer-doubled"]["count"] == 2 * N


BAD = INPUTS / "bad_preference"
BAD_INPUTS = {  # file -> where the message must point, and the words it must hold
    "chosen_string.jsonl": (":2", "`chosen_ids` is str, not a list of token ids"),
    "rejected_missing.jsonl": (":3", "no `rejected_ids`, which other rows of this file have"),
    "ids_out_of_vocab.jsonl": (":2", "`rejected_ids` holds 99999: not an id of this tokenizer"),
    "label_string.jsonl": (":2", '`label` is "yes", not true / false'),
    "prompt_null.parquet": (": row 1", "`prompt_ids` is null"),
    "pairwise_prompts_differ.jsonl": (":3", "the chosen and rejected rows start with different prompts"),
    "records_dataset": (":", "preference records (text or messages), not rows of ids"),
    "invalid_utf8.jsonl": (":2", "invalid UTF-8 at byte 24"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_each_bad_preference_input_exits_2_with_file_row_and_column(name):
    where, words = BAD_INPUTS[name]
    result = CliRunner().invoke(app, ["doctor", "--tokenizer", str(smollm2_model_dir()), "--prepared", str(BAD / name)])
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and f"{BAD / name}{where}" in output and words in output, output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ["good.jsonl", "good.parquet", "good_dataset"])
def test_well_formed_preference_rows_pass(name):
    code, found, report = doctor("--tokenizer", smollm2_model_dir(), "--prepared", BAD / name)
    assert code == 0 and not found and facts(report)["closed_once"] == 6


@pytest.mark.parametrize(("data", "extra", "words"), [
    ("sft", ("--truncation-mode", "keep_end"), "--truncation-mode is TRL's preference collator's"),
    ("kto-long", ("--truncation-mode", "keep_end"), "KTO's collator keeps the start alone"),
    ("messages", ("--collator", "transformers"), "trained with TRL's preference collator, not 'transformers'"),
])  # fmt: skip
def test_options_that_do_not_apply_to_the_data_are_refused(files, tmp_path, data, extra, words):
    path = files.get(data) or tmp_path / "chats.jsonl"
    if data == "sft":
        path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": "Hello"}]}) + "\n")  # fmt: skip
    result = CliRunner().invoke(app, ["doctor", "--tokenizer", str(files["qwen"]), "--data", str(path), *extra])
    assert result.exit_code == 2 and words in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("collator", ["trl", "eosguard"])
def test_a_file_mixing_preference_formats_is_refused_at_its_line(files, tmp_path, collator):
    """TRL reads paired or unpaired, messages or text, off the first record (a pyarrow error on the rest)."""
    first = json.loads(files["messages"].read_text().splitlines()[0])
    for other in (RECORDS["untemplated"](1), RECORDS["kto-long"](1)):
        path = tmp_path / "mixed.jsonl"
        path.write_text(json.dumps(first) + "\n" + json.dumps(other) + "\n")
        result = CliRunner().invoke(app, ["doctor", "--tokenizer", str(files["qwen"]), "--data", str(path),
                                          "--collator", collator])  # fmt: skip
        output = " ".join(result.output.split())
        assert result.exit_code == 2 and f"{path}:2" in output and "where line 1 is a paired conversational" in output


def test_rows_eosguard_prepared_read_with_another_tokenizer_exit_2(files, tmp_path):
    """The ids would mean other text: every finding on them would be false (exit 2, not 1); its twin passes."""
    out = tmp_path / "rows"
    result = CliRunner().invoke(app, ["prepare", str(files["messages"]), "--tokenizer", str(smollm2_model_dir()),
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["doctor", "--tokenizer", str(files["qwen"]), "--prepared", str(out)])
    assert result.exit_code == 2 and "with another tokenizer" in result.output and "Traceback" not in result.output
    code, found, _ = doctor("--tokenizer", smollm2_model_dir(), "--prepared", out)
    assert code == 0 and not found


def test_chosen_completions_saved_without_their_closer_get_the_fix_for_the_rows_not_the_length(tmp_path):
    """Rows already cut before the collator: the fix is closing the completions, not a larger `max_length`."""
    rows = [json.loads(line) for line in (BAD / "good.jsonl").read_text().splitlines()]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(json.dumps({**r, "chosen_ids": r["chosen_ids"][:-1]}) + "\n" for r in rows))
    code, found, _ = doctor("--tokenizer", smollm2_model_dir(), "--prepared", cut)
    assert code == 1 and found["chosen-loses-stop"]["count"] == len(rows) and "truncation-drops-eos" not in found
    assert found["chosen-loses-stop"]["fix"].startswith("TRL: close each completion with the template's closing")
