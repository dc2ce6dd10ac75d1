"""Serving as the ecosystem does: `transformers serve` (OpenAI-compatible API) answering a real `openai` client.

transformers 5.23's `serve` loads models with `getattr(transformers, config.architectures[0])`, so it cannot load any
remote-code architecture, `--trust-remote-code` or not (measured: AttributeError 'AksharaForCausalLM'). The served
form of an Akshara folder is therefore its native export (`akshara-hf export-native`): transformers' own
NanoChatForCausalLM, same weights, fp32 rotary tables (logits within ~1e-2 of Akshara's).
"""

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from openai import OpenAI

from akshara_hf.convert import export_native


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(converted_folder, tmp_path_factory):
    native = export_native(converted_folder, tmp_path_factory.mktemp("serve") / "native")
    port = _free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(native), "--port", str(port),
               "--host", "127.0.0.1", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError("transformers serve did not start:\n" + process.stdout.read()[-3000:])
            time.sleep(0.5)
    yield OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused"), str(native)
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    assert process.poll() is not None  # the server is stopped


def test_chat_completion_plain_and_streamed(server):
    client, model = server
    messages = [{"role": "user", "content": "తెలుగు భాష గురించి చెప్పండి"}]
    plain = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
    choice = plain.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert isinstance(choice.message.content, str) and choice.message.content
    chunks = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    # greedy both times: the stream is the same text (its decoder holds back a trailing incomplete UTF-8 character)
    assert streamed and choice.message.content.startswith(streamed)
