"""`akshara-hf chat FOLDER`: a thin in-process terminal chat, for when no server is wanted.

transformers does the rest: `generate` with the folder's `generation_config` (nanochat's temperature 0.6, top-k 50,
stop on <|assistant_end|>/<|bos|>) and `TextIteratorStreamer` for streaming. The prompt is rendered with nanochat's
layout (`render_for_generation`), so text a user types that looks like a control token stays text.
`generate` runs in a thread behind the streamer; an exception there ends the stream and becomes a one-line error
(exit status 2) instead of a stack trace printed by the thread and a reader waiting forever. A history longer than the
model's context (`max_position_embeddings`) loses its oldest turns, with a notice; a message that alone is too long is
refused. For an OpenAI-compatible server use `akshara-hf serve` instead (see the README).
"""

import math
import sys
from threading import Thread

from akshara_hf.errors import AksharaError, one_line


def generation_overrides(generation_config, max_new_tokens=None, temperature=None, top_k=None, top_p=None):
    """A copy of the folder's generation config with the command's options; temperature 0 = greedy, and then the
    sampling settings are cleared, so transformers does not warn (into the reply) that they are unused."""
    import copy

    config = copy.deepcopy(generation_config)
    if max_new_tokens is not None:
        config.max_new_tokens = max_new_tokens
    if top_k is not None:
        config.top_k = top_k
    if top_p is not None:
        config.top_p = top_p
    if temperature is not None:
        config.do_sample = temperature > 0
        config.temperature = temperature if temperature > 0 else None
    if not config.do_sample:
        config.temperature = config.top_k = config.top_p = None
    return config


def fit_to_context(history: list[dict], tokenizer, context: int | None, notice) -> tuple[list[dict], list[int]]:
    """The prompt ids for `history`, dropping its oldest user/assistant turns (never the system message) until one
    new token fits in `context`; AksharaError if the last message alone does not fit."""
    from akshara_hf.tokenization.chat import render_for_generation

    offset = 1 if history[0]["role"] == "system" else 0
    dropped = 0
    while True:
        ids = render_for_generation(history, tokenizer)
        if context is None or len(ids) < context:
            break
        if len(history) - offset <= 1:
            raise AksharaError(f"the message is {len(ids)} tokens with the chat layout; the model's context is "
                               f"{context} (max_position_embeddings)")
        history = history[:offset] + history[offset + 2:]
        dropped += 1
    if dropped:
        notice(f"note: the conversation is longer than the model's context ({context} tokens); "
               f"dropped its {dropped} oldest exchange(s)")
    return history, ids


