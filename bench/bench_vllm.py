"""Chat serving throughput: vLLM (its CPU build, in its own environment) against `akshara-hf serve` (transformers'
server), the same folder on the same machine, 1, 8 and 32 concurrent chat requests. Prints requests/s and generated
tokens/s for each server and vLLM's ratio to `akshara-hf serve`, measured in one run.

    python bench/bench_vllm.py [--folder FOLDER] [--vllm-python .venv-vllm/bin/python] [--concurrency 1 8 32]

Without --folder it writes a random late-2025 model of the "cpu" shape (bench/common.py) with a tokenizer trained on
the shipped samples. vLLM runs from the environment `scripts/test_vllm.sh` builds (`--vllm-python`), started with
README's command; `akshara-hf serve` from this one. The servers run one at a time, each warmed up by one request.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import SHAPES, print_table

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["తెలుగు భాష గురించి చెప్పండి", "ఒక చిన్న కథ చెప్పండి", "వర్షం ఎందుకు పడుతుంది?", "హైదరాబాద్ గురించి చెప్పండి"]


def make_folder(out: Path) -> Path:
    """A random late-2025 Akshara of the "cpu" shape, vocab from a tokenizer trained on the shipped samples."""
    import torch

    from akshara_hf import AksharaConfig, AksharaForCausalLM
    from akshara_hf.conversion.convert import save_with_tokenizer
    from akshara_hf.tokenization.tokenizer import train_tokenizer

    texts = [line for path in sorted((ROOT / "data" / "samples").glob("*/*.jsonl")) for line in path.open()]
    tokenizer = train_tokenizer(texts, vocab_size=1024)
    shape = {**SHAPES["cpu"], "vocab_size": len(tokenizer)}
    torch.manual_seed(0)
    model = AksharaForCausalLM(AksharaConfig.from_nanochat(shape, initializer_range=0.02))  # not a zero head
    save_with_tokenizer(model, tokenizer, out)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int, env: dict, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 900
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):  # both servers have it
                return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                sys.exit(f"bench_vllm.py: error: server did not start ({' '.join(command[:4])} ...):\n"
                         + log.read_text()[-2000:])  # fmt: skip
            time.sleep(1)


def measure(port: int, model: str, concurrency: int, requests: int, new_tokens: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=900, max_retries=0)

    def one(i: int) -> int:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            max_tokens=new_tokens, temperature=0,
        )  # fmt: skip
        return reply.usage.completion_tokens

    one(0)  # warm-up
    start_time = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, range(requests)))
    seconds = time.perf_counter() - start_time
    return {"requests/s": requests / seconds, "tokens/s": tokens / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", help="an Akshara late-2025 folder (default: a random one of the cpu shape)")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2, help="requests per concurrency level = rounds x concurrency")
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args()
    if not Path(args.vllm_python).is_file():
        sys.exit(f"bench_vllm.py: error: {args.vllm_python}: no vLLM environment (bash scripts/test_vllm.sh builds it)")
    scratch = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    folder = Path(args.folder) if args.folder else make_folder(scratch / "model")
    model = str(folder)

    servers = {
        # README's "Serve with vLLM" command
        "vllm": [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--trust-remote-code",
                 "--dtype", "float32", "--chat-template-content-format", "string"],  # fmt: skip
        "akshara-hf serve": [sys.executable, "-m", "akshara_hf.cli", "serve", model],
    }
    results = {}
    for name, command in servers.items():
        port = free_port()
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "4", "HF_HUB_OFFLINE": "1", "HF_HOME": str(scratch / "hf")}
        process = start([*command, "--port", str(port)], port, env, scratch / f"{name.split()[0]}.log")
        try:
            results[name] = {c: measure(port, model, c, args.rounds * c, args.new_tokens) for c in args.concurrency}
        finally:
            process.terminate()
            process.wait(timeout=60)

    rows = []
    for c in args.concurrency:
        ours, theirs = results["vllm"][c], results["akshara-hf serve"][c]
        rows.append({"concurrent": c, **{f"vllm {k}": v for k, v in ours.items()},
                     **{f"akshara-hf serve {k}": v for k, v in theirs.items()},
                     "ratio requests/s": ours["requests/s"] / theirs["requests/s"],
                     "ratio tokens/s": ours["tokens/s"] / theirs["tokens/s"]})  # fmt: skip
    env = {"folder": model, "new_tokens": args.new_tokens, "rounds": args.rounds, "load_average": os.getloadavg()[0]}
    print_table("vLLM vs akshara-hf serve (chat, greedy)", env, rows, list(rows[0]))
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
