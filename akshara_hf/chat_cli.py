"""`akshara-hf chat FOLDER`: a thin in-process terminal chat, for when no server is wanted.

transformers does the rest: `generate` with the folder's `generation_config` (nanochat's temperature 0.6, top-k 50,
stop on <|assistant_end|>/<|bos|>) and `TextIteratorStreamer` for streaming. The prompt is rendered with nanochat's
layout (`render_for_generation`), so text a user types that looks like a control token stays text.
For an OpenAI-compatible server use `akshara-hf serve FOLDER` instead (see the README).
"""

import sys
from threading import Thread


def _reply(model, tokenizer, messages: list[dict], max_new_tokens: int | None, stream) -> str:
    import torch
    from transformers import TextIteratorStreamer

    from .chat import render_for_generation

    input_ids = torch.tensor([render_for_generation(messages, tokenizer)], device=model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "streamer": streamer}
    if max_new_tokens is not None:
        kwargs["max_new_tokens"] = max_new_tokens
    thread = Thread(target=model.generate, kwargs=kwargs, daemon=True)
    thread.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        stream.write(piece)
        stream.flush()
    thread.join()
    stream.write("\n")
    return "".join(pieces).strip()


def chat(folder: str, system: str | None = None, prompt: str | None = None, max_new_tokens: int | None = None,
         temperature: float | None = None, seed: int | None = None, stdin=None, stdout=None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    if temperature is not None:
        model.generation_config.temperature = temperature
        model.generation_config.do_sample = temperature > 0
    if seed is not None:
        set_seed(seed)
    history = [{"role": "system", "content": system}] if system else []
    interactive = prompt is None
    if interactive and stdin.isatty():
        stdout.write("Akshara chat: type a message; 'clear' starts over; Ctrl-D or Ctrl-C quits.\n")
    while True:
        try:
            if interactive:
                stdout.write("you> ")
                stdout.flush()
                line = stdin.readline()
                if not line:  # EOF
                    stdout.write("\n")
                    return 0
                text = line.strip()
            else:
                text = prompt.strip()
            if not text:
                continue
            if interactive and text == "clear":
                history = history[:1] if system else []
                continue
            history.append({"role": "user", "content": text})
            stdout.write("akshara> ")
            history.append({"role": "assistant", "content": _reply(model, tokenizer, history, max_new_tokens, stdout)})
            if not interactive:
                return 0
        except KeyboardInterrupt:
            stdout.write("\n")
            return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="chat with a model folder in the terminal (streams the reply)")
    p.add_argument("folder")
    p.add_argument("--system", default=None, help="system prompt (merged into the first user turn, as nanochat does)")
    p.add_argument("--prompt", default=None, help="answer this one message and exit")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the folder's generation_config")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy; default: generation_config")
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=lambda a: chat(a.folder, a.system, a.prompt, a.max_new_tokens, a.temperature, a.seed))
