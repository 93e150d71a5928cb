"""`doctor --model` reads the stop tokens' own rows (safetensors, never the whole model) and judges them: a row at
zero, at the vocabulary's mean, random at the initialisation scale, or far below the trained rows' norms was never
trained. Tested on copies of SmolLM2-135M-Instruct's embedding (and output) tensors alone, each case beside a
trained row or model that passes; adapters by the rows PEFT loads from them."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from eosguard.chat.tokenizer_setup import prepare_tokenizer
from eosguard.checks.untrained import NORM_FLOOR, UNTRAINED, Tensor, Vocabulary
from eosguard.checks.weights import TIED, adapter_rows, stop_rows
from eosguard.cli.app import app
from eosguard.testing.fixtures import mistral_base_tokenizer, smollm2_model_dir, tiny_mistral
from tests.conftest import DATA

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"
END = 2  # <|im_end|>: SmolLM2's stop token
RANDOM, MEAN, KEPT = 100, 101, 102  # rows of the tied copy set random, to the mean, and kept as trained
NEW = 5  # the grown copy's new stop token: 64 new rows after SmolLM2's 49152
SMOL_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def doctor(*args):
    result = CliRunner().invoke(app, ["doctor", *map(str, args), "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def finding(report, finding_id="stop-token-untrained"):
    return next((f["message"] for f in report["findings"] if f["id"] == finding_id), None)


def mean_row(weight):
    """A new row as `resize_token_embeddings` starts it: transformers' own mean (and 1e-9 covariance) init."""
    from transformers import PreTrainedModel

    old, new = torch.nn.Embedding.from_pretrained(weight), torch.nn.Embedding(len(weight) + 1, weight.shape[1])
    PreTrainedModel._init_added_embeddings_weights_with_mean(None, old, new, len(weight), 1)
    return new.weight.data[-1]


def save_model(folder, tensors, **config):
    """A model folder of SmolLM2's config (changed by `config`), tokenizer and these tensors alone (bf16)."""
    folder.mkdir()
    smol = smollm2_model_dir()
    for name in SMOL_FILES:
        shutil.copy(smol / name, folder / name)
    (folder / "config.json").write_text(json.dumps({**json.loads((smol / "config.json").read_text()), **config}))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return folder


