"""Loss only where it counts: the vocabulary projection and cross-entropy at labelled positions only.

With a 32k-128k vocabulary, the logits of a causal LM dominate memory and time in SFT: the standard path projects
every position onto the vocabulary, then throws most of them away (prompt, padding, role headers). Here the
decoder runs as usual, the hidden states are gathered at the positions whose *next* token carries a label, and
the output projection + cross-entropy run on those only, in chunks whose logits are recomputed in the backward pass,
so peak memory is one chunk of logits. Cost scales with trained tokens, not length.

For a plain `nn.Linear` head the chunks run in `LinearCrossEntropy`, one autograd function: the forward keeps only
each row's log-sum-exp, the backward recomputes the chunk's logits once and turns them into the gradient in place
(softmax minus the one-hot target). Against `F.cross_entropy` under `torch.utils.checkpoint` (still the path for any
other head: peft wrappers, hooked or offloaded heads) that saves the log-softmax pass of the recomputation, the
log-softmax backward and a zero-filled gradient of the chunk's logits (one SmolLM2 step of 4 x 512 tokens on 2 CPU
cores: 13.1 s instead of 14.4 s in fp32, 7.3 s instead of 8.0 s in bf16). Under autocast the projection runs in the
autocast dtype in both passes and the softmax in fp32. On CPU the chunk's buffers (logits, their fp32 copy, the cast
weight) are kept in a `Workspace` from one step to the next instead of mapped afresh each time (see there).

The result equals the model's own loss (sum over labelled tokens / their count, or / `num_items_in_batch` across
gradient-accumulation steps) within float tolerance, with the same gradients: tests/training/test_loss.py proves both.

Models whose logits are post-processed after the projection (soft-capping, scaling) fall back to the standard path.

Run as:
    eosguard train CONFIG.yaml   # the loss of every training step
"""

from __future__ import annotations

import functools
import math
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from eosguard.chat.render import IGNORE_INDEX

