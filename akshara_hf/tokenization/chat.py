"""nanochat's conversation layout: `render_conversation` for training, and the same layout as a Jinja chat template.

`render_conversation` is nanochat's function: message text is encoded like tiktoken's `encode_ordinary`, so text a
user types that looks like a special token ("<|assistant_end|>") stays ordinary tokens. Mask rule, checked against
nanochat's source: 1 on assistant text, on python parts *including* their <|python_start|>/<|python_end|> tokens,
and on <|assistant_end|>; 0 on bos, user turns, <|assistant_start|> and python_output parts *including*
<|output_start|>/<|output_end|>.

The chat template (`chat_template.jinja`, used by `apply_chat_template`, TRL and pipelines) renders the same layout to
a string that the tokenizer then parses. Measured with transformers 5.23:
- Without special-token text in messages, its ids and `{% generation %}` assistant mask equal `render_conversation`'s,
  except that consecutive assistant text parts are joined before encoding (nanochat encodes each part alone), so
  tokens at such a join may differ; the mask is unaffected.
- Special-token text in a message would be parsed as a control token (a user typing "<|assistant_end|>" would end
  the turn). The template therefore raises (`jinja2.TemplateError`) on such text. With
  `apply_chat_template(..., sanitize_control_tokens=True)` transformers wraps that text in U+F0000/U+F0001; the
  template writes each such token as "<|" + a lone marker + the rest, which transformers encodes as plain text on
  a pre-token boundary, so the ids equal `render_conversation`'s. Without sanitizing nothing strips those markers,
  so a user could forge the wrapping: the same rewrite keeps a forged token plain text there too, and any other
  marker in message text is refused (the renderer refuses every marker: they never occur in real text).
  transformers refuses `sanitize_control_tokens` together with `return_assistant_tokens_mask`: training data with
  such text goes through `render_conversation`.
- Both refuse the same layouts (blank content, empty part lists, `tool_calls`, roles out of order); the template also
  refuses `tools`/`documents`. `tests/test_chat_fuzz.py` checks all of this on thousands of generated conversations.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from importlib import resources

from akshara_hf.errors import AksharaError, one_line
from akshara_hf.tokenization.tokenizer import SPECIAL_TOKENS, encode_ordinary

PART_TYPES = ("text", "python", "python_output")


def load_chat_template() -> str:
    """The Jinja template shipped with the package (package data), attached to every tokenizer we build."""
    return resources.files("akshara_hf.tokenization").joinpath("chat_template.jinja").read_text(encoding="utf-8")


ROLES = ("system", "user", "assistant")

# transformers' `apply_chat_template(sanitize_control_tokens=True)` wraps special-token text in these two private-use
# characters (`transformers.utils.chat_template_utils._CONTROL_TOKEN_START/_END`); the chat template cannot tell its
# marking from a user's, so message text may not hold them (the template refuses any it cannot prove harmless).
CONTROL_MARKERS = ("\U000f0000", "\U000f0001")
MARKERS_NAME = "U+F0000/U+F0001 (reserved for transformers' control-token marking)"


def _has_marker(text: str) -> bool:
    return CONTROL_MARKERS[0] in text or CONTROL_MARKERS[1] in text


def conversation_problem(messages, min_messages: int = 2, allow_parts: bool = True) -> str | None:
    """What is wrong with `messages` as nanochat's layout (one short phrase, messages and parts counted from 1), or None.

    The rule of nanochat's SmolTalk/CustomJSON tasks and `render_conversation`: an optional leading system message,
    then user/assistant alternating from user, at least `min_messages` after the system message (2 for training
    data, 1 for a generation prompt); contents non-blank strings. With `allow_parts`, assistant content may instead be
    a non-empty list of `{"type": "text"|"python"|"python_output", "text": str}` parts (part text may be empty:
    nanochat's GSM8K rendering produces empty text parts); data sources pass `allow_parts=False` (one Arrow column
    type). The phrase names no row, so that skipped rows can be counted by reason.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        return f"messages must be a list, got {type(messages).__name__}"
    for position, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            return f"message {position} is a {type(message).__name__}, not an object with role and content"
        role, content = message.get("role"), message.get("content")
        if role is None:
            return f"message {position} has no role"
        if role not in ROLES:
            return f"message {position} has unknown role {role!r}"
        if message.get("tool_calls") is not None:
            return f"message {position} ({role}) has tool_calls; nanochat's layout has no tool calls (use python parts)"
        if content is None:
            return f"message {position} ({role}) has no content"
        if isinstance(content, str):
            if not content.strip():
                return f"message {position} ({role}) has empty content"
            if _has_marker(content):
                return f"message {position} ({role}) contains {MARKERS_NAME}"
        elif allow_parts and role == "assistant" and isinstance(content, list):
            if not content:
                return f"message {position} (assistant) has an empty list of parts"
            for number, part in enumerate(content, start=1):
                if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    return f"message {position} part {number}: type {kind!r}, expected one of {PART_TYPES}"
                if not isinstance(part.get("text"), str):
                    return f"message {position} part {number}: 'text' must be a string"
                if _has_marker(part["text"]):
                    return f"message {position} part {number} contains {MARKERS_NAME}"
        else:
            allowed = "a string or a list of parts" if allow_parts and role == "assistant" else "a string"
            return f"message {position} ({role}) content is a {type(content).__name__}, not {allowed}"
    offset = 1 if messages and messages[0]["role"] == "system" else 0
    if len(messages) - offset < min_messages:
        return f"needs at least {min_messages} messages after the system message, has {len(messages) - offset}"
    for position, message in enumerate(messages[offset:], start=offset + 1):
        expected = "user" if (position - offset) % 2 == 1 else "assistant"
        if message["role"] != expected:
            return f"message {position} is {message['role']!r} where {expected!r} was expected (roles must alternate)"
    return None