def save_adapter(folder, base, tensors, **config):
    """A PEFT LoRA adapter folder (keys as PEFT saves them) on a local base."""
    folder.mkdir()
    cfg = {"peft_type": "LORA", "base_model_name_or_path": str(base), "r": 8, "lora_alpha": 16, **config}
    (folder / "adapter_config.json").write_text(json.dumps({"target_modules": ["q_proj"], **cfg}))
    tensors = {f"base_model.model.{k}": v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """SmolLM2's embedding, and copies of it: tied with its stop row zeroed (and rows random, at the mean, kept);
    untied with the output stop row random; grown (a vocabulary of small trained rows plus 64 random ones)."""
    root = tmp_path_factory.mktemp("smol")
    with safe_open(str(smollm2_model_dir() / "model.safetensors"), "pt") as f:
        weight = f.get_tensor(EMBED)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(65, weight.shape[1], generator=g) * 0.02  # N(0, initializer_range): SmolLM2's 0.02
    tied, mean = weight.clone(), mean_row(weight)
    tied[END], tied[RANDOM], tied[MEAN] = 0.0, noise[0], mean
    head = weight.clone()
    head[END] = noise[0]
    small = torch.cat([weight * 0.05, noise[1:]])  # trained rows 0.05 x SmolLM2's (norm 0.16 median), then random
    return {
        "weight": weight,
        "mean": mean,
        "tied": save_model(root / "tied", {EMBED: tied}),
        "untied": save_model(root / "untied", {EMBED: weight, HEAD: head}, tie_word_embeddings=False),
        "grown": save_model(root / "grown", {EMBED: small}, vocab_size=len(small)),
        "root": root,
    }


def reasons(folder, ids, layer="input"):
    return [getattr(s, layer).reason for s in stop_rows(folder, [f"t{i}" for i in ids], ids)]


def test_smollm2_as_shipped_passes_and_its_stop_row_at_zero_does_not(smol):
    code, report = doctor("--tokenizer", smollm2_model_dir(), "--model", smollm2_model_dir())
    step = next(s for s in report["steps"] if s["title"] == "stop-token rows")
    assert code == 0 and step["ok"] and "<|im_end|> (id 2): input trained" in step["detail"]
    assert "output tied to the input" in step["detail"] and finding(report) is None

    code, report = doctor("--tokenizer", smol["tied"], "--model", smol["tied"])
    assert code == 1 and "<|im_end|> (id 2): input at zero" in finding(report)


def test_rows_at_random_or_at_the_mean_are_untrained_beside_a_trained_row(smol):
    zero, random, mean, kept = reasons(smol["tied"], [END, RANDOM, MEAN, KEPT])
    assert zero == "at zero" and mean == "at the vocabulary's mean" and kept is None
    assert random == "random at the initialisation scale (N(0, 0.02))"
    (state,) = stop_rows(smol["tied"], ["t"], [MEAN])
    assert state.input.from_mean < UNTRAINED and state.input.norm > NORM_FLOOR  # its norm alone would pass


def test_an_untied_output_row_left_random_is_found(smol):
    code, report = doctor("--tokenizer", smol["untied"], "--model", smol["untied"])
    assert code == 1 and "output random at the initialisation scale" in finding(report)
    assert "input trained" in finding(report)
    (kept,) = stop_rows(smol["untied"], ["t"], [KEPT])
    assert kept.output.reason is None and kept.input.reason is None and not kept.untrained


def test_an_untied_config_with_no_output_tensor(smol):
    folder = smol["root"] / "no-head"
    folder.mkdir()
    os.link(smol["tied"] / "model.safetensors", folder / "model.safetensors")
    config = json.loads((smol["tied"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    (state,) = stop_rows(folder, ["t"], [KEPT])
    assert state.untrained and "transformers initialises it at random" in state.output.reason
    (folder / "config.json").write_text(json.dumps(config))
    (state,) = stop_rows(folder, ["t"], [KEPT])
    assert not state.untrained and state.output == TIED
    # an output layer stored as packed integers (a quantized one): not read, and the step says so
    save_file({HEAD: torch.zeros(len(smol["weight"]), 288, dtype=torch.uint8)}, str(folder / "head.safetensors"))
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    (state,) = stop_rows(folder, ["t"], [KEPT])
    assert not state.untrained and state.unread == ["not read: lm_head.weight holds U8"]


def test_a_vocabulary_grown_by_random_rows(smol):
    """New rows at N(0, 0.02) among trained rows smaller than that (as Mistral-7B's are): neither their norm
    (3x the median) nor their distance to the mean gives them away, their direction and init scale do."""
    (new,), (old,) = stop_rows(smol["grown"], ["<new>"], [49152 + NEW]), stop_rows(smol["grown"], ["t"], [KEPT])
    assert new.input.reason == "random at the initialisation scale (N(0, 0.02))"
    assert new.input.norm > 2 and new.input.from_mean > 1
    assert old.input.reason is None


def test_every_row_of_smollm2_is_judged_trained_and_random_rows_are_not(smol, capsys):
    """The measurements the rule rests on (figures in weights.py's docstring; `pytest -s` prints them)."""
    weight = smol["weight"]
    tensor = Tensor(smollm2_model_dir() / "model.safetensors", EMBED)
    vocab = Vocabulary(tensor, 0.02)
    rows = vocab.judge(weight)
    assert vocab.stands_aside is None and not [r for r in rows if r.reason]
    draws = torch.randn(2000, weight.shape[1], generator=torch.Generator().manual_seed(1)) * 0.02
    judged = vocab.judge(draws)
    assert {r.reason for r in judged} == {"random at the initialisation scale (N(0, 0.02))"}
    assert vocab.judge(smol["mean"][None])[0].reason == "at the vocabulary's mean"
    # an initializer_range whose rows have the trained rows' norms: the random-row rule stands aside, none flagged
    matched = Vocabulary(tensor, vocab.norm / math.sqrt(weight.shape[1]))
    assert matched.stands_aside and not [r for r in matched.judge(weight) if r.reason]

    def share(x):
        return ((x @ vocab.basis) ** 2).sum(1) / x.norm(dim=1) ** 2

    with capsys.disabled():
        norms, dists = [r.norm for r in rows], [r.from_mean for r in rows]
        print(f"\ntrained: norm {min(norms):.3g}-{max(norms):.3g} x median {vocab.norm:.3g}, from mean ", end="")
        print(
            f"{min(dists):.3g}-{max(dists):.3g}; energy in 8 directions median {share(weight).median():.3g}, ", end=""
        )
        print(f"0.1% {share(weight).quantile(0.001):.3g}; random bound {vocab.blind:.3g}")
        print(f"N(0, 0.02): norm {min(r.norm for r in judged):.3g}-{max(r.norm for r in judged):.3g}, ", end="")
        print(f"energy median {share(draws).median():.3g} max {share(draws).max():.3g}; ", end="")
        print(f"mean row: from mean {vocab.judge(smol['mean'][None])[0].from_mean:.2g}")


# -- adapters: the rows PEFT loads from them -------------------------------------------------------------------


def judged(adapter, base, ids=(END,)):
    config = json.loads((base / "config.json").read_text())
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    states, why = adapter_rows(adapter, base, adapter_config, config, [f"t{i}" for i in ids], list(ids))
    assert states is not None, why
    return states[0]


def test_an_adapter_saving_only_the_embedding_of_an_untied_model_leaves_its_output_rows(smol):
    base, weight = smol["untied"], smol["weight"]
    only = save_adapter(smol["root"] / "embed-only", base, {EMBED: weight}, modules_to_save=["embed_tokens"])
    code, report = doctor("--tokenizer", base, "--model", only)
    assert code == 1 and "output random at the initialisation scale" in finding(report)
    assert "output: the base's" in finding(report) and "input trained" in finding(report)
    config = json.loads((base / "config.json").read_text())
    states, _ = adapter_rows(only, None, json.loads((only / "adapter_config.json").read_text()), config, ["t"], [END])
    assert states[0].input.reason is None and states[0].unread == ["not read: the adapter's base is not a local folder"]

    tokens = {"embed_tokens": [END], "lm_head": [END]}
    both = {
        "model.embed_tokens.token_adapter.trainable_tokens_delta": weight[END][None],
        "lm_head.token_adapter.trainable_tokens_delta": weight[END][None],
    }
    both = save_adapter(smol["root"] / "both", base, both, trainable_token_indices=tokens)
    code, report = doctor("--tokenizer", base, "--model", both)
    assert code == 0 and finding(report) is None
    assert judged(both, base).source == "input: the adapter's trainable tokens; output: the adapter's trainable tokens"


def test_a_tied_model_adapter_trains_its_output_rows_only_where_peft_ties_them(smol):
    """On a tied model PEFT ties the output layer to a `modules_to_save` embedding only with ensure_weight_tying;
    without it the output keeps the base's rows (here its stop row at zero)."""
    base, weight = smol["tied"], smol["weight"]
    tied = save_adapter(
        smol["root"] / "tied-embed", base, {EMBED: weight}, modules_to_save=["embed_tokens"], ensure_weight_tying=True
    )
    state = judged(tied, base)
    assert not state.untrained and state.output == TIED and state.input.reason is None
    loose = smol["root"] / "loose-embed"
    loose.mkdir()
    os.link(tied / "adapter_model.safetensors", loose / "adapter_model.safetensors")
    config = json.loads((tied / "adapter_config.json").read_text())
    (loose / "adapter_config.json").write_text(json.dumps({**config, "ensure_weight_tying": False}))
    state = judged(loose, base)
    assert state.input.reason is None and state.output.reason == "at zero"


def test_an_adapter_whose_saved_rows_are_untrained_is_flagged(smol):
    base, weight = smol["tied"], smol["weight"]
    key = "model.embed_tokens.token_adapter.trainable_tokens_delta"
    good = save_adapter(smol["root"] / "tokens", base, {key: weight[END][None]}, trainable_token_indices=[END])
    state = judged(good, base)
    assert not state.untrained and state.output == TIED  # PEFT ties trainable tokens on a tied model
    bad = save_adapter(smol["root"] / "tokens-mean", base, {key: smol["mean"][None]}, trainable_token_indices=[END])
    assert judged(bad, base).input.reason == "at the vocabulary's mean"
    # an untied model: a list of ids trains the embedding alone, and the output stop row stays random
    alone = save_adapter(
        smol["root"] / "tokens-untied", smol["untied"], {key: weight[END][None]}, trainable_token_indices=[END]
    )
    state = judged(alone, smol["untied"])
    assert state.input.reason is None and state.output.reason.startswith("random")


def test_a_lora_update_of_the_embedding_is_added_to_its_base_row(smol):
    """LoRA on embed_tokens: row i gains lora_alpha / r x B @ A[:, i]; here it carries the zeroed stop row back to
    SmolLM2's trained one (its twin, the same adapter with A at zero, leaves it at zero)."""
    base, weight = smol["tied"], smol["weight"]
    a, b = torch.zeros(8, len(weight)), torch.zeros(weight.shape[1], 8)
    a[0, END], b[:, 0] = 1.0, weight[END] / 2  # scaling 16 / 8
    config = {"target_modules": ["q_proj", "embed_tokens"], "ensure_weight_tying": True}
    names = ("model.embed_tokens.lora_embedding_A", "model.embed_tokens.lora_embedding_B")
    lora = save_adapter(smol["root"] / "lora", base, dict(zip(names, (a, b), strict=True)), **config)
    state = judged(lora, base)
    assert not state.untrained and "LoRA update" in state.source
    idle = save_adapter(smol["root"] / "lora-idle", base, dict(zip(names, (a * 0, b), strict=True)), **config)
    assert judged(idle, base).input.reason == "at zero"


@pytest.mark.slow
def test_a_new_stop_tokens_rows_untrained_then_trained(tmp_path, task_files):
    tok = mistral_base_tokenizer()
    model = tiny_mistral(len(tok), hidden=64, layers=2, bos_id=1, eos_id=2, pad_id=None)
    prepare_tokenizer(tok)  # ChatML: <|im_start|> / <|im_end|> added, as a LoRA recipe on a base model would
    model.resize_token_embeddings(len(tok))  # the new rows start at the vocabulary's mean
    model.generation_config.eos_token_id = [2, tok.convert_tokens_to_ids("<|im_end|>")]
    folder = tmp_path / "base-plus-chatml"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)

    end = tok.convert_tokens_to_ids("<|im_end|>")
    (state,) = stop_rows(folder, ["<|im_end|>"], [end])
    assert state.input.reason == state.output.reason == "at the vocabulary's mean"
    code, report = doctor("--tokenizer", folder, "--model", folder)
    assert code == 1 and f"<|im_end|> (id {end})" in finding(report)

    out = tmp_path / "trained"
    sets = {"model": folder, "data.train": f"[{task_files['train']}]", "output_dir": out, "max_steps": 5}
    args = ["train", str(DATA / "tiny.yaml")] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    code, report = doctor("--tokenizer", out / "model", "--model", out / "model")
    assert finding(report) is None
    step = next(s for s in report["steps"] if s["title"] == "stop-token rows")
    assert step["ok"] and f"<|im_end|> (id {end}): input trained" in step["detail"]

    # A LoRA adapter on the untrained base that saves no embedding rows: they stay the base's.
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"base_model_name_or_path": str(folder), "peft_type": "LORA", "target_modules": ["q_proj"]}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    code, report = doctor("--tokenizer", folder, "--model", adapter)
    assert code == 1 and "output: the base's" in finding(report)
    # one that names the layers but whose weights are not there: not read, and said so
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": ["embed_tokens", "lm_head"]}))
    code, report = doctor("--tokenizer", folder, "--model", adapter)
    step = next(s for s in report["steps"] if s["title"] == "stop-token rows")
    assert finding(report) is None and step["skipped"] and "adapter_model.safetensors is absent" in step["detail"]


PEFT_CASES = {  # name: (tied, LoraConfig arguments, rows added to the vocabulary before PEFT)
    "embed saved, tied": (True, {"modules_to_save": ["embed_tokens"]}, 0),
    "embed saved, tied, ensure_weight_tying": (
        True,
        {"modules_to_save": ["embed_tokens"], "ensure_weight_tying": True},
        0,
    ),
    "embed saved, untied": (False, {"modules_to_save": ["embed_tokens"]}, 0),
    "both saved, untied": (False, {"modules_to_save": ["embed_tokens", "lm_head"]}, 0),
    "lm_head saved, tied": (True, {"modules_to_save": ["lm_head"]}, 0),
    "tokens, tied": (True, {"trainable_token_indices": [3, 5]}, 0),
    "tokens, untied": (False, {"trainable_token_indices": [3, 5]}, 0),
    "tokens both, untied": (False, {"trainable_token_indices": {"embed_tokens": [3, 5], "lm_head": [5]}}, 0),
    "tokens both, tied, other ids": (True, {"trainable_token_indices": {"embed_tokens": [3, 5], "lm_head": [5]}}, 0),
    "lora embed and head, untied": (False, {"target_modules": ["q_proj", "embed_tokens", "lm_head"]}, 0),
    "lora embed, tied": (True, {"target_modules": ["q_proj", "embed_tokens"]}, 0),
    "lora embed, tied, ensure": (True, {"target_modules": ["q_proj", "embed_tokens"], "ensure_weight_tying": True}, 0),
    "resized, tied": (True, {}, 2),
    "resized, untied": (False, {}, 2),
}


@pytest.fixture(scope="module")
def tiny_bases(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("peft-bases")
    for tied in (True, False):
        torch.manual_seed(0)
        cfg = LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            tie_word_embeddings=tied,
        )
        LlamaForCausalLM(cfg).save_pretrained(root / str(tied))
    return root


@pytest.mark.parametrize("case", sorted(PEFT_CASES))
def test_the_rows_read_from_an_adapter_are_the_rows_peft_loads(case, tiny_bases, tmp_path):
    """PEFT itself: an adapter of each kind, its trainable weights moved as training would, saved, and loaded on its
    base by `PeftModel.from_pretrained`; the rows `loaded_rows` reads are the rows that model reads and writes."""
    import warnings

    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import LlamaForCausalLM

    from eosguard.checks.weights import loaded_rows

    tied, args, grown = PEFT_CASES[case]
    base = tiny_bases / str(tied)
    ids = [3, 5, 7, 64 + grown - 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LlamaForCausalLM.from_pretrained(base)
        if grown:
            model.resize_token_embeddings(64 + grown)
        peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, **{"target_modules": ["q_proj"], **args}))
        torch.manual_seed(1)
        with torch.no_grad():
            for p in peft.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p))
        peft.save_pretrained(tmp_path / "adapter")
        fresh = LlamaForCausalLM.from_pretrained(base)
        if grown:
            fresh.resize_token_embeddings(64 + grown)
        loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        truth_in = loaded.get_input_embeddings()(torch.tensor(ids))
        truth_out = loaded.get_output_embeddings()(torch.eye(32)).T[ids]
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    config = json.loads((base / "config.json").read_text())
    read = loaded_rows(tmp_path / "adapter", base, adapter_config, config, ids)
    assert torch.allclose(read["input"][1], truth_in, atol=1e-5)
    out = read["output"][1]
    assert torch.allclose(truth_in if out is TIED else out, truth_out, atol=1e-5)
