"""A pickle is code: tokenizer.pkl files that name anything but tiktoken's Encoding are refused before they run.

Each malicious file would create a marker file when unpickled with plain `pickle.load`; the tests check that it
does (so the payload is real) and that our loader, `convert-tokenizer` and `convert-nanochat` never let it.
"""

import os
import pickle
import shutil
import subprocess

import pytest
import tiktoken
from model_fixtures import make_nanochat_run
from nanochat_fixtures import make_nanochat_tokenizer_dir

from akshara_hf.cli import main as cli
from akshara_hf.conversion.convert import find_tokenizer_dir
from akshara_hf.errors import AksharaError
from akshara_hf.tokenization.tokenizer import SPLIT_PATTERN, load_tiktoken_encoding


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Exec(_System):
    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


class _Subprocess(_System):
    def __reduce__(self):
        return subprocess.call, (["touch", str(self.marker)],)


def _encoding_pickle(state) -> bytes:
    """What tiktoken writes (NEWOBJ of tiktoken.core.Encoding, then BUILD with the state), for any state: pickle
    itself refuses to write a state the Encoding would not have."""
    return b"\x80\x03ctiktoken.core\nEncoding\n)\x81" + pickle.dumps(state, protocol=3)[2:-1] + b"b."


def _inside_encoding(marker) -> bytes:
    """A real Encoding pickle whose state smuggles a call in place of the name."""
    ranks = {bytes([i]): i for i in range(256)}
    return _encoding_pickle({"name": _System(marker), "pat_str": ".", "mergeable_ranks": ranks, "special_tokens": {}})


PAYLOADS = {
    "os.system": lambda marker: pickle.dumps(_System(marker)),
    "builtins.exec": lambda marker: pickle.dumps(_Exec(marker)),
    "subprocess.call": lambda marker: pickle.dumps(_Subprocess(marker)),
    "inside": _inside_encoding,
}


def _plant(folder, payload, marker):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.pkl").write_bytes(PAYLOADS[payload](marker))
    return folder


@pytest.fixture(scope="module")
def nanochat_run(tmp_path_factory):
    return make_nanochat_run(tmp_path_factory.mktemp("nanochat"))


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_payloads_are_real(tmp_path, payload):
    """Guards the tests below: plain pickle.load of each file does run its command."""
    marker = tmp_path / "ran"
    with (_plant(tmp_path / "tok", payload, marker) / "tokenizer.pkl").open("rb") as f:
        try:
            pickle.load(f)
        except Exception:  # the smuggled-state case fails after running its payload
            pass
    assert marker.exists()


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "ran"
    folder = _plant(tmp_path / "tok", payload, marker)
    with pytest.raises(AksharaError) as error:
        load_tiktoken_encoding(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder / "tokenizer.pkl") in message and "refused" in message
    assert ("system" in message) if payload in ("os.system", "inside") else True
    assert ("exec" in message) if payload == "builtins.exec" else True
    assert ("subprocess.call" in message) if payload == "subprocess.call" else True
    assert not marker.exists()


