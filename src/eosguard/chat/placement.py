"""Placing the trained replies of one conversation: which examples it becomes, where each reply starts and ends.

`plan` takes a read template (`eosguard.chat.templates.ChatTemplate`: each kind of reply's closer, what the template
renders) and a function that renders the conversation's first k messages, and trains each supervised reply **as
the model will produce it**: the conversation up to it with the generation prompt (exactly what inference sends),
then the reply as the template renders a *last* reply, through its closing sequence. Replies whose text is the same
inside the whole conversation are trained there, in one example; a reply the template renders differently once
later turns follow (reasoning dropped from history, gpt-oss's `<|end|>` for `<|return|>`, Mistral's tools moved to
the last user turn) gets an example of its own. Two prompts need a treatment: one that opens a reasoning block the
reply does not fill (DeepSeek-R1's `<think>\n`) is continued with the block closed (by the reply's own rendering,
or empty: `\n</think>\n\n`), counted; one that holds history the reply's own rendering drops (gpt-oss drops a tool
call's reasoning once a final answer follows) is kept, the reply taken from after the previous message.

The renderer (`eosguard.chat.render`) feeds `plan` real renderings (any conversation) or skeletons whose contents are
slots (`eosguard.chat.layouts`: plain conversations, compiled once per shape); both get the same examples.

Run as:
    eosguard doctor --tokenizer PATH --data chats.jsonl --show 2   # where each reply is trained
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eosguard.chat.markers import SLOT, SPLIT
from eosguard.chat.templates import _NO_EOS, ChatTemplate, TemplateError, Turn, common_prefix

Anchored = Callable[[int, bool, int], tuple[str, int]]  # (n, gen, at) -> (rendering of n messages, end of message at)


@dataclass
class Placed:
    """One trained reply placed in an example's marked text: the example `text`, the reply from `start` (just past
    its generation prompt) to `end` (just past its stop token), its closing sequence from `closing`; `treated`: the
    prompt opened a reasoning block that eosguard closed."""

    text: str
    start: int
    closing: int
    end: int
    treated: bool = False


@dataclass
class Example:
    """One training example of a conversation: marked text with a SPLIT before each trained reply, and per trained
    reply its (start, closing, stop) positions: its first trained character (just past the SPLIT), the first marker
    of its closing sequence, its stop token's marker; `replies` are message indices."""

    text: str
    spans: list[tuple[int, int, int]]
    replies: list[int]
    own: bool = False  # a reply trained apart from its conversation (rewritten in history, or a treated prompt)
    treated: int = 0  # replies whose opened reasoning block eosguard closed


def plan(
    template: ChatTemplate,
    render: Callable[[int, bool], str],
    turns: Sequence[Turn],
    supervised: Sequence[int],
    *,
    each: bool = False,
    anchored: Anchored | None = None,
) -> list[Example]:
    """The examples that train the `supervised` replies of one conversation; `render(k, gen)` is the marked
    rendering of its first k messages (with the generation prompt when `gen`); `anchored(k, gen, i)` the same
    with the end of message i's content found (the text, and the position just past that content; -1 when the
    template dropped it), for templates that render history differently in a prompt and under its reply.
    `each`: one example per reply."""
    n = len(turns)
    placed = {k: _place(template, render(k, True), render(k + 1, False), turns[k], k, anchored) for k in supervised}
    base = placed[n - 1].text if n - 1 in placed else render(n, False)
    together = [k for k in supervised if (k == n - 1 or not each) and base.startswith(placed[k].text[: placed[k].end])]
    examples = [_example(placed[k].text, [placed[k]], [k], own=True) for k in supervised if k not in together]
    if together:
        examples.append(_example(base, [placed[k] for k in together], together, own=False))
    return examples


def _place(t: ChatTemplate, prompt: str, rendered: str, turn: Turn, k: int, anchored: Anchored | None) -> Placed:
    """Reply k as the template renders a last reply after its generation prompt, through its closer.

    Where the prompt is not a prefix of that rendering: a reasoning block the prompt leaves open is closed (by the
    reply's own rendering, or empty: DeepSeek-R1); history the prompt holds and the rendering drops (gpt-oss drops
    a tool call's reasoning once a final answer follows) is kept, the reply taken from after the previous
    message. Anything else is an error naming the message."""
    if turn.role != "assistant":
        raise TemplateError(f"message {k} is not an assistant reply")
    treated = False
    block = _open_block(t, prompt)
    if rendered.startswith(prompt):
        text = rendered
    elif block is not None and (tail := _after_opened(prompt, rendered, block)) is not None:
        # The reply's own rendering closes the block (Nemotron's `<think></think>`), or it has none (DeepSeek-R1):
        # then the opened block is closed here, with the reply's reasoning inside.
        closure = "" if block[2] in tail else (turn.reasoning or "") + "\n" + block[2] + "\n\n"
        text = prompt + closure + tail
        treated = True
    elif (reply := _after_previous(anchored, k)) is not None:
        text = prompt + reply
    elif turn.reasoning is not None:
        raise TemplateError(
            f"message {k} has reasoning, but its generation prompt already closes the reasoning block "
            f"(template arguments: {t.args or 'none'}): the model would never be asked to write it",
            hint="drop the reasoning from the data, or the template argument that turns thinking off",
        )
    else:
        raise _not_a_prefix(t, prompt, rendered, k)
    if turn.reasoning is not None and not t.supports.reasoning and not treated:
        raise TemplateError(
            f"message {k} has reasoning, which the chat template does not render: it would not be trained",
            hint="use a template with reasoning support (reasoning_content), or put the reasoning in the content",
        )
    closer = t.closers[turn.kind]
    marker = t.markers.marker_of[closer.token]
    start = len(prompt)
    at = text.find(marker, start)
    if at < 0 and closer.appended:
        text, at = text + marker, len(text)
    if at < 0:
        raise TemplateError(f"the chat template writes no {closer.token} after message {k}", **_NO_EOS)
    seq = "".join(t.markers.marker_of[token] for token in closer.sequence)
    closing = at + 1 - len(seq) if text[at + 1 - len(seq) : at + 1] == seq and at + 1 - len(seq) >= start else at
    return Placed(text, start, closing, at + 1, treated)


