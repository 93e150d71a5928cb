"""Whether the stop tokens' own rows were ever trained: the input embedding and output (lm_head) rows of each stop
token, read alone from the safetensors files (`safe_open`, never the whole model), judged by
`eosguard.checks.untrained`'s rule (at zero, at the vocabulary's mean, random at the initialisation scale, far below
the trained rows' norms: the measurements it rests on, and what it cannot tell, are there).

Which rows: the input rows; the output rows unless tied (`tie_word_embeddings`, or no output tensor in the files and
no word in config.json; untied in config.json with no output tensor, transformers initialises that layer at random).

A PEFT adapter folder: the rows as PEFT loads them on its base. A layer's rows are the full layer the adapter saves
(`modules_to_save`; PEFT also saves both layers when the vocabulary was resized), else the base's (a local folder);
`trainable_token_indices` rows are replaced by the saved `trainable_tokens_delta` (the new values, not a difference:
`index_copy` in peft's TrainableTokensLayer); a LoRA update of the layer is added (`lora_embedding_A/B` or
`lora_A/B`, scaled by lora_alpha / r, or / sqrt(r) with rslora). Each is judged against the layer it sits in. On a
tied model PEFT ties the output layer to the trained input only for trainable tokens (unless the two layers list
different ids) or with `ensure_weight_tying`; otherwise the output keeps the model's own rows (peft 0.21.2,
`BaseTuner._check_tied_modules`, `utils.other._set_trainable` callers), as an untied model's output does when its
adapter saves the embedding alone. `tests/checks/test_weights.py` holds what is read to `PeftModel.from_pretrained`'s
own rows for 14 kinds of adapter.

Run as:
    eosguard doctor --tokenizer MODEL_DIR --model MODEL_DIR
    eosguard doctor --tokenizer MODEL_DIR --model ADAPTER_DIR
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eosguard.base.errors import EosguardError
from eosguard.chat.templates import ChatTemplate
from eosguard.checks.report import DoctorReport
from eosguard.checks.untrained import Row, Tensor, reference

DEFAULT_INIT = 0.02  # transformers' initializer_range where config.json names none
INPUT_NAMES = ("embed_tokens", "wte", "word_embeddings", "tok_embeddings")
OUTPUT_NAMES = ("lm_head", "embed_out", "output")
TIED = "tied to the input"
MISSING_OUTPUT = "absent from the weights, while config.json unties it: transformers initialises it at random"
KINDS = {"input": INPUT_NAMES, "output": OUTPUT_NAMES}


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
        if path.name.startswith("adapter_model"):
            continue
        with safe_open(str(path), "np") as f:
            out.update(dict.fromkeys(f.keys(), path))
    return out


def find_tensor(files: dict[str, Path], modules: tuple[str, ...], suffix: str = ".weight") -> Tensor | None:
    """The tensor of one of `modules` (the shortest name: `lm_head.weight` before `x.output.weight`)."""
    names = [n for n in files for m in modules if n == f"{m}{suffix}" or n.endswith(f".{m}{suffix}")]
    return Tensor(files[name], name) if (name := min(names, key=len, default=None)) else None


def tied_of(config: dict[str, Any]) -> bool | None:
    """config.json's `tie_word_embeddings` (a multimodal model's in its `text_config`); None where it names none."""
    tied = config.get("tie_word_embeddings", (config.get("text_config") or {}).get("tie_word_embeddings"))
    return None if tied is None else bool(tied)


def init_std_of(config: dict[str, Any]) -> float:
    std = config.get("initializer_range", (config.get("text_config") or {}).get("initializer_range"))
    return float(std) if isinstance(std, int | float) and std > 0 else DEFAULT_INIT


@dataclass
class RowState:
    """One stop token's rows: each a judged `Row`, or why it was not judged (`TIED`, or a reason it could not be
    read); `source`: where the rows came from (an adapter's saved rows, or its base's)."""

    token: str
    id: int
    input: Row | str
    output: Row | str
    source: str = ""

    @property
    def untrained(self) -> bool:
        return any(isinstance(r, Row) and r.reason is not None for r in (self.input, self.output))

    @property
    def unread(self) -> list[str]:
        return [r for r in (self.input, self.output) if isinstance(r, str) and r != TIED]

    def __str__(self) -> str:
        return f"{self.token} (id {self.id}): input {self.input}; output {self.output}" + (
            f" [{self.source}]" if self.source else ""
        )


class Layers:
    """A model folder's input and output layers (None: none to read, a quantized one included): `output` is the
    input's where tied; `missing`, what its output rows are where config.json unties them and there are none to read
    (none at all: transformers initialises them at random)."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        files = _tensor_files(folder)
        found = [find_tensor(files, INPUT_NAMES), find_tensor(files, OUTPUT_NAMES)]
        self.input, output = (t if t and t.readable else None for t in found)
        tied = tied_of(config)
        self.tied = tied is True or (tied is None and found[1] is None)
        self.output = self.input if self.tied else output
        self.missing = (
            Row(math.nan, math.nan, MISSING_OUTPUT)
            if found[1] is None
            else f"not read: {found[1].name} holds {found[1].dtype}"
        )
        self.init_std = init_std_of(config)


