"""Every template family: labels, ids, doctor, guard, training and eval behave the same on each.

The families are rebuilt offline from `mistral-common` vocabularies with their real chat templates (TRL's copies
of Llama-3.1, Gemma 3, Phi-3, Qwen2.5, Qwen3 and gpt-oss; Mistral v3 / v7 checked token for token against
mistral-common's own encoder below, v7 with the template mistral-common generates; SmolLM2's real tokenizer from its
GGUF file). Qwen3 and gpt-oss render earlier replies differently from a last one, so their multi-turn chats train
in several examples: the tests collect the trained replies across them.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DataCollatorForLanguageModeling
from typer.testing import CliRunner

from eosguard.base.errors import StopTokenLossError
from eosguard.chat.examples import build_examples
from eosguard.chat.render import ChatRenderer
from eosguard.chat.templates import ChatTemplate, TemplateError
from eosguard.chat.tokenizer_setup import prepare_tokenizer
from eosguard.checks.doctor import diagnose
from eosguard.checks.evaluate import evaluate_stopping
from eosguard.checks.guard import guard
from eosguard.cli.app import app
from eosguard.data.conversations import conversation
from eosguard.testing.families import FAMILIES
from eosguard.testing.fixtures import family_tokenizer, tiny_mistral
from eosguard.training.collate import PadCollator
from eosguard.training.saving import save_model_folder
from eosguard.training.trainer import fit, training_arguments
from tests.helpers import trained_runs

NAMES = list(FAMILIES)
_cache: dict[tuple[str, str], object] = {}


def tokenizer(name: str, pad: str = "shipped"):
    """Family tokenizers are built once per session (SmolLM2's the first time from its GGUF file)."""
    key = (name, pad)
    if key not in _cache:
        _cache[key] = family_tokenizer(name, pad=pad)  # type: ignore[arg-type]
    return _cache[key]


_words = st.text(alphabet="abcdefghij XYZ.,!?0123456789\n", min_size=1, max_size=30).filter(lambda s: s[0].isalnum())


def _specials(name: str) -> list[str]:
    tok = tokenizer(name)
    return [*sorted(t for t in tok.get_added_vocab() if t.strip())[:40], "\n"]


@st.composite
def _conversations(draw, name: str, content):
    msgs = []
    if FAMILIES[name].supports_system and draw(st.booleans()):
        msgs.append(("system", draw(content)))
    for _ in range(draw(st.integers(1, 3))):
        msgs += [("user", draw(content)), ("assistant", draw(content))]
    return conversation(*msgs)


@pytest.mark.parametrize("name", NAMES)
def test_end_of_turn_is_read_off_the_template(name):
    assert ChatTemplate(tokenizer(name)).end_of_turn == FAMILIES[name].end_of_turn


@pytest.mark.parametrize("name", NAMES)
def test_labelled_tokens_are_each_reply_then_its_end_of_turn(name):
    tok = tokenizer(name)
    r = ChatRenderer(tok)
    pieces = st.one_of(_words, st.sampled_from(_specials(name)))
    content = st.lists(pieces, min_size=1, max_size=4).map("".join).filter(lambda s: s.strip())

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(conv=_conversations(name, content))
    def check(conv):
        examples = r.render(conv)
        runs = [(out, run) for out in examples for run in trained_runs(out.mask)]
        replies = [m.content for m in conv.messages if m.role == "assistant"]
        assert len(runs) == len(replies)
        texts = []
        for out, run in runs:
            assert out.input_ids[run[-1]] == r.end_of_turn_id
            assert r.end_of_turn_id not in out.input_ids[run[:-1]]  # content is text: never a stop token
            texts.append(tok.decode(out.input_ids[run[:-1]]).strip())
        assert sorted(texts) == sorted(t for t in texts if any(t.endswith(reply.strip()) for reply in replies))
        assert all(out.stop_positions == [run[-1] for run in trained_runs(out.mask)] for out in examples)

    check()


@pytest.mark.parametrize("name", NAMES)
def test_positions_read_off_markers_equal_positions_from_character_offsets(name):
    """The renderer places trained spans and their closings by the marker tokens around them (no offsets, a faster
    encoder); on every family, with whitespace at the edges of contents, they equal what character offsets give."""
    from eosguard.chat.render import _locate_by_chars, _locate_by_markers

    tok = tokenizer(name)
    edges = st.sampled_from(["", " ", "  ", "\n", "\n\n", "\t", " \n "])
    pieces = st.one_of(_words, st.sampled_from(_specials(name)))
    content = st.tuples(edges, st.lists(pieces, min_size=1, max_size=3).map("".join), edges).map("".join)
    renderers = [ChatRenderer(tok, train_on=policy) for policy in ("all", "last", "each")]

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(conv=_conversations(name, content.filter(lambda s: s.strip())))
    def check(conv):
        for r in renderers:
            for m in r.marked(conv):
                assert m.anchors is not None  # every family's layouts are pinned by markers
                enc = r.template.markers.plain.encode(m.text, add_special_tokens=False)
                by_markers = _locate_by_markers(r.template.markers.is_marker[enc.ids], m.anchors)
                by_chars = _locate_by_chars(enc, m.spans, len(enc.ids))
                assert by_markers is not None and by_chars is not None
                assert by_markers[0].tolist() == by_chars[0].tolist() and by_markers[1] == by_chars[1]

    check()


@pytest.mark.parametrize("name", NAMES)
def test_ids_equal_apply_chat_template_on_ordinary_content(name):
    tok = tokenizer(name)
    r = ChatRenderer(tok)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(conv=_conversations(name, _words))
    def check(conv):
        expected = tok.apply_chat_template(conv.as_dicts(), tokenize=True, return_dict=False)
        assert r.render(conv)[-1].input_ids.tolist() == expected  # the last example: the whole conversation
        k = max(i for i, m in enumerate(conv.messages) if m.role == "assistant")
        prompt = tok.apply_chat_template(conv.as_dicts()[:k], add_generation_prompt=True, return_dict=False)
        assert r.prompt_ids(conv.messages[:k]) == prompt

    check()


CONVS = [
    conversation(("user", "Name a colour."), ("assistant", "Blue.")),
    conversation(("user", "Hi"), ("assistant", "Hello!"), ("user", "Count to three."), ("assistant", "1, 2, 3.")),
]


# gpt-oss renders an earlier reply closed by <|end|>, which no engine stops on: a pipeline that trains the whole
# conversation has one reply fewer closed by a stop token (the doctor calls it `reply-rewritten`).
CLOSED_IN_HISTORY = {name: 3 for name in NAMES} | {"gpt-oss": 2}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_doctor_flags_pad_equal_to_end_of_turn_and_passes_the_fixes(name):
    closed = CLOSED_IN_HISTORY[name]
    broken = diagnose(tokenizer(name, "eot"), conversations=CONVS, collator="transformers")
    assert "eos-masked" in broken.ids and broken.has_errors
    assert broken.facts["collator"]["stop_masked"] == closed
    fixed = family_tokenizer(name, pad="eot")
    prepare_tokenizer(fixed)  # a distinct pad
    for collator in ("transformers", "eosguard"):
        report = diagnose(fixed, conversations=CONVS, collator=collator)
        trained = 3 if collator == "eosguard" else closed
        assert "eos-masked" not in report.ids and report.facts["collator"]["stop_trained"] == trained
        assert not any(s.skipped for s in report.steps)
        # Rewritten in history: gpt-oss changes the closing token (<|return|> -> <|end|>: an error), Qwen3 keeps it.
        rewritten = {"gpt-oss": ["stop-rewritten"], "qwen3": ["reply-rewritten"]}.get(name, [])
        assert [i for i in report.ids if i.endswith("-rewritten")] == (rewritten if collator != "eosguard" else [])
        assert report.has_errors == (collator != "eosguard" and name == "gpt-oss")


@pytest.mark.parametrize("name", NAMES)
def test_guard_raises_on_the_pad_equals_end_of_turn_batch(name):
    tok = tokenizer(name, "eot")
    texts = [tok.apply_chat_template(c.as_dicts(), tokenize=False) for c in CONVS]
    features = [tok(t, add_special_tokens=False) for t in texts]
    closed = CLOSED_IN_HISTORY[name]
    with pytest.raises(StopTokenLossError, match=rf"{closed} of 3 assistant turns"):
        guard(DataCollatorForLanguageModeling(tok, mlm=False), tok)(features)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_train_save_and_eval_follow_the_template(name, tmp_path):
    tok = family_tokenizer(name, pad="eot")
    setup = prepare_tokenizer(tok)
    eot = FAMILIES[name].end_of_turn
    assert setup.end_of_turn == eot and tok.pad_token_id != setup.end_of_turn_id
    r = ChatRenderer(tok)
    examples, _ = build_examples(CONVS * 4, r, max_length=256)  # gpt-oss writes a system preamble
    model = tiny_mistral(len(tok), hidden=16, layers=1, heads=2, kv_heads=1, bos_id=None, eos_id=None, pad_id=None)
    args = training_arguments(tmp_path / "t", steps=2, lr=1e-3, batch_size=4, logging_steps=1, progress=False)
    fit(model, tok, examples, guard(PadCollator(tok.pad_token_id), tok), args)
    folder = save_model_folder(model, tok, tmp_path / "model")
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"][0] == setup.end_of_turn_id
    rep = evaluate_stopping(model, tok, CONVS, max_new_tokens=3, renderer=r)
    assert rep.n == 2 and all(g.new_tokens <= 3 for g in rep.generations)


def test_cli_doctor_on_llama3_with_pad_eot_exits_1_with_eos_masked(tmp_path):
    tokenizer("llama3", "eot").save_pretrained(tmp_path / "llama3")
    result = CliRunner().invoke(app, ["doctor", "--tokenizer", str(tmp_path / "llama3"), "--collator", "transformers"])
    assert result.exit_code == 1 and "eos-masked" in result.output and "<|eot_id|>" in result.output
    assert "skipped" not in result.output


def test_a_template_that_moves_the_system_message_trains_the_reply_after_its_real_prompt():
    """Mistral v3 writes the system message into the *last* user turn: the prompt of a reply has it, the reply's
    own rendering (where that user turn is no longer last) does not. The reply is trained after the prompt
    inference sends, system message included."""
    tok = tokenizer("mistral-v3")
    r = ChatRenderer(tok)
    conv = conversation(("system", "Be brief."), ("user", "Hi"), ("assistant", "Yo"))
    (example,) = r.render(conv)
    prompt = r.prompt_ids(conv.messages[:2])
    assert "Be brief." in tok.decode(prompt) and example.input_ids[: len(prompt)].tolist() == prompt
    assert tok.decode(example.input_ids[example.mask]) == "Yo</s>"


def test_a_template_that_closes_only_the_last_reply_is_refused():
    # Earlier replies are closed by nothing but the next turn's <|im_start|> (user turns keep <|im_end|>): a model
    # sees its past replies run straight into the next turn, so the template is missing its closer (#28).
    tok = family_tokenizer("chatml")
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
        "{% if loop.last or m['role'] != 'assistant' %}{{ '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    with pytest.raises(TemplateError, match="writes no control token of its own after earlier ones"):
        ChatRenderer(tok)
    report = diagnose(tok, conversations=CONVS, collator="transformers")
    assert "template-no-eos" in report.ids and report.has_errors


@pytest.mark.parametrize(("name", "file"), [("mistral-v3", "240323.model.v3"), ("mistral-v7", "241114.model.v7")])
def test_mistral_prompts_equal_mistral_commons_own_encoder(name, file):
    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    from eosguard.testing.fixtures import mistral_common_file

    reference = MistralTokenizer.from_file(str(mistral_common_file(f"mistral_instruct_tokenizer_{file}")))
    r = ChatRenderer(tokenizer(name))
    msgs = [("user", "Hi there"), ("assistant", "Hello!"), ("user", "Count to three, please.")]
    classes = {"user": UserMessage, "assistant": AssistantMessage}
    request = ChatCompletionRequest(messages=[classes[role](content=text) for role, text in msgs])
    assert r.prompt_ids(conversation(*msgs, ("assistant", "x")).messages[:3]) == (
        reference.encode_chat_completion(request).tokens
    )