def _not_a_prefix(t: ChatTemplate, prompt: str, rendered: str, k: int) -> TemplateError:
    """The error for a generation prompt that the conversation's rendering does not start with; where the two differ
    in whitespace alone, the cause named: a template indented without whitespace control writes its own line breaks
    and indentation between its tags.

    >>> from eosguard.testing.fixtures import demo_tokenizer
    >>> t = ChatTemplate(demo_tokenizer())
    >>> _not_a_prefix(t, "<|im_start|>assistant\\n\\n", "<|im_start|>assistant\\nHi", 1).hint
    'strip the indentation and line breaks between the tags, or use whitespace control ({%- ... -%}, {{- ... -}})'
    """
    at = common_prefix(prompt, rendered)

    def shown(text: str) -> str:  # as the template writes it, a message's content as `...`
        return repr(SLOT.sub("...", t.decode_marked(text[at : at + 20])))

    where = f"at character {at} the prompt writes {shown(prompt)}, the conversation {shown(rendered)}"
    if rendered.split() and "".join(rendered.split()).startswith("".join(prompt.split())):
        return TemplateError(
            f"the generation prompt for message {k} differs from the conversation rendered up to that reply in "
            f"whitespace alone ({where}): the template writes the line breaks and indentation "
            "around its tags into the text (an indented template without whitespace control), so the prompt the "
            "model is given is not the text it was trained on",
            hint="strip the indentation and line breaks between the tags, or use whitespace control ({%- ... -%}, "
            "{{- ... -}})",
        )
    return TemplateError(
        f"the generation prompt for message {k} is not a prefix of the conversation rendered up to that reply: the "
        f"template renders it differently once the reply is written ({where})",
        hint="set the template argument that makes them agree, or use template: chatml",
    )


def _after_previous(anchored: Anchored | None, k: int) -> str | None:
    """Reply k's own text in its rendering as a last reply: what follows the previous message's content and the
    text the generation prompt writes after that content (its closing, the reply's header); None when the two
    renderings do not agree there."""
    if anchored is None or k == 0:
        return None
    (prompt, p_end), (rendered, r_end) = anchored(k, True, k - 1), anchored(k + 1, False, k - 1)
    if p_end < 0 or r_end < 0:
        return None
    between = prompt[p_end:]
    return rendered[r_end + len(between) :] if rendered.startswith(between, r_end) else None


def _open_block(t: ChatTemplate, prompt: str) -> tuple[int, str, str] | None:
    """(position, opener, closer) of a block the prompt opens last and leaves open (`<think>` without `</think>`),
    a control token's marker or, where the vocabulary has no such token, the tag as plain text."""
    last = max(((prompt.rfind(o), o, c) for o, c in t.block_pairs.items()), key=lambda b: b[0], default=(-1, "", ""))
    if last[0] < 0 or any(prompt.rfind(c) > last[0] for c in t.block_pairs.values()):
        return None
    return last


def _after_opened(prompt: str, rendered: str, block: tuple[int, str, str]) -> str | None:
    """The reply's rendering after the block the prompt opened: what follows the opener where the rendering writes
    it too (Nemotron), else what follows the text before it (DeepSeek-R1); None when the prompt and the rendering
    differ anywhere else (the prompt may only add the opener and whitespace)."""
    at, opener, _ = block
    if prompt[at + len(opener) :].strip(" \n") or not rendered.startswith(prompt[:at]):
        return None
    return rendered[at + len(opener) :] if rendered.startswith(opener, at) else rendered[at:]


def _example(text: str, replies: list[Placed], indices: list[int], *, own: bool) -> Example:
    """The example text with a SPLIT before each reply, and the replies' positions shifted past them."""
    starts = sorted(p.start for p in replies)
    for s in reversed(starts):
        text = text[:s] + SPLIT + text[s:]

    def shift(p: int, strict: bool = False) -> int:
        return p + sum(1 for s in starts if (s < p if strict else s <= p))

    spans = [(shift(p.start), shift(p.closing), shift(p.end - 1)) for p in replies]
    return Example(text, spans, indices, own=own, treated=sum(p.treated for p in replies))
