"""GGUF files as llama.cpp, Ollama and LM Studio read them: the stop metadata, the embedded chat template, and a
copy with corrected metadata.

An engine that runs a GGUF decides where to stop from the file alone: `tokenizer.ggml.eos_token_id`,
`tokenizer.ggml.eot_token_id` and `tokenizer.ggml.eom_token_id` (llama.cpp's end-of-generation set starts from these
three), and formats prompts with the template in `tokenizer.chat_template`. `read_gguf` reads them and nothing else:
gguf's `GGUFReader` builds an object per element of every array (8 s for a 131k-token vocabulary and its merges on
2 CPU cores, and doctor, export and eval each read a file more than once), so the few keys needed are read straight
from the key-value header (0.2 s), `GGUFReader` taking over for anything but a little-endian v2/v3 file;
`write_with_metadata` writes a copy whose metadata is changed by rewriting that header and copying the tensor infos
and data as bytes (gguf's reader and writer, 21 s for a 200k-token vocabulary, only where the header walk cannot);
`gguf_tokenizer` loads the tokenizer a GGUF holds (transformers reads it), so eosguard's template reader can read the
embedded template.

Run as:
    eosguard doctor --gguf model.gguf   # the stop metadata of a file
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eosguard.base.errors import EosguardError

EOS, EOT, EOM = "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"
BOS, PAD = "tokenizer.ggml.bos_token_id", "tokenizer.ggml.padding_token_id"
TEMPLATE, TOKENS = "tokenizer.chat_template", "tokenizer.ggml.tokens"
ADD_EOS, ADD_BOS = "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_bos_token"
ALIGNMENT = "general.alignment"
STOP_KEYS = (EOS, EOT, EOM)
# Token texts llama.cpp adds to its end-of-generation set whatever the metadata says (src/llama-vocab.cpp, 2026):
# llama.cpp, Ollama and LM Studio stop on these by name; engines that read eos / eot / eom alone do not.
LLAMA_CPP_STOP_NAMES = frozenset(
    {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>", "<|endoftext|>",
        "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
    }
)  # fmt: skip
SERVE_INSTALL = "pip install 'eosguard[serve]'"  # gguf, llama.cpp's converter and its server


@dataclass
class GgufInfo:
    """What an engine reads from a GGUF to format prompts and to stop.

    ids: the special-token ids set in the file (eos, eot, eom, bos, pad; absent keys are missing);
    tokens: the vocabulary, in id order; template: the embedded chat template (None: none);
    add_eos / add_bos: whether the engine appends eos / prepends bos to every prompt.
    """

    path: Path
    architecture: str
    ids: dict[str, int] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    template: str | None = None
    add_eos: bool | None = None
    add_bos: bool | None = None

    @property
    def stop_ids(self) -> list[int]:
        """The ids an engine stops on by the file's metadata alone (eos, eot, eom), in that order, without repeats."""
        return list(dict.fromkeys(self.ids[k] for k in STOP_KEYS if k in self.ids))

    def token(self, token_id: int) -> str | None:
        return self.tokens[token_id] if 0 <= token_id < len(self.tokens) else None

    def describe(self) -> list[str]:
        names = {EOS: "eos", EOT: "eot", EOM: "eom", BOS: "bos", PAD: "pad"}
        lines = [f"{names[k]}: {self.ids[k]} ({self.token(self.ids[k])!r})" for k in names if k in self.ids]
        lines.append(f"vocabulary: {len(self.tokens)} tokens; architecture {self.architecture}")
        lines.append(f"chat template: {'none' if self.template is None else repr(self.template[:60]) + '...'}")
        return lines


def _reader(path: str | Path) -> Any:
    try:
        from gguf import GGUFReader
    except ImportError:
        raise EosguardError("reading GGUF files needs the `gguf` package", hint=SERVE_INSTALL) from None
    p = Path(path)
    if not p.is_file():
        raise EosguardError(f"{p}: no such GGUF file")
    try:
        return GGUFReader(str(p))
    except Exception as exc:  # a truncated or foreign file: gguf raises ValueError, struct.error, ...
        raise EosguardError(f"{p}: not a readable GGUF file ({exc})") from None


