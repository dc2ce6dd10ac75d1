"""nanochat's conversation rule, as one function that reports instead of raising, so the caller decides
whether a bad row is an error or a skipped-and-counted row.

The rule (nanochat's SmolTalk/CustomJSON tasks and `render_conversation`): an optional leading system
message, then at least two messages alternating user, assistant, user, ...; every content a non-empty
string. Problems are worded without row numbers so that skipped rows can be counted by reason.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant")


def validate_conversation(messages: Any) -> str | None:
    """Return what is wrong with `messages` (one short phrase), or None when nanochat accepts it."""
    if not isinstance(messages, list):
        return f"messages must be a list, got {type(messages).__name__}"
    for position, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            return f"message {position} is a {type(message).__name__}, not an object with role and content"
        role, content = message.get("role"), message.get("content")
        if role is None:
            return f"message {position} has no role"
        if role not in ROLES:
            return f"message {position} has unknown role {role!r}"
        if content is None:
            return f"message {position} ({role}) has no content"
        if not isinstance(content, str):
            return f"message {position} ({role}) content is a {type(content).__name__}, not a string"
        if not content.strip():
            return f"message {position} ({role}) has empty content"
    offset = 1 if messages and messages[0].get("role") == "system" else 0
    turns = messages[offset:]
    if len(turns) < 2:
        return f"needs at least 2 messages after the system message, has {len(turns)}"
    for position, message in enumerate(turns, start=offset + 1):
        expected = "user" if (position - offset) % 2 == 1 else "assistant"
        if message["role"] != expected:
            return f"message {position} is {message['role']!r} where {expected!r} was expected (roles must alternate)"
    return None
