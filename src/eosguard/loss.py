"""Loss only where it counts: the vocabulary projection and cross-entropy at labelled positions only.

With a 32k-128k vocabulary, the logits of a causal LM dominate memory and time in SFT: the standard path projects
every position onto the vocabulary, then throws most of them away (prompt, padding, role headers). Here the
decoder runs as usual, the hidden states are gathered at the positions whose *next* token carries a label, and
the output projection + cross-entropy run on those only, in chunks recomputed in the backward pass
(`torch.utils.checkpoint`), so peak memory is one chunk of logits. Cost scales with trained tokens, not length.

The result equals the model's own loss (sum over labelled tokens / their count, or / `num_items_in_batch` across
gradient-accumulation steps) within float tolerance, with the same gradients: tests/test_loss.py proves both.

Models whose logits are post-processed after the projection (soft-capping, scaling) fall back to the standard path.

Run as:
    python -m eosguard.loss   # compares the two paths on a tiny model and prints both losses
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from eosguard.render import IGNORE_INDEX

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
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, selected.shape[0], chunk_size):
        h, t = selected[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, h, t, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, h, t)
    denominator = num_items_in_batch if num_items_in_batch is not None else max(int(targets.numel()), 1)
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(total.device)
    return total / denominator


def route_loss_through_forward(model: Any) -> Any:
    """Make `model(..., eosguard_labels=labels)` return `causal_lm_loss`, and leave every other call as it was.

    A wrapper that must see the forward call, DistributedDataParallel above all (its gradient synchronisation and
    buffer broadcasts hang on it) and accelerate's autocast, hides the decoder and the projection from
    `causal_lm_loss`; routed through the forward, the loss still projects only labelled positions under them.
    Idempotent; returns the model.

    Example:
        >>> from eosguard.fixtures import tiny_mistral
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


if __name__ == "__main__":
    from eosguard.fixtures import tiny_mistral

    m = tiny_mistral(1000, hidden=64, layers=2, bos_id=1, eos_id=2, pad_id=0)
    ids = torch.randint(3, 1000, (2, 12))
    lab = ids.clone()
    lab[:, :6] = IGNORE_INDEX
    print(
        float(m(input_ids=ids, labels=lab, use_cache=False).loss),
        float(causal_lm_loss(m, {"input_ids": ids, "labels": lab})),
    )
