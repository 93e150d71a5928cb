"""The renderer on a second tokenizer family: Mistral's Tekken (byte-level BPE, 131k tokens, from mistral-common)."""

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eosguard.chat.render import ChatRenderer
from eosguard.chat.tokenizer_setup import prepare_tokenizer
from eosguard.data.conversations import conversation
from eosguard.testing.fixtures import tekken_tokenizer


@pytest.fixture(scope="module")
def tekken():
    tok = tekken_tokenizer()
    report = prepare_tokenizer(tok, template="chatml")  # Tekken ships Mistral's template; ask for ChatML here
    return tok, report, ChatRenderer(tok)


def test_setup_keeps_the_existing_pad_and_adds_chatml_tokens(tekken):
    tok, report, _ = tekken
    assert report.added_tokens == ["<|im_start|>", "<|im_end|>"] and report.embeddings_must_grow
    assert (report.pad_kind, report.pad_token, report.pad_token_id) == ("existing", "<pad>", 11)
    assert not report.writes_bos and report.template == "chatml"  # Tekken adds no BOS when it encodes text
    assert report.eos_changed_from == "</s>" and tok.eos_token == "<|im_end|>"


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéü日本 .,!?\n0123456789", min_size=1, max_size=25)
_plain = _word.filter(lambda s: s.strip() and not s[0].isspace())
_any = _word.filter(str.strip)
_special = st.sampled_from(["<|im_end|>", "<|im_start|>", "[INST]", "</s>", "<s>", "<pad>", "[TOOL_CALLS]"])


def _conv(contents):
    return conversation(*[("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(contents)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=st.lists(_plain, min_size=2, max_size=6).filter(lambda c: len(c) % 2 == 0))
def test_ids_equal_apply_chat_template(tekken, contents):
    tok, _, r = tekken
    conv = _conv(contents)
    assert r.render(conv)[0].input_ids.tolist() == tok.apply_chat_template(conv.as_dicts(), return_dict=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    contents=st.lists(st.one_of(_any, _special, st.tuples(_special, _any).map("".join)), min_size=2, max_size=6).filter(
        lambda c: len(c) % 2 == 0
    )
)
@example(contents=["0", "0", "0", "\n0", "0", "0"])  # an earlier reply opening with "\n": split as in training
def test_prompt_is_a_prefix_and_labels_are_replies_with_their_stop(tekken, contents):
    """Holds for any content, leading whitespace and special-token text included."""
    tok, _, r = tekken
    conv = _conv(contents)
    (out,) = r.render(conv)
    ids = out.input_ids.tolist()
    for k in range(1, len(contents), 2):
        prompt = r.prompt_ids(conv.messages[:k])
        assert ids[: len(prompt)] == prompt
    assert tok.decode(out.input_ids[out.mask]) == "".join(c + "<|im_end|>" for c in contents[1::2])
    control = set(tok.all_special_ids) | {tok.convert_tokens_to_ids("<|im_start|>"), r.end_of_turn_id}
    assert sum(i in control for i in ids) == 2 * len(contents)  # only the template's <|im_start|> / <|im_end|>


def test_reply_starting_with_whitespace_keeps_the_prompt_boundary(tekken):
    tok, _, r = tekken
    conv = conversation(("user", "Hi"), ("assistant", "\n\n  Hello"))
    ours = r.render(conv)[0].input_ids.tolist()
    theirs = tok.apply_chat_template(conv.as_dicts(), return_dict=False)
    # The template's text tokenized whole merges the header's "\n" into the reply; the model at inference sees
    # the header alone, so eosguard keeps that boundary. Everything else is the same.
    assert ours != theirs and tok.decode(ours) == tok.decode(theirs)
    assert ours[: len(r.prompt_ids(conv.messages[:1]))] == r.prompt_ids(conv.messages[:1])
