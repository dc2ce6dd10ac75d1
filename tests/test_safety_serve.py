"""Hostile requests to `akshara-hf serve` that cost the server without end before any check could refuse them: a body
that never ends, and stop strings whose precomputation grows with their length. In process, without a server: the
app is called as ASGI with a fake model, and `check_chat_request` directly."""

import asyncio
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from akshara_hf.cli.serve import MAX_BODY_BYTES, RequestError, build_app, check_chat_request, check_serving_api
from akshara_hf.errors import AksharaError

MIB = 1 << 20


def _app():
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64),
                            generation_config=SimpleNamespace(max_new_tokens=8))
    manager = SimpleNamespace(process_model_name=lambda name: name,
                              load_model_and_processor=lambda name: (model, None))
    return build_app(manager, chat_handler=None, model_id="m")


def _post(app, chunks: int, headers=()) -> tuple[int, int]:
    """POST chunks of 1 MiB (at most `chunks`, more_body all along but the last) straight to the ASGI app: (HTTP status,
    chunks the app read)."""
    read, messages = 0, []

    async def receive():
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"a" * MIB, "more_body": read < chunks}

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), *headers], "server": ("test", 80),
             "client": ("test", 1)}
    asyncio.run(asyncio.wait_for(_app()(scope, receive, send), timeout=120))
    status = next(message["status"] for message in messages if message["type"] == "http.response.start")
    return status, read


def test_a_body_that_does_not_end_is_refused_once_over_the_limit():
    """An endless chunked upload was read whole into memory before its size was looked at (300 MiB sent: the server
    grew by as much); now the read stops once the body is over the limit."""
    status, read = _post(_app(), chunks=64)
    assert status == 413
    assert read <= MAX_BODY_BYTES // MIB + 1


def test_a_declared_length_over_the_limit_is_refused_unread():
    status, read = _post(_app(), chunks=64, headers=[(b"content-length", str(64 * MIB).encode())])
    assert status == 413 and read == 0


@pytest.fixture(scope="module")
def tokenizer(converted_folder):
    return AutoTokenizer.from_pretrained(converted_folder)


def _check(tokenizer, **fields):
    body = {"messages": [{"role": "user", "content": "నమస్కారం"}], **fields}
    return check_chat_request(body, model_id="m", tokenizer=tokenizer, context=64, default_max_tokens=8)


@pytest.mark.parametrize("stop", ["ఆ" * 33, ["a", "x" * 1_000_000]], ids=["33 characters", "1M characters"])
def test_a_stop_string_too_long_to_precompute_is_refused(tokenizer, stop):
    """transformers' StopStringCriteria builds a table over the vocabulary for every character of a stop string
    (~2 us per token x character): a 1M-character stop string, well inside the 4 MiB body, would take days at a
    65,536-token vocabulary."""
    with pytest.raises(RequestError, match="stop strings are at most 32 characters each") as refused:
        _check(tokenizer, stop=stop)
    assert refused.value.param == "stop" and refused.value.status == 400


def test_stop_strings_of_the_allowed_length_pass(tokenizer):
    assert _check(tokenizer, stop=["ఆ" * 32, "\n\n"])["stop"] == ["ఆ" * 32, "\n\n"]


def test_integer_logit_biases_reach_generation_as_floats(tokenizer):
    """OpenAI's own examples give integers (`{"293": 100}`); transformers' sequence_bias takes floats only, and the
    request was a 500 from inside generation."""
    forwarded = _check(tokenizer, logit_bias={"5": 100, "7": -1.5})
    assert forwarded["logit_bias"] == {"5": 100.0, "7": -1.5}
    assert all(type(value) is float for value in forwarded["logit_bias"].values())


@pytest.mark.parametrize("version", ["5.25.0", "5.25.0.dev0", "5.26.1", "6.0.0"])
def test_a_transformers_with_other_serving_code_is_refused_in_one_line(version):
    """transformers 5.25 rewrote the ModelManager this server subclasses: start-up was a TypeError traceback."""
    with pytest.raises(AksharaError, match=rf"^transformers {version}: its serving code changed in 5\.25 .*<5\.25'$"):
        check_serving_api(version)


@pytest.mark.parametrize("version", ["5.16.1", "5.23.0", "5.24.9"])
def test_the_serving_code_it_is_written_against_passes(version):
    check_serving_api(version)


def test_serve_refuses_before_loading_anything(monkeypatch, tmp_path, capsys):
    import transformers

    from akshara_hf.cli import main

    monkeypatch.setattr(transformers, "__version__", "5.25.0")
    assert main(["serve", str(tmp_path / "no-such-folder"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("akshara-hf serve: error: transformers 5.25.0: its serving code")
