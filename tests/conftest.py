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
