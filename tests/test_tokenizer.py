"""The HF tokenizer must give tiktoken's ids (nanochat's), whether converted from a pickle or trained here."""

import json
import pickle
import random

import pytest
import tiktoken
import torch
from tiktoken._educational import bpe_train
from transformers import AutoTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

import akshara_hf.cli as cli
from akshara_hf.errors import AksharaError
from akshara_hf.tokenization.tokenizer import (
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
    encode_ordinary,
    fast_to_tiktoken,
    load_tiktoken_encoding,
    save_nanochat_tokenizer,
    tiktoken_to_fast,
    train_tokenizer,
)
from nanochat_fixtures import ENGLISH, TELUGU, corpus, make_nanochat_tokenizer_dir

VARIED = [
    "తెలుగు",
    "కార్\u200cలో థియేటర్\u200cకి",  # ZWNJ
    "క్\u200dష శ్రీ జ్ఞానం",  # ZWJ, conjuncts
    "౧ ౧౨ ౧౨౩ ౧౨౩౪ ౧౨౩౪౫",  # Telugu digits
    "1 12 123 1234 12345 3.14159",
    "I'm you're he'll we've they'd IT'S Don'T",
    "🙂 👩‍💻 🇮🇳 👍🏽 1️⃣",
    "a  b\t\tc\n\n\nd   \n  e   ",
    "line\r\nnext\r\n",
    "   ",
    "trailing spaces   ",
    "Teluguతెలుగుmixed123తెలుగు中文é",
    "say <|assistant_end|> now",
    "<|bos|><|user_start|>x<|user_end|>",
    "partial <|assistant_end and |> bits <| |>",
    "nbsp\u00a0em\u2003ideo\u3000nel\u0085zwsp\u200b",
    "",
]


def fuzz_strings(n=400, seed=0):
    pool = (list("abcXYZ '’\"-_.,!?:;()[]{}<>|/\\@#$%&*+=~0123456789\t\n\r ") + list("తెలుగుభాషకృష్ణ్ంఃాిీెేైొోౌ౦౧౨౩")
            + ["\u200c", "\u200d", "\u00a0", "\u3000", "👩‍💻", "🇮🇳", "e\u0301", "'s", "'LL", "<|", "|>", *SPECIAL_TOKENS])
    rng = random.Random(seed)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def assert_same_ids(tokenizer, encoding, texts):
    for text in texts:
        ordinary = tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        assert ordinary == encoding.encode_ordinary(text), text
        with_special = tokenizer(text)["input_ids"]  # defaults: must add nothing and parse special-token text
        assert with_special == encoding.encode(text, allowed_special="all"), text
        assert tokenizer.decode(with_special) == text
        assert tokenizer.decode(ordinary) == text


@pytest.fixture(scope="module")
def reference_encoding():
    """A tiktoken encoding trained by tiktoken's own (pure Python) BPE: independent of HF's trainer."""
    ranks = bpe_train("\n".join(TELUGU + ENGLISH), 256 + 150, SPLIT_PATTERN, visualise=None)
    specials = {token: len(ranks) + i for i, token in enumerate(SPECIAL_TOKENS)}
    return tiktoken.Encoding("reference", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials)


@pytest.fixture(scope="module")
def trained():
    return train_tokenizer(corpus(), 600)


def test_constants_are_nanochats():
    assert SPECIAL_TOKENS == ("<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
                              "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>")
    assert SPLIT_PATTERN == (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                             r"""|\s*[\r\n]|\s+(?!\S)|\s+""")


def test_converted_tokenizer_matches_tiktoken(reference_encoding):
    tokenizer = tiktoken_to_fast(reference_encoding)
    assert len(tokenizer) == reference_encoding.n_vocab
    assert_same_ids(tokenizer, reference_encoding, VARIED + list(TELUGU + ENGLISH) + fuzz_strings())
    assert tokenizer.bos_token == "<|bos|>" and tokenizer.eos_token == tokenizer.pad_token == "<|assistant_end|>"
    for token in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) == reference_encoding._special_tokens[token]
    assert "{% generation %}" in tokenizer.chat_template.replace("{%- generation -%}", "{% generation %}")


def test_encode_ordinary_equals_tiktoken_and_restores_the_backend(reference_encoding):
    tokenizer = tiktoken_to_fast(reference_encoding)
    backend = tokenizer.backend_tokenizer
    texts = VARIED + list(TELUGU[:5]) + ["<|assistant_end|> typed by a user <|bos|>", ""]
    expected = [reference_encoding.encode_ordinary(text) for text in texts]
    for flag in (False, True):  # the backend's flag is left as it was
        backend.encode_special_tokens = flag
        assert encode_ordinary(tokenizer, texts) == expected
        assert backend.encode_special_tokens is flag
    assert tokenizer("<|bos|>")["input_ids"] == [reference_encoding._special_tokens["<|bos|>"]]
    # a backend left padding/truncating by an earlier call must not pad or cut these ids
    tokenizer(texts[:2], padding=True, truncation=True, max_length=3)
    backend.enable_padding(pad_id=0, length=64)
    backend.enable_truncation(4)
    assert encode_ordinary(tokenizer, texts) == expected
    assert encode_ordinary(tokenizer, []) == []


