"""Whether the stop tokens' own rows were ever trained: the input embedding and output (lm_head) rows of each stop
token, read alone from the safetensors files (`safe_open`, never the whole model), held against the vocabulary's.

A row added by `resize_token_embeddings` starts at the mean of the others (transformers' mean resizing) or at zero;
a LoRA run that does not train the embedding and output layers leaves it there (Qwen3#1064, LLaMA-Factory#7943),
and the model can neither read nor write that token as it should. A row whose distance to the vocabulary's mean is
under `UNTRAINED` of the typical row's (the mean streamed over every row, the typical distance the median over rows
sampled across the vocabulary) is reported untrained.

A PEFT adapter folder is read for what it trains: `modules_to_save` holding the embedding and output layers, or
`trainable_token_indices` holding the stop ids; its base model's rows are read when the base is a local folder.

Run as:
    eosguard doctor --tokenizer MODEL_DIR --model MODEL_DIR
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eosguard.base.errors import EosguardError
from eosguard.chat.templates import ChatTemplate
from eosguard.checks.report import DoctorReport

UNTRAINED = 0.05  # a stop token's row nearer the vocabulary's mean than this share of a typical row's distance
SAMPLE_BLOCKS, BLOCK_ROWS = 16, 128  # a typical row's distance: the median over 16 blocks of 128 rows
MEAN_CHUNK = 8192  # rows read at a time for the vocabulary's mean
INPUT_NAMES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "tok_embeddings.weight")
OUTPUT_NAMES = ("lm_head.weight", "embed_out.weight", "output.weight")


@dataclass
class RowState:
    """One stop token's rows: their distance to the vocabulary's mean as a share of a typical row's (None: that
    layer is tied or absent)."""

    token: str
    id: int
    input: float | None
    output: float | None

    @property
    def untrained(self) -> bool:
        return any(v is not None and v < UNTRAINED for v in (self.input, self.output))


def _tensor_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (a sharded folder's index, or its files)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise EosguardError(f"{index}: cannot read the shard index ({exc})") from None
        return {name: folder / file for name, file in weight_map.items()}
    from safetensors import safe_open

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "np") as f:
            out.update(dict.fromkeys(f.keys(), path))
    return out


def _layer(files: dict[str, Path], suffixes: tuple[str, ...]) -> str | None:
    return next((name for name in files if name.endswith(suffixes)), None)


def _distances(path: Path, name: str, ids: list[int]) -> np.ndarray:
    """Each row's distance to the vocabulary's mean (streamed over every row, a chunk at a time) as a share of a
    typical row's (the median over rows sampled in blocks across the vocabulary)."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        part = f.get_slice(name)
        vocab = part.get_shape()[0]
        wanted = torch.stack([part[i : i + 1][0] for i in ids]).double()
        total = sum(part[lo : lo + MEAN_CHUNK].double().sum(0) for lo in range(0, vocab, MEAN_CHUNK))
        mean = total / vocab
        starts = np.linspace(0, max(0, vocab - BLOCK_ROWS), SAMPLE_BLOCKS).astype(int)
        sample = torch.cat([part[int(s) : int(s) + BLOCK_ROWS] for s in dict.fromkeys(starts)]).double()
    typical = float((sample - mean).norm(dim=1).median()) or 1.0
    return ((wanted - mean).norm(dim=1) / typical).numpy()


def stop_rows(folder: str | Path, tokens: list[str], ids: list[int]) -> list[RowState] | None:
    """The state of each stop token's rows in a model folder's safetensors; None when it holds no weights (a folder
    of config files only, or weights in another format)."""
    folder = Path(folder)
    files = _tensor_files(folder)
    if not files:
        return None
    from safetensors import safe_open

    name = _layer(files, INPUT_NAMES)
    if name is None:
        return None
    with safe_open(str(files[name]), "pt") as f:
        vocab = f.get_slice(name).get_shape()[0]
    kept = [(t, i) for t, i in zip(tokens, ids, strict=True) if i < vocab]  # beyond: `vocab-mismatch`, reported apart
    if not kept:
        return []
    tokens, ids = [t for t, _ in kept], [i for _, i in kept]
    found = {}
    for kind, names in (("input", INPUT_NAMES), ("output", OUTPUT_NAMES)):
        name = _layer(files, names)
        if name is not None:
            found[kind] = _distances(files[name], name, ids)
    if "input" not in found:
        return None
    out = found.get("output")
    return [
        RowState(t, i, float(found["input"][k]), None if out is None else float(out[k]))
        for k, (t, i) in enumerate(zip(tokens, ids, strict=True))
    ]


def adapter_trains(config: dict[str, Any], ids: list[int]) -> tuple[bool, str]:
    """Whether a PEFT adapter trains the stop tokens' rows, and how (`config`: its adapter_config.json, parsed)."""
    saved = [m for m in config.get("modules_to_save") or [] if m]
    if any(m.endswith(("embed_tokens", "wte", "word_embeddings", "lm_head", "embed_out")) for m in saved):
        return True, f"modules_to_save {saved}"
    indices = config.get("trainable_token_indices")
    listed = set(indices) if isinstance(indices, list) else {i for v in (indices or {}).values() for i in v}
    if listed and set(ids) <= listed:
        return True, f"trainable_token_indices {sorted(listed)}"
    return False, "neither modules_to_save (embed_tokens, lm_head) nor trainable_token_indices holds them"


def check_stop_rows(
    folder: Path, base: Path | None, adapter: dict[str, Any] | None, chat: ChatTemplate, report: DoctorReport
) -> None:
    """The doctor's step on the stop tokens' own embedding and output rows (`stop_rows`): trained, or left where a
    new row starts; for an adapter folder (`adapter`: its parsed adapter_config.json), whether it trains them, and
    its base's rows where the base is local."""
    trains, how = adapter_trains(adapter, chat.stop_ids) if adapter is not None else (False, "")
    weights = base if adapter is not None else folder
    states = stop_rows(weights, chat.stop_tokens, chat.stop_ids) if weights is not None else None
    if states is None:
        where = f"no safetensors weights in {weights}"
        if adapter is not None:
            where = "the adapter's base is not a local folder"
        report.step(
            "stop-token rows", None, f"skipped: {where}" + (f"; the adapter trains them: {how}" if trains else "")
        )
        return
    shown = "; ".join(
        f"{s.token} input {s.input:.3g}" + ("" if s.output is None else f", output {s.output:.3g}") for s in states
    )
    untrained = [s for s in states if s.untrained]
    if untrained and not trains:
        names = ", ".join(f"{s.token} (id {s.id})" for s in untrained)
        report.add(
            "stop-token-untrained",
            f"the embedding or output rows of {names} sit at the vocabulary's mean or at zero (distance to the mean, "
            f"as a share of a typical row's: {shown}): never trained, so the model cannot learn to emit the token"
            + (f"; the adapter does not train them ({how})" if adapter else ""),
        )
    detail = f"distance to the vocabulary's mean, as a share of a typical row's: {shown}"
    report.step("stop-token rows", not (untrained and not trains), detail + (f"; adapter: {how}" if adapter else ""))


__all__ = ["UNTRAINED", "RowState", "adapter_trains", "check_stop_rows", "stop_rows"]