def stop_rows(folder: str | Path, tokens: list[str], ids: list[int], config: dict[str, Any] | None = None):
    """The state of each stop token's rows in a model folder's safetensors (`config`: its config.json, read from the
    folder when not given); None when it holds no embedding to read (config files only, another format, or a
    quantized one)."""
    folder = Path(folder)
    config = config if config is not None else _config(folder)
    layers = Layers(folder, config)
    if layers.input is None:
        return None
    tokens, ids = in_vocab(tokens, ids, layers.input.shape[0])
    inputs = reference(layers.input, layers.init_std, tuple(ids)).judge(layers.input.rows(ids))
    if layers.tied:
        outputs: list[Row | str] = [TIED] * len(ids)
    elif layers.output is None:
        outputs = [layers.missing] * len(ids)
    else:
        outputs = reference(layers.output, layers.init_std, tuple(ids)).judge(layers.output.rows(ids))
    return [RowState(t, i, inputs[k], outputs[k]) for k, (t, i) in enumerate(zip(tokens, ids, strict=True))]


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as exc:
        raise EosguardError(f"{path}: cannot read: {exc}") from None


def in_vocab(tokens: list[str], ids: list[int], vocab: int) -> tuple[list[str], list[int]]:
    """The stop tokens with a row (ids beyond the vocabulary are `vocab-mismatch`, reported apart)."""
    kept = [(t, i) for t, i in zip(tokens, ids, strict=True) if i < vocab]
    return [t for t, _ in kept], [i for _, i in kept]