def validate_conversation(messages, where: str = "", min_messages: int = 2, allow_parts: bool = True) -> None:
    """Raise AksharaError, prefixed with `where` (a file and row), unless `conversation_problem` finds nothing."""
    problem = conversation_problem(messages, min_messages, allow_parts)
    if problem is not None:
        raise AksharaError(f"{where}: {problem}" if where else problem)


def special_token_ids(tokenizer) -> dict[str, int]:
    """The 9 special ids by name; a tokenizer without them cannot render nanochat's layout."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    missing = [token for token, index in ids.items() if index is None or index == tokenizer.unk_token_id]
    if missing:
        raise AksharaError(f"tokenizer lacks nanochat's special tokens {missing}")
    return ids


def _layout(messages, special: dict[str, int]) -> Iterator[tuple[int | str, int]]:
    """nanochat's rendering as (special id or text to encode, mask) pieces, in order."""
    if messages[0]["role"] == "system":
        first = dict(messages[1], content=messages[0]["content"] + "\n\n" + messages[1]["content"])
        messages = [first, *messages[2:]]
    yield special["<|bos|>"], 0
    for message in messages:
        content = message["content"]
        if message["role"] == "user":
            yield from ((special["<|user_start|>"], 0), (content, 0), (special["<|user_end|>"], 0))
            continue
        yield special["<|assistant_start|>"], 0
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if part["type"] == "text":
                yield part["text"], 1
            elif part["type"] == "python":
                yield from ((special["<|python_start|>"], 1), (part["text"], 1), (special["<|python_end|>"], 1))
            else:  # python_output: produced by the tool at inference time, so never a target
                yield from ((special["<|output_start|>"], 0), (part["text"], 0), (special["<|output_end|>"], 0))
        yield special["<|assistant_end|>"], 1


def _render(messages, tokenizer) -> tuple[list[int], list[int]]:
    pieces = list(_layout(messages, special_token_ids(tokenizer)))
    texts = [piece for piece, _ in pieces if isinstance(piece, str)]
    encoded = iter(encode_ordinary(tokenizer, texts))
    ids, mask = [], []
    for piece, value in pieces:
        piece_ids = next(encoded) if isinstance(piece, str) else [piece]
        ids.extend(piece_ids)
        mask.extend([value] * len(piece_ids))
    return ids, mask


def render_conversation(messages, tokenizer, max_tokens: int = 2048) -> tuple[list[int], list[int]]:
    """nanochat's `render_conversation`: token ids and the training mask (1 = target), cut to `max_tokens`."""
    validate_conversation(messages, min_messages=1)  # nanochat renders a lone user message too
    ids, mask = _render(messages, tokenizer)
    return ids[:max_tokens], mask[:max_tokens]


def render_for_generation(messages, tokenizer) -> list[int]:
    """The prompt for the next assistant turn: the rendering up to and including <|assistant_start|>."""
    validate_conversation(messages, min_messages=1)
    if messages[-1]["role"] != "user":
        raise AksharaError(f"message {len(messages)}: a generation prompt must end with a user message")
    ids, _ = _render(messages, tokenizer)
    return ids + [special_token_ids(tokenizer)["<|assistant_start|>"]]


# The conversations `check_chat_template` renders with a folder's template, each as (messages, generation prompt):
# a system turn folded into the first user turn, a lone user turn, a multi-turn prompt whose assistant turn has python
# and output parts (text parts never adjacent: the template joins those before encoding), and a whole conversation.
TEMPLATE_PROBES = (
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "x"}], True),
    ([{"role": "user", "content": "x"}], True),
    ([{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
      {"role": "assistant", "content": [{"type": "text", "text": "b"}, {"type": "python", "text": "1+1"},
                                        {"type": "python_output", "text": "2"}, {"type": "text", "text": "c"}]},
      {"role": "user", "content": "d"}], True),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
      {"role": "assistant", "content": "d"}], False),
)
PROBE_SECONDS = 20  # a template renders the probes in milliseconds; the child's start-up (transformers' import) ~1-3 s
PROBE_MEMORY = 2 << 30  # bytes of address space the child may add for rendering
PROBE_CHARACTERS = 1 << 16  # the probes render to ~100 characters in nanochat's layout