def test_conversion_refuses_special_ids_that_do_not_follow_the_ranks(reference_encoding):
    ranks = reference_encoding._mergeable_ranks
    gap = {token: len(ranks) + 5 + i for i, token in enumerate(SPECIAL_TOKENS)}
    encoding = tiktoken.Encoding("gap", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=gap)
    with pytest.raises(AksharaError, match="special token <\\|bos\\|>"):
        tiktoken_to_fast(encoding)


def test_saved_tokenizer_reloads_with_same_behaviour(tmp_path, reference_encoding):
    tiktoken_to_fast(reference_encoding).save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert_same_ids(reloaded, reference_encoding, VARIED)
    assert reloaded("hi")["input_ids"] == reference_encoding.encode_ordinary("hi")  # no bos added
    assert reloaded.pad_token == "<|assistant_end|>" and reloaded.chat_template
    assert set(SPECIAL_TOKENS) <= set(reloaded.all_special_tokens)
    exported = fast_to_tiktoken(reloaded)
    assert exported._mergeable_ranks == reference_encoding._mergeable_ranks
    assert exported._special_tokens == reference_encoding._special_tokens


def test_fast_to_tiktoken_refuses_other_tokenizers():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    word_level = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")))
    with pytest.raises(AksharaError, match="not a split-regex byte-level BPE"):
        fast_to_tiktoken(word_level)


def test_load_tiktoken_encoding_accepts_dir_or_file(tmp_path):
    folder = make_nanochat_tokenizer_dir(tmp_path / "tok")
    by_dir, by_file = load_tiktoken_encoding(folder), load_tiktoken_encoding(folder / "tokenizer.pkl")
    assert by_dir.n_vocab == by_file.n_vocab == 300
    assert by_dir.encode_ordinary("తెలుగు") == by_file.encode_ordinary("తెలుగు")


@pytest.mark.parametrize("case", ["missing", "garbage", "not-encoding", "no-specials"])
def test_load_tiktoken_encoding_errors_name_the_file(tmp_path, case):
    path = tmp_path / "tokenizer.pkl"
    if case == "garbage":
        path.write_bytes(b"not a pickle at all")
    elif case == "not-encoding":
        path.write_bytes(pickle.dumps({"mergeable_ranks": {}}))
    elif case == "no-specials":
        ranks = {bytes([i]): i for i in range(256)}
        path.write_bytes(pickle.dumps(tiktoken.Encoding("x", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
                                                        special_tokens={"<|bos|>": 256})))
    with pytest.raises(AksharaError, match=str(path).replace("\\", "\\\\")) as error:
        load_tiktoken_encoding(tmp_path)
    assert "\n" not in str(error.value)
    if case == "no-specials":
        assert "<|user_start|>" in str(error.value)


def test_trained_tokenizer_has_nanochats_id_layout(trained):
    byte_chars = bytes_to_unicode()
    assert len(trained) == 600
    assert trained.convert_ids_to_tokens(list(range(256))) == [byte_chars[b] for b in range(256)]
    assert [trained.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(591, 600))
    encoding = fast_to_tiktoken(trained)
    assert encoding._special_tokens == {t: 591 + i for i, t in enumerate(SPECIAL_TOKENS)}
    by_rank = sorted(encoding._mergeable_ranks, key=encoding._mergeable_ranks.get)
    for rank, token in enumerate(by_rank[256:], start=256):  # merges in rank order: built from earlier tokens
        assert any(token[:k] in by_rank[:rank] and token[k:] in by_rank[:rank] for k in range(1, len(token)))
    assert any(len(t) > 1 and not _is_utf8(t) for t in by_rank)  # Telugu merges split characters


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_trained_tokenizer_matches_its_tiktoken_export(trained):
    encoding = fast_to_tiktoken(trained)
    assert_same_ids(trained, encoding, VARIED + corpus()[:20] + fuzz_strings(seed=1))
    assert len(trained.encode("తెలుగు భాష", add_special_tokens=False)) < len("తెలుగు భాష".encode())  # it merged


def test_training_refuses_impossible_vocab_sizes():
    with pytest.raises(AksharaError, match="too small"):
        train_tokenizer(["abc"], 200)
    with pytest.raises(AksharaError, match="learned 3 merges, need 10"):
        train_tokenizer(["abc abc"], 256 + 10 + 9)