class Adapter:
    """An adapter folder's config and the tensors of its `adapter_model.safetensors` (none where it has no such
    file: `adapter_model.bin` is not read)."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        from safetensors import safe_open

        self.path, self.config = folder / "adapter_model.safetensors", config
        self.files: dict[str, Path] = {}
        if self.path.exists():
            with safe_open(str(self.path), "pt") as f:
                self.files = dict.fromkeys(f.keys(), self.path)

    def full(self, kind: str) -> Tensor | None:
        """The whole layer saved (`modules_to_save`, or a resized vocabulary's), else a LoRA'd layer's base."""
        return find_tensor(self.files, KINDS[kind]) or find_tensor(self.files, KINDS[kind], ".base_layer.weight")

    def token_rows(self, kind: str) -> dict[int, Any]:
        """id -> the row `trainable_token_indices` trains in this layer (as saved)."""
        delta = find_tensor(self.files, KINDS[kind], ".token_adapter.trainable_tokens_delta")
        listed = self.config.get("trainable_token_indices") or {}
        if isinstance(listed, list):  # a list trains the input embedding
            listed = {INPUT_NAMES[0]: listed} if kind == "input" else {}
        ids = next((v for k, v in listed.items() if k.split(".")[-1] in KINDS[kind]), [])
        if delta is None or not ids:
            return {}
        return dict(zip(ids, delta.rows(list(range(len(ids)))), strict=False))

    def lora(self, kind: str, ids: list[int]) -> Any:
        """The LoRA update of those rows (None: no LoRA on this layer)."""
        for a_name, b_name, embedding in (
            (".lora_embedding_A", ".lora_embedding_B", True),
            (".lora_A", ".lora_B", False),
        ):
            a = find_tensor(self.files, KINDS[kind], a_name) or find_tensor(self.files, KINDS[kind], a_name + ".weight")
            b = find_tensor(self.files, KINDS[kind], b_name) or find_tensor(self.files, KINDS[kind], b_name + ".weight")
            if a is None or b is None:
                continue
            from safetensors import safe_open

            with safe_open(str(a.path), "pt") as f:
                a_w, b_w = f.get_tensor(a.name).float(), f.get_tensor(b.name).float()
            rank = a_w.shape[0]
            update = (b_w @ a_w[:, ids]).T if embedding else b_w[ids] @ a_w
            return update * self._scaling(a.name, rank)
        return None

    def _scaling(self, name: str, rank: int) -> float:
        module = name.rsplit(".lora_", 1)[0]
        alpha = self.config.get("lora_alpha", 8)
        for pattern, value in (self.config.get("alpha_pattern") or {}).items():
            if re.search(rf"(^|\.){pattern}$", module):
                alpha = value
        return alpha / (math.sqrt(rank) if self.config.get("use_rslora") else rank)

    def trains(self, kind: str) -> bool:
        """Whether the adapter saves anything of this layer: the whole layer, trainable tokens, or LoRA."""
        suffixes = (".weight", ".token_adapter.trainable_tokens_delta", ".lora_embedding_A", ".lora_A.weight")
        return any(find_tensor(self.files, KINDS[kind], suffix) for suffix in suffixes)

    def copies(self, kind: str) -> bool:
        """Whether `modules_to_save` holds this layer: PEFT trains a copy of it, and a layer tied to it keeps the
        original (a full layer saved otherwise, a resized vocabulary's, is loaded into the model's own weight)."""
        return any(m.split(".")[-1] in KINDS[kind] for m in self.config.get("modules_to_save") or [])

    def names(self) -> str:
        """The embedding and output layers the adapter config names (empty: none)."""
        config, targets = self.config, self.config.get("target_modules") or []
        listed = [*(config.get("modules_to_save") or []), *([targets] if isinstance(targets, str) else targets)]
        tokens = config.get("trainable_token_indices")
        listed += list(tokens) if isinstance(tokens, dict) else [INPUT_NAMES[0]] if tokens else []
        return ", ".join(m for m in listed if isinstance(m, str) and m.split(".")[-1] in INPUT_NAMES + OUTPUT_NAMES)


def _rows(adapter: Adapter | None, kind: str, base: Tensor | None, ids: list[int]) -> tuple[Tensor | None, Any, list]:
    """One layer's rows of those ids as PEFT loads them (`adapter` None: `base`'s alone): (the layer they sit in,
    the rows or why they cannot be read, where each comes from)."""
    saved = adapter.full(kind) if adapter else None
    ref = saved or base
    if ref is None or max(ids, default=0) >= ref.shape[0]:
        why = "the adapter's base is not a local folder" if ref is None else f"{ref.name} has {ref.shape[0]} rows"
        return None, f"not read: {why}", [""] * len(ids)
    rows = ref.rows(ids)
    how = ["the adapter's saved layer" if saved and not saved.name.endswith(".base_layer.weight") else "the base's"]
    how *= len(ids)
    tokens = adapter.token_rows(kind) if adapter else {}
    for j, i in enumerate(ids):
        if i in tokens:
            rows[j], how[j] = tokens[i].float(), "the adapter's trainable tokens"
    update = adapter.lora(kind, ids) if adapter else None
    if update is not None and adapter.config.get("use_dora"):
        return None, "not read: a DoRA update", [""] * len(ids)
    if update is not None:
        rows, how = rows + update, [h + " + the adapter's LoRA update" for h in how]
    return ref, rows, how


def loaded_rows(
    folder: Path, base: Path | None, adapter_config: dict[str, Any], config: dict[str, Any], ids: list[int]
) -> dict[str, tuple[Tensor | None, Any, list[str]]]:
    """The input and output rows of those ids as PEFT loads the adapter in `folder` on its base (`base`: the base
    folder, when local; `config`: the model's config.json): kind -> (the layer they sit in, the rows, or `TIED`, or
    why they cannot be read, where they come from)."""
    adapter = Adapter(folder, adapter_config)
    layers = Layers(base, config) if base is not None else None
    base_in = layers.input if layers else None
    out = {"input": _rows(adapter, "input", base_in, ids)}
    kept = None if adapter.copies("input") else adapter.full("input")  # loaded into the tied weight itself
    if not (layers.tied if layers else tied_of(config) is not False):
        out["output"] = _rows(adapter, "output", layers.output if layers else None, ids)
        if layers and layers.output is None and not adapter.full("output"):
            out["output"] = (None, layers.missing, ["the base's"] * len(ids))
    elif adapter.trains("output"):  # its own output layer, apart from the (tied) input
        out["output"] = _rows(adapter, "output", kept or base_in, ids)
    elif adapter.token_rows("input") or (adapter_config.get("ensure_weight_tying") and adapter.trains("input")):
        out["output"] = (None, TIED, out["input"][2])
    else:  # PEFT leaves the tied output layer at the model's own embedding weight
        ref, rows, how = _rows(None, "input", kept or base_in, ids)
        note = " (PEFT ties the output layer to the trained embedding only with ensure_weight_tying)"
        out["output"] = (ref, rows, [h + (note if adapter.trains("input") else "") for h in how])
    return out


def adapter_rows(
    folder: Path,
    base: Path | None,
    adapter_config: dict[str, Any],
    config: dict[str, Any],
    tokens: list[str],
    ids: list[int],
) -> tuple[list[RowState] | None, str]:
    """Each stop token's rows as the adapter in `folder` leaves them (`loaded_rows`), judged, or None and why they
    cannot be read."""
    adapter = Adapter(folder, adapter_config)
    if not adapter.files and adapter.names():
        return None, f"the adapter config names {adapter.names()} but {adapter.path} is absent (a .bin is not read)"
    base_in = Layers(base, config).input if base is not None else None
    rows_of = adapter.full("input") or base_in  # a resized vocabulary's embedding, saved, outnumbers the base's
    if rows_of is None:
        return None, "the adapter's base is not a local folder, and the adapter saves no embedding layer"
    tokens, ids = in_vocab(tokens, ids, rows_of.shape[0])
    std, judged = init_std_of(config), {}
    for kind, (ref, rows, how) in loaded_rows(folder, base, adapter_config, config, ids).items():
        if ref is not None:
            judged[kind] = (reference(ref, std, tuple(ids)).judge(rows), how)
        else:
            judged[kind] = ([rows] * len(ids), how)
    (inputs, in_how), (outputs, out_how) = judged["input"], judged["output"]
    states = [
        RowState(t, i, inputs[k], outputs[k], f"input: {in_how[k]}; output: {out_how[k]}")
        for k, (t, i) in enumerate(zip(tokens, ids, strict=True))
    ]
    return states, ""


def check_stop_rows(
    folder: Path,
    base: Path | None,
    adapter: dict[str, Any] | None,
    config: dict[str, Any],
    chat: ChatTemplate,
    report: DoctorReport,
) -> None:
    """The doctor's step on the stop tokens' own embedding and output rows: trained, or left where a new row starts
    (`stop_rows`); for an adapter folder (`adapter`: its parsed adapter_config.json), the rows it trains, else its
    base's (`adapter_rows`). `config`: the model's config.json."""
    if adapter is not None:
        states, why = adapter_rows(folder, base, adapter, config, chat.stop_tokens, chat.stop_ids)
    else:
        states = stop_rows(folder, chat.stop_tokens, chat.stop_ids, config)
        why = f"no floating-point embedding tensor in the safetensors files of {folder}" if states is None else ""
    untrained = [s for s in states or [] if s.untrained]
    unread = [f"{s.token} {r}" for s in states or [] for r in s.unread]
    shown = "; ".join(map(str, states or []))
    if untrained:
        these = "this token" if len(untrained) == 1 else "these tokens"
        report.add(
            "stop-token-untrained",
            f"{'; '.join(map(str, untrained))}: untrained rows, so the model cannot read or emit {these} as it "
            "does trained ones",
        )
    elif not states or unread:
        why = why or "; ".join(unread) or "no stop token has a row (ids beyond the embedding: see vocab-mismatch)"
        report.step("stop-token rows", None, f"skipped: {why}" + (f"; {shown}" if shown else ""))
        return
    report.step("stop-token rows", not untrained, shown)


__all__ = [
    "TIED",
    "Adapter",
    "Layers",
    "RowState",
    "adapter_rows",
    "check_stop_rows",
    "find_tensor",
    "loaded_rows",
    "stop_rows",
]
