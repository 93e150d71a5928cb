"""Training examples from conversations: render, fit to a max length under an explicit policy, count everything.

`fit_examples` is the one path from conversations to training examples: `build_examples` makes them
`{"input_ids", "labels"}` rows for `eosguard train`, the demo and the benchmarks, and `eosguard prepare` writes them
to Arrow columns; `PrepStats` counts what happened to each conversation.

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/   # prints the counts
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

from eosguard.base.errors import DataError
from eosguard.chat.render import ChatRenderer, OverLength, OverLengthError, Rendered, fit_to_length
from eosguard.data.conversations import Conversation


@dataclass
class PrepStats:
    """What happened to each conversation on its way to training examples.

    own_examples / own_tokens: replies trained in an example of their own (the template renders them differently
    once later turns follow, or `train_on: each`), and the tokens those examples hold; treated: replies trained
    after a reasoning block the generation prompt opened and eosguard closed (see `eosguard.chat.templates`);
    split_turns: turns of several tool calls split into one message per call (a template that renders one a turn).
    """

    conversations: int = 0
    examples: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    trained_tokens: int = 0
    total_tokens: int = 0
    own_examples: int = 0
    own_tokens: int = 0
    treated: int = 0
    split_turns: int = 0

    def summary(self) -> str:
        text = (
            f"{self.conversations} conversations -> {self.examples} examples "
            f"({self.truncated} truncated keeping their stop token, {self.dropped_too_long} dropped as too long, "
            f"{self.dropped_no_target} dropped with nothing to train); "
            f"{self.trained_tokens} of {self.total_tokens} tokens trained"
        )
        if self.own_examples:
            text += (
                f"; {self.own_examples} replies trained in examples of their own, as the template renders a last "
                f"reply ({self.own_tokens} tokens)"
            )
        if self.treated:
            text += f"; {self.treated} replies trained after a reasoning block the prompt opens, closed empty"
        if self.split_turns:
            text += f"; {self.split_turns} turns of several tool calls split into one message per call"
        return text

    def __iadd__(self, other: PrepStats) -> PrepStats:
        """Add another chunk's or process's counts."""
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)
        return self


def fit_examples(
    conversations: Sequence[Conversation],
    renderer: ChatRenderer,
    stats: PrepStats,
    *,
    max_length: int,
    over_length: OverLength = "truncate",
    batch_size: int = 1000,
) -> Iterator[Rendered]:
    """Render, fit to `max_length` under the explicit policy, and yield the examples kept (one per conversation,
    more where the template renders a reply differently once later turns follow), counting every outcome into
    `stats`. An example too long under `over_length="error"` names its file and line."""
    stats.conversations += len(conversations)
    for b in range(0, len(conversations), batch_size):
        chunk = conversations[b : b + batch_size]
        for conv, examples in zip(chunk, renderer.render_batch(chunk), strict=True):
            stats.split_turns += renderer.split_calls(conv)[1]
            for rendered in examples:
                try:
                    fitted = fit_to_length(rendered, max_length, over_length)
                except OverLengthError as exc:
                    if conv.line is None:
                        raise
                    raise DataError(exc.message, path=conv.source, line=conv.line, hint=exc.hint) from None
                if fitted is None:
                    stats.dropped_too_long += 1
                    continue
                if not fitted.mask.any():
                    stats.dropped_no_target += 1
                    continue
                stats.examples += 1
                stats.truncated += fitted.truncated
                stats.trained_tokens += int(fitted.mask.sum())
                stats.total_tokens += len(fitted)
                stats.own_examples += fitted.own
                stats.own_tokens += len(fitted) if fitted.own else 0
                stats.treated += fitted.treated
                yield fitted


def build_examples(
    conversations: Sequence[Conversation],
    renderer: ChatRenderer,
    *,
    max_length: int,
    over_length: OverLength = "truncate",
    batch_size: int = 1000,
) -> tuple[list[dict[str, list[int]]], PrepStats]:
    """`fit_examples` as `{"input_ids", "labels"}` rows, with the counts."""
    stats = PrepStats()
    fitted = fit_examples(
        conversations, renderer, stats, max_length=max_length, over_length=over_length, batch_size=batch_size
    )
    return [r.to_example() for r in fitted], stats