_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _parts(model: Any) -> tuple[Any, Any] | None:
    """(decoder, output projection) of a causal LM, through a peft wrapper; None when unsupported."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or any(getattr(config, k, None) not in (None, 1, 1.0) for k in _LOGIT_POSTPROCESSING):
        return None
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def _chunk_loss(head: Any, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def _compute_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype a matmul runs in here: autocast's when it is on for this device, else the tensors' own."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else dtype


class Workspace:
    """The chunk-sized buffers of `LinearCrossEntropy`, kept from one call to the next.

    A chunk of logits is chunk x vocabulary floats (200 MB for 1,024 rows of SmolLM2's 49,152 in fp32), and under
    bf16 a step needs several such buffers plus a cast of the weight. CPU memory has no caching allocator: glibc
    maps each buffer this large afresh and the kernel zeroes every page of it on first touch, on every step
    (measured on 2 cores: casting SmolLM2's 49,152 x 576 head to bf16 takes 28 ms into fresh memory, 6 ms into a
    kept buffer; bf16 steps of SmolLM2 on 4 chats page-faulted 118,000 times each on average, 199,000 before). Buffers
    only grow (to the largest chunk seen) and are used within one forward or one backward, never across them, so
    two forwards before one backward are safe; one head's workspace is not for several threads at once. On an
    accelerator the framework's own caching allocator already reuses memory, so `buffer` allocates afresh there.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if device.type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        numel = math.prod(shape)
        kept = self._buffers.get(name)
        if kept is None or kept.numel() < numel or kept.dtype != dtype:
            kept = self._buffers[name] = torch.empty(numel, dtype=dtype, device=device)
        return kept[:numel].view(shape)


_WORKSPACES: weakref.WeakKeyDictionary[Any, Workspace] = weakref.WeakKeyDictionary()


def workspace(head: Any) -> Workspace:
    """The head's `Workspace`: lives as long as the head does; `release_workspace` frees it sooner."""
    if head not in _WORKSPACES:
        _WORKSPACES[head] = Workspace()
    return _WORKSPACES[head]


def release_workspace(model: Any) -> None:
    """Free the loss's kept buffers for this model's output layer (after training, before generation)."""
    parts = _parts(model)
    if parts is not None:
        _WORKSPACES.pop(parts[1], None)


def _logits(ws: Workspace, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """`h @ w.T + b` into the workspace, in fp32 (a second buffer when the product ran in a lower precision)."""
    out = ws.buffer("logits", (h.shape[0], w.shape[0]), w.dtype, h.device)
    torch.mm(h, w.t(), out=out)
    if b is not None:
        out.add_(b)
    if out.dtype == torch.float32:
        return out
    return ws.buffer("logits32", tuple(out.shape), torch.float32, h.device).copy_(out)


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T + bias` against `targets`, chunk by chunk; no logits kept.

    forward: per chunk, logits in fp32 -> log-sum-exp (kept, one float a row) minus the target's logit.
    backward: per chunk, logits recomputed -> exp(logits - lse) minus one at the target, times the incoming
    gradient -> the gradients of hidden, weight and bias (the weight's and bias's accumulated in fp32).
    Both passes compute in place in the head's `Workspace` (the last argument; None for a fresh one).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        chunk_size: int,
        ws: Workspace | None = None,
    ) -> torch.Tensor:
        ws = Workspace() if ws is None else ws
        dtype = _compute_dtype(hidden.device, weight.dtype)
        lse = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):  # the dtypes are explicit here
            w, b = _cast(ws, weight, bias, dtype)
            for start in range(0, hidden.shape[0], chunk_size):
                end = start + chunk_size
                logits = _logits(ws, hidden[start:end].to(dtype), w, b)
                target = logits.gather(1, targets[start:end, None]).squeeze(1)
                top = logits.amax(1)
                logits.sub_(top[:, None]).exp_()  # log-sum-exp in place: the chunk is never needed again
                lse[start:end] = logits.sum(1).log_().add_(top)
                total += (lse[start:end] - target).sum()
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size, ctx.dtype, ctx.ws = chunk_size, dtype, ws
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        dtype, ws = ctx.dtype, ctx.ws
        grad_hidden = torch.empty_like(hidden)
        grad_weight: torch.Tensor | None = None  # fp32 sums over the chunks
        grad_bias = None if bias is None else torch.zeros_like(bias, dtype=torch.float32)
        with torch.autocast(hidden.device.type, enabled=False):
            w, b = _cast(ws, weight, bias, dtype)  # cast again rather than kept: the buffer serves every call
            for start in range(0, hidden.shape[0], ctx.chunk_size):
                end = start + ctx.chunk_size
                h = hidden[start:end].to(dtype)
                grad = _logits(ws, h, w, b).sub_(lse[start:end, None]).exp_()  # softmax
                grad[torch.arange(grad.shape[0], device=grad.device), targets[start:end]] -= 1.0
                grad.mul_(grad_total)
                if grad_bias is not None:
                    grad_bias += grad.sum(0)
                if grad.dtype != dtype:  # back to the product's precision, into its own buffer
                    grad = ws.buffer("logits", tuple(grad.shape), dtype, grad.device).copy_(grad)
                grad_hidden[start:end] = grad @ w
                if grad_weight is None and dtype == torch.float32:
                    grad_weight = grad.t() @ h  # returned to autograd: a fresh tensor, not a kept buffer
                else:
                    part = torch.mm(grad.t(), h, out=ws.buffer("part", tuple(w.shape), dtype, h.device))
                    grad_weight = part.float() if grad_weight is None else grad_weight.add_(part)
        if grad_weight is None:  # no labelled position at all
            grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        grad_bias = None if grad_bias is None else grad_bias.to(weight.dtype)
        return grad_hidden, grad_weight.to(weight.dtype), grad_bias, None, None, None


def _cast(
    ws: Workspace, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The weight and bias in the product's dtype (the weight cast into the workspace, not a fresh tensor)."""
    if weight.dtype == dtype:
        return weight, bias
    w = ws.buffer("weight", tuple(weight.shape), dtype, weight.device).copy_(weight)
    return w, None if bias is None else bias.to(dtype)


def _fusable(head: Any) -> bool:
    """A plain Linear whose weight is here to read: no peft or FSDP wrapper, no hooks, no offloading."""
    return (
        type(head) is torch.nn.Linear
        and not head._forward_hooks
        and not head._forward_pre_hooks
        and not hasattr(head, "_hf_hook")
        and head.weight.device.type != "meta"
    )


def labelled_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean mask of positions whose next token is a target, and those targets in row-major order."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep, labels[:, 1:][labels[:, 1:] != IGNORE_INDEX]


def causal_lm_loss(
    model: Any,
    inputs: dict[str, Any],
    *,
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Next-token loss over labelled positions only; `inputs` holds input_ids, labels and the model's other inputs."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    parts = _parts(model)
    if parts is None:  # standard path: the model computes every logit and its own loss
        kwargs = {"num_items_in_batch": num_items_in_batch} if num_items_in_batch is not None else {}
        return model(**inputs, labels=labels, **kwargs).loss
    decoder, head = parts
    inputs.setdefault("use_cache", False)
    hidden = decoder(**inputs).last_hidden_state
    keep, targets = labelled_positions(labels)
    selected = hidden[keep]
    if _fusable(head):
        total = LinearCrossEntropy.apply(selected, head.weight, head.bias, targets, chunk_size, workspace(head))
    else:
        total = _checkpointed_loss(head, selected, targets, chunk_size)
    denominator = num_items_in_batch if num_items_in_batch is not None else max(int(targets.numel()), 1)
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(total.device)
    return total / denominator


def _checkpointed_loss(head: Any, selected: torch.Tensor, targets: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Any head: its own call per chunk under `torch.utils.checkpoint` (logits recomputed in the backward)."""
    total = selected.new_zeros((), dtype=torch.float32)
    for start in range(0, selected.shape[0], chunk_size):
        h, t = selected[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, h, t)
    return total


def route_loss_through_forward(model: Any) -> Any:
    """Make `model(..., eosguard_labels=labels)` return `causal_lm_loss`, and leave every other call as it was.

    A wrapper that must see the forward call, DistributedDataParallel above all (its gradient synchronisation and
    buffer broadcasts hang on it) and accelerate's autocast, hides the decoder and the projection from
    `causal_lm_loss`; routed through the forward, the loss still projects only labelled positions under them.
    Idempotent; returns the model.

    Example:
        >>> from eosguard.recipes.offline_models import tiny_mistral
        >>> m = route_loss_through_forward(tiny_mistral(100, hidden=32, layers=1, bos_id=1, eos_id=2, pad_id=0))
        >>> ids = torch.tensor([[1, 5, 6, 2]]); y = torch.tensor([[-100, -100, 6, 2]])
        >>> bool(torch.isclose(m(input_ids=ids, eosguard_labels=y), causal_lm_loss(m, {"input_ids": ids, "labels": y})))
        True
    """
    if getattr(model, "_eosguard_loss_forward", False):
        return model
    original = model.forward

    @functools.wraps(original)  # generate() reads the forward's signature: keep the original one visible
    def forward(*args: Any, eosguard_labels: Any = None, eosguard_num_items: Any = None, **kwargs: Any) -> Any:
        if eosguard_labels is None:
            return original(*args, **kwargs)
        return causal_lm_loss(model, {**kwargs, "labels": eosguard_labels}, num_items_in_batch=eosguard_num_items)

    model.forward = forward
    model._eosguard_loss_forward = True
    return model
