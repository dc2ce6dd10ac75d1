"""Serving as the ecosystem does: transformers' OpenAI-compatible server answering a real `openai` client.

`akshara-hf serve FOLDER` serves the Akshara model itself (transformers' server plus one shim over the
`getattr(transformers, architectures[0])` that cannot resolve a remote-code class); its greedy replies must equal
`pipeline("text-generation")`'s, streamed and not. `transformers serve` on the native export
(`akshara-hf export-native`) remains for users who want transformers' own NanoChat class.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from openai import BadRequestError, OpenAI
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

from akshara_hf.tokenization.chat import render_conversation
from akshara_hf.cli import main
from akshara_hf.conversion.convert import export_native

QUESTION = [{"role": "user", "content": "మీరు ఎవరు?"}]
REPLY = "నమస్కారం! నేను అక్షర."
OTHER = [{"role": "system", "content": "క్లుప్తంగా"}, {"role": "user", "content": "తెలుగు భాష గురించి చెప్పండి"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _server(command: list[str], port: int, model: str):
    """Start a server process, wait (bounded) for /health, yield an OpenAI client; stop it at the end."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600  # a hang guard, generous for a loaded machine
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    process.kill()
                    raise RuntimeError("server did not start:\n" + process.stdout.read()[-3000:])
                time.sleep(0.5)
        yield OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=120, max_retries=0), model
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
    assert process.poll() is not None  # the server is stopped


@pytest.fixture(scope="module")
def fitted_folder(converted_folder, tmp_path_factory):
    """The converted tiny model fitted to answer QUESTION with REPLY and <|assistant_end|>, so a greedy reply ends
    by itself (finish_reason "stop") on whole characters: the streamed text can then equal the full one exactly."""
    folder = tmp_path_factory.mktemp("serve") / "fitted"
    shutil.copytree(converted_folder, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids, mask = render_conversation(QUESTION + [{"role": "assistant", "content": REPLY}], tokenizer)
    input_ids = torch.tensor([ids])
    labels = input_ids.masked_fill(torch.tensor([mask]) == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        model(input_ids=input_ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def akshara_server(fitted_folder):
    port = _free_port()
    command = [sys.executable, "-m", "akshara_hf.cli", "serve", str(fitted_folder), "--port", str(port),
               "--device", "cpu"]
    with _server(command, port, str(fitted_folder)) as served:
        yield served


def _pipeline_reply(folder, messages, max_new_tokens) -> str:
    chat = pipeline("text-generation", model=str(folder), trust_remote_code=True)
    out = chat(messages, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0]["generated_text"][-1]["content"]


def _streamed(client, model, messages, max_tokens) -> tuple[str, str]:
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                 temperature=0, stream=True))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    return text, chunks[-1].choices[0].finish_reason


def test_served_reply_equals_pipeline_and_stops_at_assistant_end(akshara_server, fitted_folder):
    client, model = akshara_server
    expected = _pipeline_reply(fitted_folder, QUESTION, 40)
    assert expected == REPLY  # the fitted model answers and stops at <|assistant_end|> (well before 40 tokens)
    plain = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=40, temperature=0)
    assert plain.choices[0].message.content == expected
    assert plain.choices[0].finish_reason == "stop" and plain.usage.completion_tokens < 40
    assert _streamed(client, model, QUESTION, 40) == (expected, "stop")


def test_served_greedy_equals_pipeline_on_unfitted_prompt(akshara_server, fitted_folder):
    """A prompt the model was not fitted on (system turn merged into the user's, as the template does)."""
    client, model = akshara_server
    expected = _pipeline_reply(fitted_folder, OTHER, 12)
    plain = client.chat.completions.create(model=model, messages=OTHER, max_tokens=12, temperature=0)
    assert plain.choices[0].message.content == expected
    streamed, _ = _streamed(client, model, OTHER, 12)
    # the stream's decoder holds back a trailing incomplete UTF-8 character; everything before it is identical
    assert streamed and expected.startswith(streamed.rstrip("\ufffd"))


def test_serve_refuses_a_pinned_servers_other_model(akshara_server):
    client, _ = akshara_server
    with pytest.raises(BadRequestError):  # 400: the server is pinned to the folder
        client.chat.completions.create(model="someone/else", messages=QUESTION, max_tokens=2)


def test_serve_bad_folders_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["serve", str(tmp_path)]) == 2
    assert "config.json: missing" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("[1, 2]")
    assert main(["serve", str(tmp_path)]) == 2
    assert "config.json: not a JSON object" in capsys.readouterr().err
    for bad in ({}, {"architectures": []}, {"architectures": [7]}):
        (tmp_path / "config.json").write_text(json.dumps(bad))
        assert main(["serve", str(tmp_path)]) == 2
        assert "field 'architectures'" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["EvilForCausalLM"], "model_type": "evil"}))
    assert main(["serve", str(tmp_path)]) == 2
    assert "cannot load the config" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MyT5Thing"], "model_type": "t5"}))
    assert main(["serve", str(tmp_path)]) == 2
    assert "'MyT5Thing' is not a causal LM this installation can load" in capsys.readouterr().err
    assert main(["serve", "not a repo!!"]) == 2
    assert "not a repo!!: no such folder" in capsys.readouterr().err  # refused before any Hub request


def test_native_export_serves_with_plain_transformers_serve(converted_folder, tmp_path):
    """`export-native` + `transformers serve`: transformers' own NanoChat class, no shim."""
    native = export_native(converted_folder, tmp_path / "native")
    port = _free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(native), "--port", str(port),
               "--host", "127.0.0.1", "--device", "cpu"]
    with _server(command, port, str(native)) as (client, model):
        messages = [{"role": "user", "content": "తెలుగు భాష గురించి చెప్పండి"}]
        plain = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
        choice = plain.choices[0]
        assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
        assert isinstance(choice.message.content, str) and choice.message.content
        streamed, _ = _streamed(client, model, messages, 8)
        assert streamed and choice.message.content.startswith(streamed.rstrip("\ufffd"))


def test_shim_resolves_the_akshara_class_and_leaves_native_names(converted_folder, tmp_path):
    import transformers

    from akshara_hf import AksharaForCausalLM
    from akshara_hf.cli.serve import expose_architecture

    assert not hasattr(transformers, "AksharaForCausalLM") or transformers.AksharaForCausalLM is AutoModelForCausalLM
    try:
        assert expose_architecture(str(converted_folder)) == "AksharaForCausalLM"
        # the server's own line, `getattr(transformers, config.architectures[0]).from_pretrained(...)`:
        model = getattr(transformers, "AksharaForCausalLM").from_pretrained(converted_folder)
        assert type(model) is AksharaForCausalLM
        # --trust-remote-code loads as the pipeline does with trust_remote_code=True (this package's class, registered)
        assert expose_architecture(str(converted_folder), trust_remote_code=True) == "AksharaForCausalLM"
        remote = getattr(transformers, "AksharaForCausalLM").from_pretrained(converted_folder, trust_remote_code=True)
        assert type(remote) is AksharaForCausalLM
    finally:
        transformers.__dict__.pop("AksharaForCausalLM", None)
    native = export_native(converted_folder, tmp_path / "native")
    assert expose_architecture(str(native)) == "NanoChatForCausalLM"
    assert transformers.NanoChatForCausalLM.__module__.startswith("transformers.models.nanochat")
