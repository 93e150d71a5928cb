"""Stopping measured where models are served: llama.cpp (in process, from a GGUF) or any OpenAI-compatible endpoint.

`eosguard eval --engine llamacpp` and `--endpoint URL` send each held-out prompt (everything before its last
assistant turn, with the conversation's tools) as a chat completion and let the engine apply its own template and
its own stop logic: what comes back (`finish_reason`, the text, the tool calls, the token count) is the whole
measurement. A reply stopped when the engine says `stop` or `tool_calls`; `length` is a runaway. The report is the
one `eosguard.checks.evaluate` gives for transformers (stop, runaway, role leak, exact match, new tokens, per kind of
reply), so the two sit side by side.

- `LlamaCpp(path)`: llama.cpp's own server (`xllamacpp`), in this process, from a GGUF file; requests run in
  parallel slots;
- `Endpoint(url)`: vLLM, llama.cpp's `llama-server`, Ollama, TGI, SGLang: `POST {url}/v1/chat/completions`.

Run as:
    eosguard eval --engine llamacpp --model model.gguf --data heldout.jsonl
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from eosguard.base.errors import EosguardError
from eosguard.chat.settings import MAX_NEW_TOKENS
from eosguard.checks.evaluate import Generation, RoleLeaks, StopReport, split_prompt
from eosguard.data.conversations import Conversation, Message
from eosguard.serve.gguf_files import SERVE_INSTALL, read_gguf


class Engine(Protocol):
    """Anything that answers OpenAI chat-completion requests."""

    name: str

    def chat(self, request: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


class LlamaCpp:
    """llama.cpp's server in this process (`xllamacpp`), serving one GGUF file; `slots` requests run at once."""

    def __init__(self, path: str | Path, *, context: int = 4096, slots: int = 8, threads: int | None = None) -> None:
        try:
            import xllamacpp
        except ImportError:
            raise EosguardError(
                "--engine llamacpp needs llama.cpp's Python server (xllamacpp)", hint=SERVE_INSTALL
            ) from None
        p = Path(path)
        read_gguf(p)  # a missing, empty or damaged file: named here, before llama.cpp fails without saying why
        params = xllamacpp.CommonParams()
        params.model.path = str(p)
        params.n_ctx = context * slots  # the context is shared by the slots
        params.n_parallel = slots
        params.cpuparams.n_threads = threads or len(os.sched_getaffinity(0))
        params.verbosity = -1  # errors only: the server's per-request log lines are not this report's
        self.name = f"llama.cpp ({p.name})"
        self.slots = slots
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as exc:  # an architecture this llama.cpp build cannot load, a context it cannot fit, ...
            raise EosguardError(f"{p}: llama.cpp could not load it ({exc})") from None

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        out = self._server.handle_chat_completions(request)
        if isinstance(out, dict) and "error" in out:
            raise EosguardError(f"llama.cpp refused the request: {out['error'].get('message', out['error'])}")
        return out

    def close(self) -> None:
        self._server = None


class Endpoint:
    """An OpenAI-compatible server at `url` (`.../v1` or the server root). The fields eosguard adds to a request
    (`OPTIONAL`: the generated tokens, the control tokens kept) are dropped for good when the server refuses a request
    that holds them (400 / 422): role leaks are then read from the text alone."""

    OPTIONAL = ("logprobs", "top_logprobs", "skip_special_tokens")

    def __init__(self, url: str, *, model: str | None = None, timeout: float = 300.0, slots: int = 8) -> None:
        base = url.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self.model = model
        self.timeout = timeout
        self.slots = slots
        self.name = f"endpoint {self.url}"
        self.optional = True  # False once the server refused the optional fields

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        body = {**request, **({"model": self.model} if self.model else {})}
        if not self.optional:
            body = {k: v for k, v in body.items() if k not in self.OPTIONAL}
        try:
            return self._post(body)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300]
            if exc.code in (400, 422) and self.optional and any(k in body for k in self.OPTIONAL):
                self.optional = False
                return self.chat(request)
            raise EosguardError(f"{self.url} answered {exc.code}: {detail!r}") from None
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
            raise EosguardError(f"{self.url}: no usable answer ({exc})") from None

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self.url, json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        pass


