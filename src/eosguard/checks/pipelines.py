"""The training pipelines `eosguard doctor` runs: the examples each one really builds, and its collator.

- `eosguard`: eosguard's renderer (labels by position) and `PadCollator`;
- `transformers`: the template's text tokenized whole, `DataCollatorForLanguageModeling(mlm=False)`;
- `trl`: TRL's collator; with a template that has `{% generation %}` blocks, TRL's assistant-only labels from them;
- `MODULE:FACTORY`: your own collator, `FACTORY(tokenizer)`.

With no pad token, every pipeline but eosguard's gets the usual fallback pad = eos, and says so.

Run as:
    eosguard doctor --tokenizer PATH --collator transformers
"""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from eosguard.base.errors import EosguardError
from eosguard.chat.render import ChatRenderer, labels_from_mask
from eosguard.data.conversations import Conversation
from eosguard.training.collate import PadCollator

CollatorSpec = str  # "eosguard" | "transformers" | "trl" | "module:factory"


def offered_tools(conv: Conversation, tools: Any) -> list[Any] | None:
    offered = conv.tools or tools
    return list(offered) if offered else None


def rendered_texts(tok: Any, convs: Sequence[Conversation], tools: Any) -> list[str]:
    """The user's pipeline text: the tokenizer's own template."""
    return [tok.apply_chat_template(c.as_dicts(), tools=offered_tools(c, tools), tokenize=False) for c in convs]


def _load_factory(spec: str) -> Callable[[Any], Any]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise EosguardError(
            f"cannot load collator factory {spec!r}: {exc}", hint="use MODULE:FACTORY, e.g. mypkg.data:make_collator"
        ) from None


def build_collator(spec: CollatorSpec, tok: Any) -> tuple[Callable, Any, str]:
    """The collator to test, the tokenizer it runs with, and a note on fallbacks applied (like pad = eos)."""
    note = ""
    if spec == "eosguard":
        return PadCollator(pad_token_id=tok.pad_token_id, padding_side="right"), tok, note
    run_tok = tok
    if tok.pad_token is None:
        run_tok = copy.deepcopy(tok)
        run_tok.pad_token = run_tok.eos_token  # what TRL and most scripts do when there is no pad token
        note = " (with the usual fallback pad = eos, since the tokenizer has no pad token)"
    if spec == "transformers":
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(run_tok, mlm=False), run_tok, note
    if spec == "trl":
        try:
            from trl.trainer.sft_trainer import DataCollatorForLanguageModeling as TRLCollator
        except ImportError:
            raise EosguardError("--collator trl needs TRL installed", hint="pip install 'eosguard[trl]'") from None
        return TRLCollator(pad_token_id=run_tok.pad_token_id), run_tok, note
    if ":" in spec:
        return _load_factory(spec)(run_tok), run_tok, note
    raise EosguardError(f"unknown collator {spec!r}", hint="use eosguard, transformers, trl or MODULE:FACTORY")


_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")


def features(
    spec: CollatorSpec, tok: Any, convs: Sequence[Conversation], tools: Any, template: Any = None
) -> list[dict[str, Any]]:
    """The examples each pipeline really builds before its collator sees them (`template`: `tok`'s, read already)."""
    if spec == "eosguard":
        return [r.to_example() for r in ChatRenderer(tok, template=template, tools=tools).examples(convs)]
    if spec == "trl" and _GENERATION_BLOCK.search(tok.chat_template or ""):
        # TRL's assistant_only_loss: labels are the template's {% generation %} mask, folded in before collation.
        out = [
            tok.apply_chat_template(
                c.as_dicts(),
                tools=offered_tools(c, tools),
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
            )
            for c in convs
        ]
        return [
            {"input_ids": o["input_ids"], "labels": labels_from_mask(o["input_ids"], o["assistant_masks"])} for o in out
        ]
    enc = tok(rendered_texts(tok, convs, tools))
    return [{"input_ids": ids} for ids in enc["input_ids"]]


def collator_labels(spec: CollatorSpec, tok: Any, chunk: int = 64) -> Callable[[Any], Any]:
    """For rows written without labels (`eosguard.data.tokenized.RowBatch`): the labels the named collator gives
    them in training, row by row (its padding taken off again by the attention mask it returns, else by the
    tokenizer's padding side)."""
    import dataclasses

    import numpy as np

    collator, run_tok, _ = build_collator(spec, tok)

    def label(batch: Any) -> Any:
        out = []
        for lo in range(0, len(batch), chunk):
            rows = [batch.row(i)["input_ids"] for i in range(lo, min(lo + chunk, len(batch)))]
            try:
                got = collator([{"input_ids": r} for r in rows])
            except Exception as exc:
                raise EosguardError(f"the collator {spec!r} failed on {batch.source}: {exc}") from None
            labels, mask = np.asarray(got["labels"]), got.get("attention_mask")
            for i, r in enumerate(rows):
                if mask is not None:
                    row = labels[i][np.asarray(mask[i]) != 0]
                else:
                    row = labels[i][-len(r) :] if run_tok.padding_side == "left" else labels[i][: len(r)]
                if len(row) != len(r):
                    raise EosguardError(f"the collator {spec!r} changed a row's length: its labels cannot be read")
                out.append(row.astype(np.int64))
        flat = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        return dataclasses.replace(batch, labels=flat, label_source=f"the {spec!r} collator")

    return label