def _is_utf8(text: str) -> bool:
    """False for text holding lone surrogates: Python's stand-ins for bytes that were not UTF-8 (argv, and stdin
    decoded with `surrogateescape`), which the tokenizer cannot take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


MAX_LINE_BYTES = 1 << 20  # far past any model's context; a line without end (`< /dev/zero`) is refused there


def _read_line(stdin) -> str | None:
    """One line of the user's input, None at its end; AksharaError for bytes that are not UTF-8 (a terminal set to
    another encoding: every line would be garbage to the model) and for a line over `MAX_LINE_BYTES` (reading on
    would fill the memory)."""
    buffer = getattr(stdin, "buffer", None)
    reader = buffer if buffer is not None else stdin
    raw = reader.readline(MAX_LINE_BYTES + 1)  # bytes, decoded strictly below
    if not raw:
        return None
    if len(raw) > MAX_LINE_BYTES:
        raise AksharaError(f"stdin: a line longer than {MAX_LINE_BYTES:,} bytes (no model's context holds it)")
    try:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        line = None
    if line is None or not _is_utf8(line):
        raise AksharaError("stdin: a line is not UTF-8 text (set the terminal to UTF-8)")
    return line


def _generate(model, kwargs: dict, streamer, failures: list) -> None:
    try:
        model.generate(**kwargs)
    except Exception as error:  # anything generate raises must reach the reader, not end the thread silently
        failures.append(error)
        streamer.end()  # unblocks the reader


def _reply(model, tokenizer, ids: list[int], stream) -> str:
    """Stream one reply to `stream` with the model's generation_config; never past the model's context."""
    import torch
    from transformers import TextIteratorStreamer

    input_ids = torch.tensor([ids], device=model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "streamer": streamer}
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and (model.generation_config.max_new_tokens or 0) + len(ids) > context:
        kwargs["max_new_tokens"] = context - len(ids)
    failures = []
    thread = Thread(target=_generate, args=(model, kwargs, streamer, failures), daemon=True)
    thread.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        stream.write(piece)
        stream.flush()
    thread.join()
    stream.write("\n")
    if failures:
        error = failures[0]
        raise AksharaError(f"generation failed ({type(error).__name__}: {one_line(error)})")
    return "".join(pieces).strip()


def chat(folder: str, system: str | None = None, prompt: str | None = None, max_new_tokens: int | None = None,
         temperature: float | None = None, seed: int | None = None, stdin=None, stdout=None, stderr=None,
         top_k: int | None = None, top_p: float | None = None, trust_remote_code: bool = False) -> int:
    from akshara_hf.tokenization.chat import CONTROL_MARKERS
    from akshara_hf.loading import load_model_and_tokenizer

    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):  # nan was greedy, inf random
        raise AksharaError(f"--temperature {temperature}: must be a finite number >= 0 (0 = greedy)")
    if top_k is not None and top_k < 0:
        raise AksharaError(f"--top-k {top_k}: must be >= 0 (0 = off)")
    if top_p is not None and not 0 < top_p <= 1:
        raise AksharaError(f"--top-p {top_p}: must be in (0, 1]")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise AksharaError(f"--max-new-tokens {max_new_tokens}: must be >= 1")
    if seed is not None and not 0 <= seed < 2**32:  # numpy's range, which transformers' set_seed seeds too
        raise AksharaError(f"--seed {seed}: must be between 0 and {2**32 - 1}")
    for option, text in (("--prompt", prompt), ("--system", system)):
        if text is not None and not _is_utf8(text):
            raise AksharaError(f"{option}: not UTF-8 text (the terminal or shell passed other bytes)")
    if system is not None:
        from akshara_hf.tokenization.chat import conversation_problem

        problem = conversation_problem([{"role": "system", "content": system}, {"role": "user", "content": "."}], 1)
        if problem is not None:  # else every message of the session would be refused
            raise AksharaError(f"--system: {problem}")
    model, tokenizer = load_model_and_tokenizer(folder, trust_remote_code)
    model.eval()
    # generate fills unset fields from model.generation_config, so the options replace it rather than being passed
    model.generation_config = generation_overrides(model.generation_config, max_new_tokens, temperature, top_k, top_p)
    context = getattr(model.config, "max_position_embeddings", None)
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)

    def notice(text: str) -> None:
        stderr.write(text + "\n")
        stderr.flush()

    history = [{"role": "system", "content": system}] if system else []
    interactive = prompt is None
    if interactive and stdin.isatty():
        stdout.write("Akshara chat: type a message; 'clear' starts over; Ctrl-D or Ctrl-C quits.\n")
    while True:
        try:
            if interactive:
                stdout.write("you> ")
                stdout.flush()
                line = _read_line(stdin)
                if line is None:  # EOF
                    stdout.write("\n")
                    return 0
                text = line.strip()
            else:
                text = prompt.strip()
            if not text:
                if not interactive:
                    raise AksharaError("--prompt is empty")
                continue
            if interactive and text == "clear":
                history = history[:1] if system else []
                continue
            try:
                history, ids = fit_to_context([*history, {"role": "user", "content": text}], tokenizer, context, notice)
            except AksharaError as error:  # this message cannot be sent; in a session, the next one may
                if not interactive:
                    raise
                notice(f"akshara-hf chat: error: {error}")
                continue
            stdout.write("akshara> ")
            reply = _reply(model, tokenizer, ids, stdout)
            reply = reply.replace(CONTROL_MARKERS[0], "").replace(CONTROL_MARKERS[1], "").strip()
            if reply:  # the history stays a valid conversation: no blank turn, no reserved characters
                history.append({"role": "assistant", "content": reply})
            else:
                history.pop()
            if not interactive:
                return 0
        except KeyboardInterrupt:
            stdout.write("\n")
            return 0


def register(subparsers) -> None:
    from akshara_hf.loading import add_trust_flag

    p = subparsers.add_parser("chat", help="chat with a model folder in the terminal (streams the reply)")
    p.add_argument("folder", help="model folder or Hub id (ORG/NAME)")
    p.add_argument("--system", default=None, help="system prompt (merged into the first user turn, as nanochat does)")
    p.add_argument("--prompt", default=None, help="answer this one message and exit")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the folder's generation_config")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy; default: generation_config")
    p.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens; default: generation_config")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling; default: generation_config")
    p.add_argument("--seed", type=int, default=None)
    add_trust_flag(p)
    p.set_defaults(func=lambda a: chat(a.folder, a.system, a.prompt, a.max_new_tokens, a.temperature, a.seed,
                                       top_k=a.top_k, top_p=a.top_p, trust_remote_code=a.trust_remote_code))
