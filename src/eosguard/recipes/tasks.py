"""Synthetic chat tasks with checkable answers, for the demo and the tests (seeded, nothing to download).

Each task turns a random input into a (prompt, answer) pair whose answer is exactly checkable:
repeat / reverse / sort a few words, pick the first or last word,
count the words, and small additions. Train and held-out sets are disjoint by prompt.

`agent_conversations` makes the same additions an agent's job: the assistant reasons, calls an `add` tool, reads
its result, answers, and is asked a follow-up (multi-turn, reasoning, tool calls and tool results in one chat).

Run as:
    eosguard demo   # trains and evaluates on these tasks
"""

from __future__ import annotations

import random
from collections.abc import Callable

from eosguard.data.conversations import Conversation, Message

WORDS: list[str] = [
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "maple",
    "amber",
    "coral",
    "delta",
    "ember",
    "frost",
    "grove",
    "harbor",
    "island",
    "jungle",
    "lemon",
    "meadow",
    "nectar",
    "orbit",
    "pepper",
    "quartz",
    "raven",
    "saddle",
    "timber",
    "velvet",
    "willow",
    "yellow",
    "zebra",
    "anchor",
    "bridge",
    "candle",
    "dragon",
    "falcon",
    "garden",
    "hammer",
    "lantern",
    "mirror",
    "needle",
    "pillow",
    "rocket",
    "silver",
    "thunder",
    "violet",
    "wagon",
    "basket",
    "cactus",
]

SYSTEM = "You are a precise assistant. Answer with the result only."


def _words(rng: random.Random) -> list[str]:
    return rng.sample(WORDS, rng.randint(3, 5))


def repeat_task(rng: random.Random) -> tuple[str, str]:
    w = _words(rng)
    return f"Repeat: {' '.join(w)}", " ".join(w)


def reverse_task(rng: random.Random) -> tuple[str, str]:
    w = _words(rng)
    return f"Reverse: {' '.join(w)}", " ".join(reversed(w))


def sort_task(rng: random.Random) -> tuple[str, str]:
    w = _words(rng)
    return f"Sort: {' '.join(w)}", " ".join(sorted(w))


def first_task(rng: random.Random) -> tuple[str, str]:
    w = _words(rng)
    return f"First word: {' '.join(w)}", w[0]


def last_task(rng: random.Random) -> tuple[str, str]:
    w = _words(rng)
    return f"Last word: {' '.join(w)}", w[-1]


def count_task(rng: random.Random) -> tuple[str, str]:
    w = _words(rng)
    return f"Count the words: {' '.join(w)}", str(len(w))


def add_task(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return f"Add: {a} + {b}", str(a + b)


TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "repeat": repeat_task,
    "reverse": reverse_task,
    "sort": sort_task,
    "add": add_task,
    "first": first_task,
    "last": last_task,
    "count": count_task,
}


def make_conversations(
    task_names: list[str], n: int, *, seed: int, exclude: set[str] | None = None
) -> list[Conversation]:
    """`n` single-turn conversations cycling over `task_names`, prompts unique and not in `exclude`."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    out: list[Conversation] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n:
            raise RuntimeError(f"cannot draw {n} distinct prompts for {task_names}")
        name = task_names[len(out) % len(task_names)]
        prompt, answer = TASKS[name](rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        messages = (Message("system", SYSTEM), Message("user", prompt), Message("assistant", answer))
        out.append(Conversation(messages=messages, source=f"task:{name}"))
    return out


ADD_TOOL: dict = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def agent_conversations(n: int, *, seed: int, end_on_call: bool = False) -> list[Conversation]:
    """`n` tool-calling chats: a question, a reasoned `add` call, its result, the answer, a follow-up and its answer
    (reasoning on every reply; call ids of 9 characters, as Mistral's templates require). end_on_call: end each chat
    on its tool call instead (a held-out set whose reference reply is the call)."""
    from eosguard.data.conversations import ToolCall

    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        call = ToolCall("add", {"a": a, "b": b}, f"call{i:05d}")
        msgs = [
            Message("user", f"What is {a} + {b}?"),
            Message("assistant", "", reasoning=f"I add {a} and {b} with the tool.", tool_calls=(call,)),
        ]
        if not end_on_call:
            msgs += [
                Message("tool", str(a + b), tool_call_id=call.id),
                Message("assistant", str(a + b), reasoning=f"The tool says {a + b}."),
                Message("user", "And doubled?"),
                Message("assistant", str(2 * (a + b)), reasoning=f"Twice {a + b} is {2 * (a + b)}."),
            ]
        out.append(Conversation(messages=tuple(msgs), source=f"agent:{i}", tools=(ADD_TOOL,)))
    return out


# Preference pairs over the same tasks: the chosen reply the right answer, the rejected one the same answer stopped
# short (a number missing its last digit, a word cut in half, a list missing its last words): chosen replies are the
# longer ones, as in most preference data, and the lesson of each pair is where to stop.
PAIR_TASKS: tuple[str, ...] = ("add", "first", "last", "sort")


def _short(answer: str) -> str:
    """The answer stopped short: a list without its later words, a word or number without its end."""
    words = answer.split()
    if len(words) > 1:
        return " ".join(words[: (len(words) + 1) // 2])
    return answer[: max(1, len(answer) // 2)] if len(answer) > 1 else answer


def preference_pairs(task_names: list[str], n: int, *, seed: int, exclude: set[str] | None = None) -> list[dict]:
    """`n` preference records in TRL's conversational format (`prompt`, `chosen`, `rejected`) over the tasks: the
    chosen reply the right answer, the rejected one stopped short; prompts as `make_conversations` draws them."""
    out = []
    for conv in make_conversations(task_names, n, seed=seed, exclude=exclude):
        system, user, reply = conv.messages
        if _short(reply.content) == reply.content:
            raise ValueError(f"{conv.source}: an answer of one character has no shorter form")
        out.append({
            "prompt": [system.as_dict(), user.as_dict()],
            "chosen": [{"role": "assistant", "content": reply.content}],
            "rejected": [{"role": "assistant", "content": _short(reply.content)}],
            "task": conv.source.removeprefix("task:"),
        })  # fmt: skip
    return out


def split_tasks(
    task_names: list[str], n_train: int, n_heldout: int, *, seed: int
) -> tuple[list[Conversation], list[Conversation]]:
    """Disjoint train and held-out sets (held-out drawn first, then excluded from train)."""
    heldout = make_conversations(task_names, n_heldout, seed=seed + 1)
    train = make_conversations(task_names, n_train, seed=seed, exclude={c.messages[1].content for c in heldout})
    return train, heldout
