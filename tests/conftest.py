import sys
from pathlib import Path

# Test helper modules (reference implementation, fixtures) import each other by bare name.
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def converted_folder(tmp_path_factory):
    """A complete HF folder (weights, tokenizer, chat template, generation config) converted from a tiny nanochat run."""
    from model_fixtures import make_nanochat_run

    from akshara_hf.conversion.convert import convert_nanochat

    _, checkpoints, _ = make_nanochat_run(tmp_path_factory.mktemp("nanochat"))
    return convert_nanochat(checkpoints, tmp_path_factory.mktemp("converted") / "akshara-tiny")


@pytest.fixture
def network_calls(monkeypatch):
    """Every attempt to reach another machine (a name lookup, a connection) in this process, recorded and refused:
    a test asserts the list is empty where a command must not touch the network at all (a mistyped folder must be
    one line at once, not Hub retries). It checks what happens, not how long it takes."""
    import socket

    calls = []

    def refuse(kind):
        def call(*args, **kwargs):
            calls.append((kind, repr(args[-1] if kind == "connect" else args[:2])))
            raise OSError(f"the network is off in this test ({kind})")
        return call

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    return calls
