"""Collators with odd sentinels (pad = -8, ignore = -9) so values cannot be confused; packing without leaks."""

import pytest
import torch

from eosguard.testing.fixtures import tiny_mistral
from eosguard.training.collate import PackedCollator, PadCollator
from eosguard.training.packing import best_fit_decreasing, pack_examples

FEATS = [{"input_ids": [5, 6, 7], "labels": [-9, 6, 7]}, {"input_ids": [8, -8], "labels": [-9, -8]}]


def test_pads_ids_and_labels_separately_by_position():
    # The second example's last token has the pad id (-8) and is a real label: it must stay a label.
    b = PadCollator(pad_token_id=-8, padding_side="right", label_pad_id=-9)(FEATS)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, -8, -8]]
    assert b["labels"].tolist() == [[-9, 6, 7], [-9, -8, -9]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    left = PadCollator(pad_token_id=-8, padding_side="left", label_pad_id=-9, pad_to_multiple_of=4)(FEATS)
    assert left["input_ids"].tolist() == [[-8, 5, 6, 7], [-8, -8, 8, -8]]
    assert left["labels"].tolist() == [[-9, -9, 6, 7], [-9, -9, -9, -8]]


def test_requires_explicit_labels():
    with pytest.raises(Exception, match="explicit 'labels'"):
        PadCollator(pad_token_id=0)([{"input_ids": [1, 2]}])


def test_packed_rows_restart_positions_and_never_cross_examples():
    b = PackedCollator(label_pad_id=-9)(FEATS)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, -8]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert b["labels"].tolist() == [[-9, 6, 7, -9, -8]]  # first token of each example is never a target
    assert "attention_mask" not in b


def test_best_fit_decreasing_and_pack_examples():
    bins = best_fit_decreasing([5, 3, 4, 2, 6], 8)
    assert sorted(i for b in bins for i in b) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 4, 2, 6][i] for i in b) <= 8 for b in bins) and len(bins) == 3
    rows = pack_examples([{"input_ids": [1] * n, "labels": [1] * n} for n in (5, 3, 4)], 8)
    assert [r["position_ids"] for r in rows] == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3]]


def test_packed_and_padded_give_the_same_loss_and_no_cross_attention(tok):
    torch.manual_seed(0)
    model = tiny_mistral(len(tok), hidden=64, layers=2, bos_id=1, eos_id=32000, pad_id=0).eval()
    examples = [
        {
            "input_ids": [1, 32001, 1838, 13, 23809, 32000, 13, 32001, 489, 11143, 13, 16230, 736, 32000, 13],
            "labels": [-100] * 11 + [16230, 736, 32000, -100],
        },
        {
            "input_ids": [1, 32001, 1838, 13, 5, 6, 32000, 13, 32001, 489, 11143, 13, 77, 32000, 13],
            "labels": [-100] * 12 + [77, 32000, -100],
        },
    ]
    padded = PadCollator(pad_token_id=0)(examples)
    packed = PackedCollator()(examples)
    with torch.no_grad():  # no KV cache: with one, transformers does not build the per-example mask (fit() sets it)
        lp = model(**padded, use_cache=False).logits
        lk = model(**packed, use_cache=False).logits
    # Per-token logits of each example are identical: no token of example 2 saw example 1.
    assert torch.allclose(lp[0], lk[0, :15], atol=1e-5)
    assert torch.allclose(lp[1], lk[0, 15:], atol=1e-5)
    with torch.no_grad():
        loss_padded = model(**padded, use_cache=False).loss
        loss_packed = model(**packed, use_cache=False).loss
    assert torch.allclose(loss_padded, loss_packed, atol=1e-5)


def test_packed_rows_kept_apart_equal_padded_and_their_filler_is_invisible(tok):
    """one_row=False (what eosguard uses with SDPA): two pre-packed rows of different length, the shorter filled."""
    torch.manual_seed(0)
    model = tiny_mistral(len(tok), hidden=64, layers=2, bos_id=1, eos_id=32000, pad_id=0).eval()
    a = {"input_ids": [1, 500, 501, 502, 32000], "labels": [-100, -100, 501, 502, 32000]}
    b = {"input_ids": [1, 600, 32000], "labels": [-100, 600, 32000]}
    c = {"input_ids": [1, 700, 701, 32000], "labels": [-100, -100, 701, 32000]}
    rows = pack_examples([a, b, c], 8)  # [a, b] in one row, [c] alone
    assert [len(r["input_ids"]) for r in rows] == [8, 4]
    kept = PackedCollator(one_row=False, pad_token_id=7)(rows)
    # `packing: batch`: the collator packs the batch's own examples itself, into the very same rows.
    in_batch = PackedCollator(one_row=False, pad_token_id=7, pack_to=8)([a, b, c])
    assert all(torch.equal(in_batch[k], kept[k]) for k in kept)
    assert kept["input_ids"].shape == (2, 8) and kept["input_ids"][1, 4:].tolist() == [7] * 4
    assert kept["position_ids"][1].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert kept["labels"][1, 4:].tolist() == [-100] * 4
    padded = PadCollator(pad_token_id=0)([a, b, c])
    with torch.no_grad():
        lp = model(**padded, use_cache=False).logits
        lk = model(**kept, use_cache=False).logits
        assert torch.allclose(model(**padded, use_cache=False).loss, model(**kept, use_cache=False).loss, atol=1e-5)
    for i, ex in enumerate((a, b, c)):  # packing may reorder examples: find each one's place by its ids
        row, start = next(
            (r, s)
            for r in range(2)
            for s in range(8)
            if kept["input_ids"][r, s : s + len(ex["input_ids"])].tolist() == ex["input_ids"]
        )
        n = len(ex["input_ids"])
        assert torch.allclose(lp[i, :n], lk[row, start : start + n], atol=1e-5), i