# Renders the probes with transformers' own Jinja environment in a child process: a template is data, but a sandboxed
# one can still loop for hours (`range(100000)` nested) or ask for gigabytes (`'x' * 10**10`), in C where no signal
# reaches it. The child is bounded in time (`timeout`) and, after its imports, in address space (RLIMIT_AS).
_PROBE_CHILD = """
import json, sys
from transformers.utils.chat_template_utils import render_jinja_template
job = json.load(sys.stdin)
try:
    import os, resource
    used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + job["memory"], used + job["memory"]))
except (ImportError, OSError, ValueError):  # not Linux: the time bound still holds
    pass
answers = []
for messages, generation_prompt in job["probes"]:
    try:
        text = render_jinja_template(conversations=[messages], chat_template=job["template"],
                                     add_generation_prompt=generation_prompt, **job["special"])[0][0]
        answers.append({"text": text[: job["characters"] + 1]})
    except BaseException as error:  # the template's raise_exception, jinja2's errors, MemoryError
        answers.append({"error": ": ".join(filter(None, (type(error).__name__, str(error)[:1000])))})
json.dump(answers, sys.stdout)
"""


def _render_probes(tokenizer, where: str) -> list[dict]:
    """Each probe rendered by the tokenizer's template to a string ({"text"}) or refused ({"error"}). The package's
    own template renders here; any other one in a bounded child process (see `_PROBE_CHILD`)."""
    import json
    import subprocess
    import sys

    probes = [([dict(message) for message in messages], prompt) for messages, prompt in TEMPLATE_PROBES]
    if tokenizer.chat_template == load_chat_template():  # ours: known to render in bounded time
        answers = []
        for messages, prompt in probes:
            try:
                answers.append({"text": tokenizer.apply_chat_template(messages, add_generation_prompt=prompt,
                                                                      tokenize=False)})
            except Exception as error:  # the tokenizer's special tokens may not be nanochat's
                answers.append({"error": f"{type(error).__name__}: {error}"})
        return answers
    job = {"template": tokenizer.chat_template, "probes": probes, "memory": PROBE_MEMORY,
           "characters": PROBE_CHARACTERS, "special": tokenizer.special_tokens_map}
    try:
        child = subprocess.run([sys.executable, "-c", _PROBE_CHILD], input=json.dumps(job, default=str),
                               capture_output=True, text=True, timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        raise AksharaError(f"{where}: the chat template did not render {len(probes)} short conversations in "
                           f"{PROBE_SECONDS} s (nanochat's renders them in milliseconds)") from None
    try:
        answers = json.loads(child.stdout)
        if not isinstance(answers, list) or len(answers) != len(probes):
            raise ValueError
    except ValueError:
        last = child.stderr.strip().splitlines()[-1:] or ["no output"]
        raise AksharaError(f"{where}: the chat template could not be rendered (exit {child.returncode}: "
                           f"{one_line(last[0])})") from None
    return answers


def check_chat_template(tokenizer, where: str) -> None:
    """A folder's chat template must render nanochat's layout: `serve` checks requests with it, and pipelines prompt
    with it (chat and evaluate use `render_for_generation`); an empty or foreign template prompted the model with a
    layout it never saw, answering 200 with junk. Each of `TEMPLATE_PROBES` must give `render_conversation`'s ids."""
    if not tokenizer.chat_template:
        raise AksharaError(f"{where}: no chat template (or an empty one); nanochat's layout needs one")
    for (messages, prompt), answer in zip(TEMPLATE_PROBES, _render_probes(tokenizer, where)):
        shown = " ".join(message["role"] for message in messages) + (" + generation prompt" if prompt else "")
        if "error" in answer:
            raise AksharaError(f"{where}: the chat template does not render a conversation ({shown}): "
                               f"{one_line(answer['error'])}")
        expected = render_for_generation(messages, tokenizer) if prompt else render_conversation(messages, tokenizer)[0]
        text = answer["text"]
        rendered = None if len(text) > PROBE_CHARACTERS else tokenizer(text, add_special_tokens=False)["input_ids"]
        if rendered != expected:
            got = text[:PROBE_CHARACTERS] if rendered is None else tokenizer.decode(rendered)
            raise AksharaError(f"{where}: the chat template renders a conversation ({shown}) as "
                               f"{one_line(got, limit=120)!r}, not nanochat's layout {tokenizer.decode(expected)!r}")


def generation_config_kwargs(tokenizer) -> dict:
    """`GenerationConfig` arguments for nanochat's chat CLI: stop on <|assistant_end|> or <|bos|>, as its engine does."""
    special = special_token_ids(tokenizer)
    return {
        "bos_token_id": special["<|bos|>"],
        "eos_token_id": [special["<|assistant_end|>"], special["<|bos|>"]],
        "pad_token_id": special["<|assistant_end|>"],
        "do_sample": True,
        "temperature": 0.6,
        "top_k": 50,
        "max_new_tokens": 256,
    }