def _request(messages: Sequence[Message], tools: Any, max_new_tokens: int, args: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {
        "messages": [m.as_dict() for m in messages],
        "max_tokens": max_new_tokens,
        "temperature": 0.0,  # greedy, as `eosguard eval` decodes with transformers
        # The generated tokens themselves (llama.cpp's server: with their ids; vLLM: with their text, control tokens
        # included), so role leaks are judged on what the model wrote, as in transformers, not on stripped text.
        "logprobs": True,
        "top_logprobs": 1,
        # vLLM's field: the text keeps the control tokens a runaway writes (llama.cpp's server strips them whatever
        # the request says)
        "skip_special_tokens": False,
    }
    if tools:
        request["tools"] = list(tools)
    if args:
        request["chat_template_kwargs"] = dict(args)  # vLLM's and llama.cpp's name for template arguments
    return request


def role_leaks(tokenizer: Any) -> RoleLeaks:
    """The role-leak check of the tokenizer's template (see `eosguard.checks.evaluate.RoleLeaks`)."""
    from eosguard.chat.templates import template_for

    return RoleLeaks(tokenizer, template_for(tokenizer))


def _calls(calls: Any) -> str:
    """Tool calls as comparable text: one `name {arguments}` a line, arguments as sorted JSON."""
    out = []
    for call in calls or []:
        fn = call.get("function", call)
        args = fn.get("arguments")
        with contextlib.suppress(json.JSONDecodeError):
            args = json.loads(args) if isinstance(args, str) else args
        out.append(f"{fn.get('name')} {json.dumps(args, sort_keys=True)}")
    return "\n".join(out)


def evaluate_served(
    engine: Engine,
    conversations: Sequence[Conversation],
    *,
    max_new_tokens: int = MAX_NEW_TOKENS,
    tools: Sequence[dict[str, Any]] | None = None,
    template_args: dict[str, Any] | None = None,
    leaks: RoleLeaks | None = None,
    advance: Callable[[int], None] | None = None,
) -> StopReport:
    """Send every held-out prompt to the engine and measure how its replies end (see the module doc).

    tools: for conversations that bring none; template_args: sent as `chat_template_kwargs`; leaks: the template's
    role-leak check (`role_leaks(tokenizer)`), judged on the returned text whether the engine kept its control
    tokens or stripped them; None (no tokenizer given): role leaks are reported as not measured."""
    start = time.perf_counter()
    parts = [split_prompt(c) for c in conversations]

    def one(i: int) -> Generation:
        msgs, ref = parts[i]
        answer = engine.chat(_request(msgs, conversations[i].tools or tools, max_new_tokens, template_args or {}))
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        text = message.get("content") or ""
        called = _calls(message.get("tool_calls"))
        kind = "tool_call" if ref is not None and ref.tool_calls else "reply"
        reference = None
        if ref is not None:
            reference = _calls([c.as_dict() for c in ref.tool_calls]) if ref.tool_calls else ref.content
        return Generation(
            prompt=msgs[-1].content,
            reference=reference,
            output=called if kind == "tool_call" else text,
            stopped=choice.get("finish_reason") in ("stop", "tool_calls"),
            new_tokens=int((answer.get("usage") or {}).get("completion_tokens", 0)),
            role_leak=None if leaks is None else leaks.in_answer(text, (choice.get("logprobs") or {}).get("content")),
            kind=kind,
        )

    gens: list[Generation] = []
    with ThreadPoolExecutor(max_workers=max(1, getattr(engine, "slots", 1))) as pool:
        for gen in pool.map(one, range(len(conversations))):
            gens.append(gen)
            if advance is not None:
                advance(1)
    return StopReport.of(gens, time.perf_counter() - start)


__all__ = ["Endpoint", "Engine", "LlamaCpp", "evaluate_served", "role_leaks"]