WANTED = ("general.architecture", EOS, EOT, EOM, BOS, PAD, TOKENS, TEMPLATE, ADD_EOS, ADD_BOS)
# GGUF's scalar value types by their code (gguf.GGUFValueType): struct format, little-endian
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass
class _Header:
    """A little-endian GGUF v2 / v3 header walked once: each key-value pair's byte span, the wanted values, and where
    the tensor infos end (the tensor data starts at the next multiple of the file's alignment)."""

    spans: list[tuple[str, int, int]]  # (key, start, end) of every key-value pair, in file order
    values: dict[str, Any]
    n_tensors: int
    tensor_infos: tuple[int, int]  # their byte span

    @property
    def alignment(self) -> int:
        return int(self.values.get(ALIGNMENT) or 32)


def _walk_header(m: Any, wanted: tuple[str, ...]) -> _Header | None:
    """Walk a GGUF header in memory `m`, building only the wanted values; None when it is not a little-endian v2 / v3
    file (GGUFReader reads those) or does not parse."""
    if len(m) < 24 or m[:4] != b"GGUF" or struct.unpack_from("<I", m, 4)[0] not in (2, 3):
        return None
    n_tensors, n_kv = struct.unpack_from("<QQ", m, 8)
    pos, values, spans = 24, {}, []
    wanted = (*wanted, ALIGNMENT)

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", m, pos)
        pos += 8 + n
        return bytes(m[pos - n : pos]).decode("utf-8", errors="replace")

    def value(kind: int, keep: bool) -> Any:
        nonlocal pos
        if kind in _SCALARS:
            (v,) = struct.unpack_from(_SCALARS[kind], m, pos)
            pos += struct.calcsize(_SCALARS[kind])
            return v
        if kind == _STRING:
            return string()
        if kind != _ARRAY:
            raise ValueError(f"unknown value type {kind}")
        item, count = struct.unpack_from("<IQ", m, pos)
        pos += 12
        if item in _SCALARS and not keep:  # a fixed-size array is skipped whole
            pos += count * struct.calcsize(_SCALARS[item])
            return None
        items = [value(item, keep) for _ in range(count)]
        return items if keep else None

    try:
        for _ in range(n_kv):
            start = pos
            key = string()
            (kind,) = struct.unpack_from("<I", m, pos)
            pos += 4
            v = value(kind, key in wanted)
            spans.append((key, start, pos))
            if key in wanted:
                values[key] = v
        infos_start = pos
        for _ in range(n_tensors):  # name, n_dims, dims, type, offset
            string()
            (n_dims,) = struct.unpack_from("<I", m, pos)
            pos += 4 + 8 * n_dims + 4 + 8
        if pos > len(m):
            return None
    except (struct.error, ValueError, OverflowError, RecursionError):  # a damaged header
        return None
    return _Header(spans, values, n_tensors, (infos_start, pos))


def _header_values(path: Path, wanted: tuple[str, ...]) -> dict[str, Any] | None:
    """The wanted keys of a GGUF key-value header, others skipped without building them (None: see `_walk_header`)."""
    if path.stat().st_size < 24:  # shorter than a GGUF header (mmap refuses an empty file): GGUFReader says why
        return None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        header = _walk_header(m, wanted)
        return None if header is None else header.values


