"""`precision: bf16` is mixed precision: bf16 autocast over fp32 master weights, cross-entropy in fp32."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import eosguard.training.loss as loss_module
from eosguard.chat.render import ChatRenderer
from eosguard.recipes.tasks import make_conversations
from eosguard.testing.fixtures import tiny_mistral
from eosguard.training.collate import PadCollator
from eosguard.training.loss import causal_lm_loss
from eosguard.training.trainer import fit, training_arguments


def _model(tok):
    return tiny_mistral(len(tok), hidden=64, layers=2, bos_id=tok.bos_token_id, eos_id=2, pad_id=tok.pad_token_id)


def test_labelled_positions_loss_under_bf16_autocast_takes_cross_entropy_in_fp32(tok, monkeypatch):
    seen = []
    original = loss_module._chunk_loss

    def spy(head, hidden, targets):
        out = original(head, hidden, targets)
        seen.append((head(hidden).dtype, out.dtype))
        return out

    monkeypatch.setattr(loss_module, "_chunk_loss", spy)
    example = ChatRenderer(tok).examples(make_conversations(["repeat"], 4, seed=3))
    batch = PadCollator(tok.pad_token_id)([r.to_example() for r in example])
    model = _model(tok)
    losses, grads = {}, {}
    for path in ("fused", "checkpointed", "fp32"):
        hook = model.lm_head.register_forward_hook(lambda *_: None) if path == "checkpointed" else None
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=path != "fp32"):
            loss = causal_lm_loss(model, batch)
        loss.backward()
        losses[path] = loss.detach()
        grads[path] = {n: p.grad.clone() for n, p in model.named_parameters()}
        if hook:
            hook.remove()
    # The checkpointed path (any head) runs the head itself: its projection in bf16, its cross-entropy in fp32.
    assert seen[-1] == (torch.bfloat16, torch.float32)
    # The fused path (a plain Linear head) computes the same: its loss and every gradient equal the checkpointed
    # path's to bf16 rounding, and both differ from fp32 (autocast really ran in both).
    assert all(loss.dtype == torch.float32 for loss in losses.values())
    assert float(losses["fused"]) == pytest.approx(float(losses["checkpointed"]), rel=1e-4)
    assert float(losses["fused"]) == pytest.approx(float(losses["fp32"]), rel=2e-2)
    assert float(losses["fused"]) != float(losses["fp32"])
    for name, g in grads["fused"].items():
        other, exact = grads["checkpointed"][name], grads["fp32"][name]
        scale = exact.abs().max()
        assert (g - other).abs().max() <= 0.02 * scale, name  # bf16 rounding of the same computation
        assert (g - exact).abs().max() <= 0.1 * scale, name
    head = grads["fused"]["lm_head.weight"]
    assert (head - grads["checkpointed"]["lm_head.weight"]).abs().max() < (
        head - grads["fp32"]["lm_head.weight"]
    ).abs().max()


def test_bf16_training_keeps_fp32_weights_and_tracks_fp32_losses(tok, tmp_path):
    examples = [r.to_example() for r in ChatRenderer(tok).examples(make_conversations(["repeat"], 64, seed=1))]
    runs = {}
    for bf16 in (False, True):
        model = _model(tok)
        args = training_arguments(
            tmp_path / str(bf16), steps=5, lr=1e-3, batch_size=8, bf16=bf16, progress=False, logging_steps=1
        )
        result = fit(model, tok, examples, PadCollator(tok.pad_token_id), args)
        assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
        assert model.lm_head not in loss_module._WORKSPACES  # the loss's buffers are freed once training ends
        runs[bf16] = [loss for _, loss in result.losses]
    assert len(runs[True]) == len(runs[False]) == 5
    for a, b in zip(runs[False], runs[True], strict=True):
        assert b == pytest.approx(a, rel=2e-2)
    assert runs[True] != runs[False]


def test_train_cli_bf16_saves_fp32_weights(tiny_model_dir, task_files, tmp_path):
    from typer.testing import CliRunner

    from eosguard.cli.app import app
    from tests.conftest import DATA

    sets = {
        "model": tiny_model_dir,
        "data.train": f"[{task_files['train']}]",
        "output_dir": tmp_path / "bf16",
        "max_steps": 4,
        "precision": "bf16",
    }
    args = ["train", str(DATA / "tiny.yaml")] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    weights = load_file(str(tmp_path / "bf16" / "model" / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float32}
    summary = json.loads((tmp_path / "bf16" / "model" / "eosguard.json").read_text())
    assert summary["config"]["precision"] == "bf16" and summary["train"]["steps"] == 4
