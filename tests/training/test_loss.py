"""Loss at labelled positions only equals the model's full loss, with the same gradients."""

import pytest
import torch

from eosguard.chat.render import IGNORE_INDEX
from eosguard.testing.fixtures import tiny_mistral
from eosguard.training.collate import PackedCollator, PadCollator
from eosguard.training.loss import causal_lm_loss


def _model():
    torch.manual_seed(0)
    return tiny_mistral(500, hidden=32, layers=2, heads=4, kv_heads=2, bos_id=1, eos_id=2, pad_id=0)


def _examples():
    g = torch.Generator().manual_seed(0)
    out = []
    for n, k in ((14, 5), (9, 4), (20, 11)):
        ids = torch.randint(3, 500, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n - k) + ids[n - k :]})
    return out


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _through_the_heads_call(model):
    """A hook on the head (a profiler's, a user's) must see its call: the loss then takes the checkpointed path."""
    model.lm_head.register_forward_hook(lambda *_: None)
    return model


def _tied(model):
    """The output layer shares the embedding's weight (SmolLM2, Gemma): one parameter, two gradients summed."""
    model.config.tie_word_embeddings = True
    model.tie_weights()
    return model


HEADS = {"fused": lambda m: m, "checkpointed": _through_the_heads_call, "tied": _tied}


@pytest.mark.parametrize("collate", [PadCollator(pad_token_id=0), PackedCollator()], ids=["padded", "packed"])
@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
@pytest.mark.parametrize("head", list(HEADS))
def test_loss_and_gradients_equal_the_full_computation(collate, chunk_size, head):
    batch = collate(_examples())
    model = HEADS[head](_model())
    full = model(**batch, use_cache=False).loss
    full.backward()
    expected = _grads(model)
    model.zero_grad()
    ours = causal_lm_loss(model, batch, chunk_size=chunk_size)
    ours.backward()
    got = _grads(model)
    assert torch.allclose(full, ours, atol=1e-5)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6), name


def test_num_items_in_batch_divides_the_sum():
    batch = PadCollator(pad_token_id=0)(_examples())
    model = _model()
    with torch.no_grad():
        mean = causal_lm_loss(model, batch)
        summed = causal_lm_loss(model, batch, num_items_in_batch=1)
    n_targets = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert torch.allclose(summed, mean * n_targets, rtol=1e-5)


class HidingWrapper(torch.nn.Module):
    """Like DistributedDataParallel: the model sits in `.module`, and only a call goes through to it."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_loss_routed_through_a_wrapper_still_projects_only_labelled_positions():
    from eosguard.training.loss import route_loss_through_forward

    torch.manual_seed(0)
    model = route_loss_through_forward(tiny_mistral(300, hidden=32, layers=1, bos_id=1, eos_id=2, pad_id=0))
    ids = torch.randint(3, 300, (2, 10))
    labels = ids.clone()
    labels[:, :7] = IGNORE_INDEX  # 3 targets a row
    rows_projected = []
    hook = model.lm_head.register_forward_hook(lambda _m, inp, _out: rows_projected.append(inp[0].shape[0]))
    wrapped = HidingWrapper(model)
    via_wrapper = wrapped(input_ids=ids, eosguard_labels=labels)
    hook.remove()
    direct = causal_lm_loss(model, {"input_ids": ids, "labels": labels})
    full = model(input_ids=ids, labels=labels).loss  # a plain call is untouched: the model's own loss
    assert torch.allclose(via_wrapper, direct) and torch.allclose(via_wrapper, full, atol=1e-5)
    assert rows_projected == [int((labels[:, 1:] != IGNORE_INDEX).sum())]  # 6 rows, not 2 x 10 positions
    via_wrapper.backward()
    assert model.lm_head.weight.grad is not None
    assert route_loss_through_forward(model) is model  # idempotent: no second layer


def test_fused_path_projects_only_labelled_rows_and_takes_the_heads_weight(monkeypatch):
    from eosguard.training import loss as loss_module

    seen = []
    original = loss_module.LinearCrossEntropy.apply

    def spy(hidden, weight, bias, targets, chunk_size, ws):
        seen.append((hidden.shape[0], weight, targets.tolist()))
        return original(hidden, weight, bias, targets, chunk_size, ws)

    monkeypatch.setattr(loss_module.LinearCrossEntropy, "apply", spy)
    batch = PadCollator(pad_token_id=0)(_examples())
    model = _model()
    causal_lm_loss(model, batch)
    expected = batch["labels"][:, 1:][batch["labels"][:, 1:] != IGNORE_INDEX].tolist()
    assert seen == [(len(expected), model.lm_head.weight, expected)]  # 20 rows, not 3 x 20 positions


@pytest.mark.parametrize("rows", [0, 1, 7])
def test_linear_cross_entropy_with_a_bias_equals_cross_entropy_of_the_linear(rows):
    from eosguard.training.loss import LinearCrossEntropy

    torch.manual_seed(3)
    head = torch.nn.Linear(8, 11)
    hidden = torch.randn(rows, 8, requires_grad=True)
    targets = torch.randint(0, 11, (rows,))
    ours = LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, 3)  # chunks of 3: 7 rows = 3 + 3 + 1
    ours.backward()
    got = [hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()]
    hidden.grad = None
    head.zero_grad()
    reference = torch.nn.functional.cross_entropy(head(hidden), targets, reduction="sum") if rows else ours.detach()
    if rows:
        reference.backward()
    else:  # nothing to learn from: every gradient is zero
        hidden.grad, head.weight.grad, head.bias.grad = (torch.zeros_like(t) for t in got)
    assert torch.allclose(ours, reference, atol=1e-5)
    for mine, theirs in zip(got, [hidden.grad, head.weight.grad, head.bias.grad], strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_kept_workspace_gives_what_a_fresh_one_gives_whatever_came_before(precision):
    """The buffers outlive a call and only grow: a small call after a large one reads a view of the large buffer,
    two forwards before one backward share it. Each must equal the same call with a workspace of its own."""
    from eosguard.training.loss import LinearCrossEntropy, Workspace

    torch.manual_seed(5)
    weight = torch.randn(37, 16, requires_grad=True)
    calls = [(torch.randn(n, 16, requires_grad=True), torch.randint(0, 37, (n,))) for n in (9, 2, 13)]

    def run(spaces):
        weight.grad = None
        for h, _ in calls:
            h.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            losses = [LinearCrossEntropy.apply(h, weight, None, t, 4, spaces[i]) for i, (h, t) in enumerate(calls)]
        sum(losses[:2]).backward()  # two forwards, then one backward through both
        losses[2].backward()
        return [loss.detach() for loss in losses] + [h.grad.clone() for h, _ in calls] + [weight.grad.clone()]

    kept = Workspace()
    shared = run([kept] * 3)
    alone = run([Workspace() for _ in calls])
    assert kept._buffers  # the shared run really kept its buffers
    for ours, theirs in zip(shared, alone, strict=True):
        assert torch.equal(ours, theirs)