def _pack(value: Any) -> bytes:
    """A metadata value in GGUF's encoding: its type code, then the value (int ids as uint32, as the converter
    writes them; str; bool; a list of str)."""

    def text(s: str) -> bytes:
        raw = s.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw

    if isinstance(value, bool):
        return struct.pack("<I?", 7, value)
    if isinstance(value, int):
        return struct.pack("<II", 4, value)
    if isinstance(value, str):
        return struct.pack("<I", _STRING) + text(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return struct.pack("<IIQ", _ARRAY, _STRING, len(value)) + b"".join(text(v) for v in value)
    raise TypeError(f"cannot write {value!r} as GGUF metadata")


def _rewrite_header(src: Path, tmp: Path, changes: dict[str, Any]) -> bool:
    """Write `src` with `changes` to `tmp` by rewriting the header alone: every other key-value pair, the tensor
    infos and the tensor data copied as bytes (the data realigned to the file's alignment). False when the file is
    not one `_walk_header` reads; then nothing is written."""
    if src.stat().st_size < 24:
        return False
    with open(src, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        header = _walk_header(m, ())
        if header is None:
            return False
        align = header.alignment
        kept = [(k, a, b) for k, a, b in header.spans if k not in changes]
        infos_start, infos_end = header.tensor_infos
        data_start = -(-infos_end // align) * align
        with open(tmp, "wb") as out:
            out.write(m[:8] + struct.pack("<QQ", header.n_tensors, len(kept) + len(changes)))
            for _, a, b in kept:
                out.write(m[a:b])
            for key, v in changes.items():
                raw = key.encode("utf-8")
                out.write(struct.pack("<Q", len(raw)) + raw + _pack(v))
            out.write(m[infos_start:infos_end])
            out.write(b"\0" * (-out.tell() % align))
            for chunk in range(data_start, len(m), 1 << 24):
                out.write(m[chunk : min(chunk + (1 << 24), len(m))])
    return True


def read_gguf(path: str | Path) -> GgufInfo:
    """The stop metadata, vocabulary and template of a GGUF file (EosguardError when it is not one)."""
    p = Path(path)
    if not p.is_file():
        raise EosguardError(f"{p}: no such GGUF file")
    values = _header_values(p, WANTED)
    if values is None:  # big-endian, v1, or damaged: gguf's reader decides (and names what is wrong)
        fields = _reader(p).fields
        values = {k: fields[k].contents() for k in WANTED if k in fields}
    value = values.get

    info = GgufInfo(path=Path(path), architecture=str(value("general.architecture") or "unknown"))
    for key in (EOS, EOT, EOM, BOS, PAD):
        v = value(key)
        if v is not None:
            info.ids[key] = int(v)
    info.tokens = list(value(TOKENS) or [])
    template = value(TEMPLATE)
    info.template = str(template) if template else None
    add_eos, add_bos = value(ADD_EOS), value(ADD_BOS)
    info.add_eos = None if add_eos is None else bool(add_eos)
    info.add_bos = None if add_bos is None else bool(add_bos)
    return info


def write_with_metadata(src: str | Path, dst: str | Path, changes: dict[str, Any]) -> None:
    """A copy of `src` at `dst` with these metadata keys set (int ids, str template, bool flags, a list of str such
    as the vocabulary); every other key and every tensor as it was. Written beside `dst` and renamed into place.

    The header alone is rewritten and the rest copied as bytes (0.3 s for a 200k-token vocabulary); gguf's
    reader and writer, which build every array element (21 s), only for a file the header walk does not read."""
    tmp = Path(str(dst) + ".partial")
    if _rewrite_header(Path(src), tmp, changes):
        tmp.replace(dst)
        return
    from gguf import GGUFValueType, GGUFWriter  # a file the header walk does not read: gguf's reader and writer

    reader = _reader(src)
    arch = str(reader.fields["general.architecture"].contents())
    writer = GGUFWriter(str(tmp), arch=arch, endianess=reader.endianess)
    kinds = {int: GGUFValueType.UINT32, str: GGUFValueType.STRING, bool: GGUFValueType.BOOL}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in changes:
            continue  # the writer writes the header and the architecture itself
        kind = f.types[0]
        sub = f.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(key, f.contents(), kind, sub_type=sub)
    for key, v in changes.items():
        if isinstance(v, list):
            writer.add_key_value(key, v, GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
        else:
            writer.add_key_value(key, v, kinds[type(v)])
    for t in reader.tensors:  # quantized tensors keep their raw bytes and type
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    tmp.replace(dst)


def gguf_tokenizer(path: str | Path) -> Any:
    """The tokenizer a GGUF file holds, as transformers reads it (its chat template included). Built by the fast
    tokenizer class directly: `AutoTokenizer` would first read the whole file with `GGUFReader` for a model config
    (4.4 s of the 4.8 s for SmolLM2's f16 file on 2 CPU cores) to pick the same class."""
    from transformers import PreTrainedTokenizerFast

    p = Path(path)
    try:
        return PreTrainedTokenizerFast.from_pretrained(str(p.parent), gguf_file=p.name)
    except Exception as exc:  # an architecture transformers cannot read from GGUF, a broken vocabulary, ...
        raise EosguardError(f"{p}: cannot read its tokenizer ({str(exc).splitlines()[0]})") from None