def test_convert_tokenizer_command_refuses(tmp_path, capsys):
    marker = tmp_path / "ran"
    folder = _plant(tmp_path / "tok", "os.system", marker)
    assert cli(["convert-tokenizer", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("akshara-hf convert-tokenizer: error:") and "posix.system" in err and "\n" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec"])
def test_convert_nanochat_refuses_a_malicious_base_dir_tokenizer(nanochat_run, tmp_path, capsys, payload):
    base, checkpoints, _ = nanochat_run
    # A copy of the nanochat base dir whose tokenizer/ (where nanochat keeps it) is malicious.
    root = tmp_path / "base"
    shutil.copytree(checkpoints, root / "chatsft_checkpoints" / "d2")
    marker = tmp_path / "ran"
    _plant(root / "tokenizer", payload, marker)
    assert cli(["convert-nanochat", str(root / "chatsft_checkpoints" / "d2"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("akshara-hf convert-nanochat: error:")
    assert str(root / "tokenizer" / "tokenizer.pkl") in err[0] and "refused" in err[0]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_convert_nanochat_refuses_explicit_malicious_tokenizer_dir(nanochat_run, tmp_path, capsys):
    _, checkpoints, _ = nanochat_run
    marker = tmp_path / "ran"
    folder = _plant(tmp_path / "tok", "subprocess.call", marker)
    args = ["convert-nanochat", str(checkpoints), str(tmp_path / "out"), "--tokenizer-dir", str(folder)]
    assert cli(args) == 2
    assert "subprocess.call" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_a_pickle_planted_in_a_parent_folder_is_never_looked_at(nanochat_run, tmp_path, capsys, levels):
    """A checkpoint without a tokenizer, outside nanochat's layout: parent folders are not searched."""
    _, checkpoints, _ = nanochat_run
    checkpoint = tmp_path / "a" / "b" / "c" / "d" / "ckpt"
    shutil.copytree(checkpoints, checkpoint)
    marker = tmp_path / "ran"
    parent = checkpoint.parents[levels - 1]
    _plant(parent, "os.system", marker)
    _plant(parent / "tokenizer", "os.system", marker)
    assert cli(["convert-nanochat", str(checkpoint), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no nanochat tokenizer" in err and "--tokenizer-dir" in err and "\n" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_checkpoints_folder_not_named_like_nanochats_is_not_a_base_dir(tmp_path):
    checkpoint = tmp_path / "base" / "mine" / "d2"
    checkpoint.mkdir(parents=True)
    _plant(tmp_path / "base" / "tokenizer", "os.system", tmp_path / "ran")
    with pytest.raises(AksharaError, match="no nanochat tokenizer"):
        find_tokenizer_dir(checkpoint)


def test_tokenizer_is_found_where_nanochat_puts_it_and_the_file_is_named(nanochat_run, tmp_path, capsys):
    base, checkpoints, _ = nanochat_run
    assert find_tokenizer_dir(checkpoints) == (base / "tokenizer").resolve()
    beside = tmp_path / "beside"
    shutil.copytree(checkpoints, beside)
    shutil.copy(base / "tokenizer" / "tokenizer.pkl", beside / "tokenizer.pkl")
    assert find_tokenizer_dir(beside) == beside
    assert cli(["convert-nanochat", str(checkpoints), str(tmp_path / "out")]) == 0
    assert f"tokenizer {(base / 'tokenizer').resolve() / 'tokenizer.pkl'}" in capsys.readouterr().err


def test_string_state_is_refused_without_fetching_a_registered_encoding(tmp_path):
    """tiktoken's __setstate__ turns a bare name into `get_encoding(name)` (a download); we never call it."""
    path = tmp_path / "tokenizer.pkl"
    # Protocol 2: GLOBAL tiktoken.core Encoding, EMPTY_TUPLE, NEWOBJ, state "cl100k_base", BUILD, STOP.
    path.write_bytes(b"\x80\x02ctiktoken.core\nEncoding\n)\x81X\x0b\x00\x00\x00cl100k_baseb.")
    with pytest.raises(AksharaError, match="state is not"):
        load_tiktoken_encoding(path)


@pytest.mark.parametrize("state, match", [
    ({"name": "x", "pat_str": SPLIT_PATTERN, "mergeable_ranks": {"a": 0}, "special_tokens": {}}, "bytes to int"),
    ({"name": "x", "pat_str": SPLIT_PATTERN, "mergeable_ranks": {}, "special_tokens": {"a": "0"}}, "str to int"),
    ({"name": "x", "pat_str": SPLIT_PATTERN, "mergeable_ranks": {b"a": 2**70}, "special_tokens": {}}, "not a valid"),
    ({"name": "x", "pat_str": "(", "mergeable_ranks": {b"a": 0}, "special_tokens": {}}, "not nanochat's split"),
    ({"name": "x"}, "state is not"),
])
def test_bad_encoding_states_are_one_line_errors(tmp_path, state, match):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(_encoding_pickle(state))
    with pytest.raises(AksharaError, match=match) as error:
        load_tiktoken_encoding(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_real_tiktoken_pickle_loads_with_the_same_ids(tmp_path):
    folder = make_nanochat_tokenizer_dir(tmp_path / "tok", vocab_size=400)
    with (folder / "tokenizer.pkl").open("rb") as f:
        reference = pickle.load(f)  # our own file, written a line above: the trusted comparison
    loaded = load_tiktoken_encoding(folder)
    assert isinstance(loaded, tiktoken.Encoding)
    assert loaded.name == reference.name and loaded._pat_str == reference._pat_str
    assert loaded._mergeable_ranks == reference._mergeable_ranks
    assert loaded._special_tokens == reference._special_tokens
    for text in ["తెలుగు భాష 123 don't", "<|assistant_end|> 👩‍💻\n\n x", ""]:
        assert loaded.encode_ordinary(text) == reference.encode_ordinary(text)
        assert loaded.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