def test_nanochat_format_round_trip_and_token_bytes(tmp_path, trained):
    save_nanochat_tokenizer(trained, tmp_path)
    encoding = load_tiktoken_encoding(tmp_path)
    assert encoding._mergeable_ranks == fast_to_tiktoken(trained)._mergeable_ranks
    assert encoding._pat_str == SPLIT_PATTERN and encoding.name == "rustbpe"
    token_bytes = torch.load(tmp_path / "token_bytes.pt", weights_only=True)
    assert token_bytes.dtype == torch.int32 and token_bytes.shape == (600,)
    assert token_bytes[591:].tolist() == [0] * 9
    assert token_bytes[ord("a")] == 1 and token_bytes[0x80] == 3  # a lone continuation byte decodes to U+FFFD
    quirk = 0
    for token, rank in encoding._mergeable_ranks.items():
        if _is_utf8(token):
            assert token_bytes[rank] == len(token), token
        else:  # nanochat's rule: decoded with U+FFFD (3 bytes) for the incomplete sequence
            assert token_bytes[rank] == len(token.decode("utf-8", errors="replace").encode()), token
            quirk += token_bytes[rank] != len(token)
    assert quirk > 0  # Telugu merges produce such tokens: the rule matters for bits-per-byte
    assert_same_ids(tiktoken_to_fast(encoding), encoding, VARIED)


def test_fixture_is_deterministic(tmp_path):
    first = make_nanochat_tokenizer_dir(tmp_path / "a")
    second = make_nanochat_tokenizer_dir(tmp_path / "b")
    assert (first / "tokenizer.pkl").read_bytes() == (second / "tokenizer.pkl").read_bytes()
    assert torch.equal(torch.load(first / "token_bytes.pt", weights_only=True), torch.load(second / "token_bytes.pt", weights_only=True))


# ---------------------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def run_cli(monkeypatch):
    # Only our subcommands: other command modules are written in parallel and need not import here.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("akshara_hf.tokenization.tokenizer",))
    return cli.main


def test_cli_registers_tokenizer_commands():
    assert "akshara_hf.tokenization.tokenizer" in cli.COMMAND_MODULES


def test_cli_train_tokenizer_from_txt_jsonl_parquet(tmp_path, run_cli):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = corpus()
    (tmp_path / "a.txt").write_text("\n".join(lines[:40]) + "\n\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in lines[40:80]), encoding="utf-8")
    pq.write_table(pa.table({"text": lines[80:], "id": list(range(len(lines) - 80))}), tmp_path / "c.parquet")
    out = tmp_path / "out"
    inputs = [str(tmp_path / name) for name in ("a.txt", "b.jsonl", "c.parquet")]
    assert run_cli(["train-tokenizer", *inputs, "--vocab-size", "500", "--output", str(out), "--nanochat-format"]) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    encoding = load_tiktoken_encoding(out)
    assert len(tokenizer) == encoding.n_vocab == 500
    assert_same_ids(tokenizer, encoding, VARIED)
    # Same documents, same tokenizer: the three readers yield exactly the lines given.
    assert encoding._mergeable_ranks == fast_to_tiktoken(train_tokenizer(lines, 500))._mergeable_ranks
    assert torch.load(out / "token_bytes.pt", weights_only=True).shape == (500,)


def test_cli_convert_tokenizer(tmp_path, run_cli):
    source = make_nanochat_tokenizer_dir(tmp_path / "nanochat")
    assert run_cli(["convert-tokenizer", str(source), str(tmp_path / "hf")]) == 0
    assert_same_ids(AutoTokenizer.from_pretrained(tmp_path / "hf"), load_tiktoken_encoding(source), VARIED)


@pytest.mark.parametrize("name, content, expected", [
    ("missing.txt", None, "missing.txt: no such file"),
    ("bad.jsonl", '{"text": "ok"}\n{"txt": "no"}\n', "bad.jsonl:2: not a JSON object with a 'text' field"),
    ("num.jsonl", '{"text": 5}\n', "num.jsonl:1: 'text' is int"),
    ("data.csv", "text\nabc\n", "data.csv: unsupported input"),
])
def test_cli_train_tokenizer_input_errors(tmp_path, run_cli, capsys, name, content, expected):
    if content is not None:
        (tmp_path / name).write_text(content)
    argv = ["train-tokenizer", str(tmp_path / name), "--vocab-size", "300", "--output", str(tmp_path / "o")]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_cli_train_tokenizer_parquet_without_text_column(tmp_path, run_cli, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "d.parquet")
    argv = ["train-tokenizer", str(tmp_path / "d.parquet"), "--vocab-size", "300", "--output", str(tmp_path / "o")]
    assert run_cli(argv) == 2
    assert "d.parquet: no 'text' column" in capsys.readouterr().err
