"""What rendering conversations into training examples depends on, as one typed object: `RenderSettings`.

`eosguard train` builds it from its config (`TrainConfig.render_settings`), `eosguard prepare` from its options, and a
prepared folder keeps the one it was written with, so `read_prepared` compares the run's settings with the folder's as
a whole (`RenderSettings.differences`), not key by key.

Run as:
    eosguard prepare chats.jsonl --tokenizer PATH --out prepared/ --max-length 4096 --train-on last
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TrainOn = Literal["all", "last", "each"]
OverLength = Literal["drop", "truncate", "error"]

MAX_NEW_TOKENS = 128
"""The generation budget of every stop-rate evaluation unless one is given (`eval`, `fix`, training's callback)."""


class RenderSettings(BaseModel):
    """How conversations become training examples.

    Example:
        >>> RenderSettings(max_length=512).differences(RenderSettings(max_length=1024, train_on="last"))
        ["max_length: prepared 1024, longer than this run's 512", "train_on: prepared 'last', this run 'all'"]
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(default=2048, gt=8)
    """Longest example in tokens."""
    over_length: OverLength = "truncate"
    """Longer examples: drop them, truncate keeping each supervised turn's stop token, or stop with an error."""
    train_on: TrainOn = "all"
    """Supervise every assistant turn, the last one only, or each in an example of its own."""
    tools: tuple[dict[str, Any], ...] | None = None
    """Function schemas offered in conversations that bring none of their own."""
    template_args: dict[str, Any] = {}
    """The chat template's arguments (`enable_thinking`, ...), written into the template as its defaults."""
    skip_invalid: bool = False
    """Skip malformed records, counted, instead of stopping at the first one."""

    def differences(self, prepared: RenderSettings) -> list[str]:
        """Why examples prepared with `prepared` are not this run's (empty: they are): every setting must be equal,
        except that they may have been cut shorter than this run allows, and that which records were skipped as
        malformed (`skip_invalid`) is the data's history, not the examples' form."""
        out = []
        if prepared.max_length > self.max_length:
            out.append(f"max_length: prepared {prepared.max_length}, longer than this run's {self.max_length}")
        for name in type(self).model_fields:
            if name not in ("max_length", "skip_invalid") and getattr(prepared, name) != getattr(self, name):
                out.append(f"{name}: prepared {getattr(prepared, name)!r}, this run {getattr(self, name)!r}")
        return out


__all__ = ["MAX_NEW_TOKENS", "OverLength", "RenderSettings", "TrainOn"]
