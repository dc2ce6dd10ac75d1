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
def no_hang():
    """no_hang(seconds): a context that fails the test (instead of hanging the suite) when its body blocks, e.g.
    opening a named pipe for reading or building millions of layers."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def guard(seconds: int = 30):
        def hung(signum, frame):
            raise TimeoutError(f"blocked for {seconds} s")

        previous = signal.signal(signal.SIGALRM, hung)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return guard


@pytest.fixture
def network_calls(monkeypatch):
    """Every attempt to reach another machine (a name lookup or a connection beyond this one), recorded and refused:
    a test asserts the list is empty where a command must not touch the network at all (a mistyped folder must be
    one line at once, not Hub retries). It checks what happens, not how long it takes. This machine's own addresses
    (a server checking its port) pass."""
    import socket

    local = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}
    calls = []
    real = {"getaddrinfo": socket.getaddrinfo, "create_connection": socket.create_connection,
            "connect": socket.socket.connect}

    def host_of(kind, args):
        if kind == "getaddrinfo":
            return args[0]
        address = args[-1] if kind == "connect" else args[0]
        return address[0] if isinstance(address, tuple) else address

    def guard(kind):
        def call(*args, **kwargs):
            host = host_of(kind, args)
            if isinstance(host, bytes):
                host = host.decode()
            if host in local:
                return real[kind](*args, **kwargs)
            calls.append((kind, host))
            raise OSError(f"the network is off in this test ({kind} {host})")
        return call

    monkeypatch.setattr(socket, "getaddrinfo", guard("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", guard("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", guard("connect"))
    return calls
