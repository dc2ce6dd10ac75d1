"""nanochat's tokenizer on the Hugging Face stack: convert it, train a new one, write it back in nanochat's format.

nanochat encodes with tiktoken (a pickled `tiktoken.Encoding`: byte-level BPE ranks, a split regex, 9 special
tokens after the ranks). The HF tokenizer built here gives the same ids: `tokenizer(text, split_special_tokens=True)`
equals `encode_ordinary(text)` and plain `tokenizer(text)` equals `encode(text, allowed_special="all")`. It adds no
special tokens by itself; bos comes from the chat rendering (`akshara_hf.tokenization.chat`), as in nanochat.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

from akshara_hf.bounds import regular_file
from akshara_hf.errors import AksharaError
from akshara_hf.folders import add_overwrite_flag, check_output, staged_output

SPECIAL_TOKENS = (
    "<|bos|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
)

# nanochat's split regex: GPT-4's, except \p{N}{1,2} (GPT-4 has {1,3}).
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

# Split patterns accepted from a tokenizer file: nanochat's is the only one it has ever written. The pattern runs in
# tiktoken's and tokenizers' backtracking regex engines on every text: a crafted one (`(a|a)*b`) backtracks
# exponentially or aborts the process (tiktoken panics on 24 x "a"), so other patterns are refused, not probed.
KNOWN_SPLIT_PATTERNS = (SPLIT_PATTERN,)
# Ids must fit int32 (`token_bytes.pt`, Arrow and torch id tensors); `tokenizers` itself overflows past 2**64.
MAX_VOCAB_SIZE = 2**31 - 1
TRAINER_BYTES_PER_TOKEN = 66  # what `tokenizers`' BPE trainer allocates per vocabulary entry before it starts

BOS, EOS, PAD = "<|bos|>", "<|assistant_end|>", "<|assistant_end|>"

# Strings that exercise the regex and the BPE merges at conversion time: a cheap guard against a converter
# change, the full comparison lives in the tests.
_PROBES = (
    "తెలుగు భాష\u200cలో 12345 పదాలు, don't stop!\n\n\t  ",
    "Hello world 🇮🇳👩‍💻 ౧౨౩ <|assistant_end|> x",
)


def encode_ordinary(tokenizer, texts: list[str]) -> list[list[int]]:
    """tiktoken's `encode_ordinary` over a batch: special-token text stays ordinary tokens, nothing is added.

    Equal to `tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]`, which always has
    the backend compute offsets; the backend's `encode_batch_fast` skips them (conversation rendering 1.2-1.4x faster
    on the shipped mixture, same ids). A slow tokenizer, or a backend left with padding or truncation on, goes through
    the transformers call, which resets those.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not texts:
        return []
    if backend is None or backend.padding is not None or backend.truncation is not None:
        return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    previous, backend.encode_special_tokens = backend.encode_special_tokens, True  # what split_special_tokens sets
    try:
        return [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=False)]
    finally:
        backend.encode_special_tokens = previous


# ---------------------------------------------------------------------------------------------------------------
# nanochat's tokenizer.pkl <-> HF


# What a pickled `tiktoken.Encoding` references: the class, rebuilt by NEWOBJ + BUILD (its `__setstate__`).
_ENCODING_GLOBALS = {("tiktoken.core", "Encoding"), ("tiktoken", "Encoding")}


class _EncodingState:
    """Stands in for `tiktoken.Encoding` while unpickling and only records the state it is given.

    tiktoken's own `__setstate__` accepts a bare name and then fetches that registered encoding (over the network
    for an uncached one), so the state is checked here and the real Encoding is built from it afterwards.
    """

    def __init__(self, *args, **kwargs):
        if args or kwargs:  # a REDUCE that calls the class with arguments: not what tiktoken pickles
            raise pickle.UnpicklingError("tiktoken.core.Encoding called with arguments")

    def __setstate__(self, state):
        self.state = state


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _TiktokenUnpickler(pickle.Unpickler):
    """Admits only `tiktoken.core.Encoding`; any other global (os.system, builtins.exec, ...) is refused before it
    is looked up, so nothing named in the file runs. Everything else in a tiktoken pickle is plain data."""

    def find_class(self, module, name):
        if (module, name) in _ENCODING_GLOBALS:
            return _EncodingState
        raise _RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _RefusedGlobal(f"persistent id {pid!r}")


def _encoding_from_state(path: Path, state):
    import tiktoken

    fields = {"name": str, "pat_str": str, "mergeable_ranks": dict, "special_tokens": dict}
    if not isinstance(state, dict) or set(state) != set(fields):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise AksharaError(
            f"{path}: tiktoken.Encoding state is not {{name, pat_str, mergeable_ranks, special_tokens}} (got {got})")
    for key, kind in fields.items():
        if not isinstance(state[key], kind):
            raise AksharaError(
                f"{path}: tiktoken.Encoding {key} is a {type(state[key]).__name__}, not a {kind.__name__}")
    check_split_pattern(state["pat_str"], f"{path}: tiktoken.Encoding pat_str")
    ranks, specials = state["mergeable_ranks"], state["special_tokens"]
    if not all(isinstance(k, bytes) and type(v) is int for k, v in ranks.items()):
        raise AksharaError(f"{path}: tiktoken.Encoding mergeable_ranks must map bytes to int")
    if not all(isinstance(k, str) and type(v) is int for k, v in specials.items()):
        raise AksharaError(f"{path}: tiktoken.Encoding special_tokens must map str to int")
    try:
        return tiktoken.Encoding(**state)
    except Exception as error:  # tiktoken's Rust core raises ValueError for a bad regex, OverflowError, ...
        raise AksharaError(f"{path}: not a valid tiktoken.Encoding ({type(error).__name__}: {error})") from None


def check_split_pattern(pattern: str, where: str) -> None:
    """Refuse a split pattern that is not nanochat's (`KNOWN_SPLIT_PATTERNS`, see there why)."""
    if pattern not in KNOWN_SPLIT_PATTERNS:
        shown = pattern if len(pattern) <= 60 else pattern[:59] + "…"
        raise AksharaError(f"{where} {shown!r} is not nanochat's split pattern; refused (a crafted pattern can make "
                           "the regex engine backtrack for hours or abort)")


def load_tiktoken_encoding(tokenizer_dir_or_pkl: str | Path):
    """nanochat's `tokenizer.pkl` (a directory holding it, or the file itself) as a `tiktoken.Encoding`.

    A pickle is code: plain `pickle.load` runs whatever callable the file names. This unpickler admits the one
    class a tiktoken pickle names and refuses every other global with an error naming the file and the global.
    """
    path = Path(tokenizer_dir_or_pkl)
    if path.is_dir():
        path = path / "tokenizer.pkl"
    if not path.exists():
        raise AksharaError(f"{path}: no such file (nanochat's tokenizer.pkl)")
    regular_file(path, "tokenizer file")  # a named pipe would block the read forever
    try:
        with path.open("rb") as f:
            loaded = _TiktokenUnpickler(f).load()
    except _RefusedGlobal as error:
        raise AksharaError(
            f"{path}: refused to unpickle {error} (a tiktoken pickle names only tiktoken.core.Encoding)") from None
    except Exception as error:  # a broken pickle can raise nearly anything (EOFError, AttributeError, ...)
        raise AksharaError(f"{path}: cannot unpickle ({type(error).__name__}: {error})") from None
    if not isinstance(loaded, _EncodingState):
        raise AksharaError(f"{path}: holds a {type(loaded).__name__}, not a tiktoken.Encoding")
    if not hasattr(loaded, "state"):
        raise AksharaError(f"{path}: tiktoken.Encoding without its state")
    encoding = _encoding_from_state(path, loaded.state)
    missing = [token for token in SPECIAL_TOKENS if token not in encoding._special_tokens]
    if missing:
        raise AksharaError(f"{path}: encoding lacks nanochat's special tokens {missing}")
    return encoding


def _converter(encoding):
    """transformers' TikTokenConverter fed the ranks in memory (it otherwise re-reads a .tiktoken file from disk)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _InMemory(TikTokenConverter):
        def load_tiktoken_bpe(self, _url):
            return encoding._mergeable_ranks

    # Sorted by id: the converter appends special tokens in the order given, after the ranks.
    specials = sorted(encoding._special_tokens, key=encoding._special_tokens.get)
    return _InMemory(vocab_file=None, pattern=encoding._pat_str, extra_special_tokens=specials)


def _converted(encoding):
    """The converter's `tokenizers` backend. transformers 5.23 reads the ranks through the converter's
    `load_tiktoken_bpe` hook (overridden above); 5.16.1 calls `tiktoken.load.load_tiktoken_bpe(vocab_file)`
    directly, so it is answered with the ranks in memory for this one call."""
    from unittest import mock

    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = _converter(encoding)
    if hasattr(TikTokenConverter, "load_tiktoken_bpe"):
        return converter.converted()
    import tiktoken.load

    with mock.patch.object(tiktoken.load, "load_tiktoken_bpe", lambda _url: encoding._mergeable_ranks):
        return converter.converted()


def tiktoken_to_fast(encoding):
    """A `PreTrainedTokenizerFast` with the encoding's ids, nanochat's special tokens and our chat template.

    The conversion is checked (special ids, vocab size, a few probe strings) rather than trusted: the converter
    assumes special tokens sit right after the ranks in order, and its merge order is derived from the ranks.
    """
    from transformers import PreTrainedTokenizerFast

    from akshara_hf.tokenization.chat import load_chat_template

    backend = _converted(encoding)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (BOS, EOS)],
        # Explicit False: the post-processor then adds nothing; nanochat adds bos only when rendering.
        add_bos_token=False,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = load_chat_template()
    _check_against_tiktoken(tokenizer, encoding)
    return tokenizer


def _check_against_tiktoken(tokenizer, encoding) -> None:
    for token, index in encoding._special_tokens.items():
        if tokenizer.convert_tokens_to_ids(token) != index:
            raise AksharaError(
                f"special token {token}: id {index} in tiktoken, {tokenizer.convert_tokens_to_ids(token)} after "
                "conversion (special ids must follow the ranks contiguously)"
            )
    if len(tokenizer) != encoding.n_vocab:
        raise AksharaError(f"converted tokenizer has {len(tokenizer)} ids, tiktoken has {encoding.n_vocab}")
    for text in _PROBES:
        ordinary = tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        if ordinary != encoding.encode_ordinary(text):
            raise AksharaError(f"converted tokenizer disagrees with tiktoken on {text!r}")


def fast_to_tiktoken(tokenizer, name: str = "rustbpe"):
    """The `tiktoken.Encoding` of a byte-level BPE tokenizer whose ids are ranks (ours: trained or converted).

    `name` defaults to what nanochat's rustbpe training writes.
    """
    import tiktoken
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    try:
        pattern = state["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
        vocab = state["model"]["vocab"]
    except (KeyError, IndexError, TypeError):
        raise AksharaError("tokenizer is not a split-regex byte-level BPE (nanochat's kind)") from None
    if not isinstance(pattern, str) or not isinstance(vocab, dict):
        raise AksharaError("tokenizer is not a split-regex byte-level BPE (nanochat's kind)")
    check_split_pattern(pattern, "pre-tokenizer split regex")
    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    try:
        ranks = {bytes(byte_of[char] for char in token): index for token, index in vocab.items()}
    except KeyError:
        raise AksharaError("tokenizer vocab is not byte-level") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise AksharaError("tokenizer vocab ids are not contiguous from 0, so they cannot be tiktoken ranks")
    specials = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    if any(index is None or index == tokenizer.unk_token_id for index in specials.values()):
        raise AksharaError(f"tokenizer lacks nanochat's special tokens {list(SPECIAL_TOKENS)}")
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)


def nanochat_token_bytes(encoding) -> list[int]:
    """nanochat's `token_bytes.pt` values: 0 for special tokens, else `len(decode([id]).encode("utf-8"))`.

    This is nanochat's rule (scripts/tok_train.py), kept for comparable bits-per-byte: tiktoken decodes a token
    that is an incomplete UTF-8 sequence to U+FFFD, so such a token counts 3 bytes whatever its real length.
    """
    special = set(encoding._special_tokens.values())
    return [0 if i in special else len(encoding.decode([i]).encode("utf-8")) for i in range(encoding.n_vocab)]


def save_nanochat_tokenizer(tokenizer_or_encoding, out_dir: str | Path) -> Path:
    """Write `tokenizer.pkl` (pickled tiktoken.Encoding) and `token_bytes.pt` (int32), as nanochat's tok_train does."""
    import tiktoken
    import torch

    encoding = tokenizer_or_encoding
    if not isinstance(encoding, tiktoken.Encoding):
        encoding = fast_to_tiktoken(tokenizer_or_encoding)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "tokenizer.pkl").open("wb") as f:
        pickle.dump(encoding, f)
    torch.save(torch.tensor(nanochat_token_bytes(encoding), dtype=torch.int32), out_dir / "token_bytes.pt")
    return out_dir


# ---------------------------------------------------------------------------------------------------------------
# Training


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a nanochat-kind tokenizer (split regex, byte-level BPE, 9 special tokens last) with `tokenizers`.

    HF's trainer orders its byte alphabet by character and may record one token under two merges, so its ids are
    not tiktoken ranks. We keep only what it learned (the order new tokens appeared), renumber as rustbpe does
    (ids 0..255 = bytes 0..255, then merges by rank, then the special tokens) and rebuild the HF tokenizer from
    those ranks with `tiktoken_to_fast`, so the HF tokenizer and `fast_to_tiktoken` of it agree by construction.
    """
    import tiktoken
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    if type(vocab_size) is not int or vocab_size > MAX_VOCAB_SIZE:
        raise AksharaError(f"vocab_size {vocab_size}: at most {MAX_VOCAB_SIZE:,} (token ids are int32)")
    n_ranks = vocab_size - len(SPECIAL_TOKENS)
    if n_ranks < 256:
        raise AksharaError(f"vocab_size {vocab_size} is too small: 256 bytes + {len(SPECIAL_TOKENS)} special tokens")
    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_ranks,
        min_frequency=0,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    bpe.train_from_iterator(texts, trainer)

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    learned = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    ranks = {bytes([b]): b for b in range(256)}
    for token, _ in learned:
        ranks.setdefault(bytes(byte_of[char] for char in token), len(ranks))
    if len(ranks) != n_ranks:
        raise AksharaError(
            f"training text too small for vocab_size {vocab_size}: learned {len(ranks) - 256} merges, "
            f"need {n_ranks - 256}"
        )
    specials = {token: n_ranks + i for i, token in enumerate(SPECIAL_TOKENS)}
    encoding = tiktoken.Encoding(name="rustbpe", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    return tiktoken_to_fast(encoding)


def iter_texts(paths: Iterable[str | Path]) -> Iterator[str]:
    """Documents from .txt (one per line, blank lines skipped), .jsonl or .parquet (a `text` column)."""
    for path in map(Path, paths):
        regular_file(path)  # a named pipe or device would block or never end
        suffix = path.suffix.lower()
        if suffix == ".txt":
            for _, line in _utf8_lines(path):
                if line.strip():
                    yield line.rstrip("\n")
        elif suffix == ".jsonl":
            yield from _iter_jsonl(path)
        elif suffix == ".parquet":
            yield from _iter_parquet(path)
        else:
            raise AksharaError(f"{path}: unsupported input (use .txt, .jsonl or .parquet)")


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 text file; a line that is not UTF-8 is an AksharaError naming it (a text-mode
    `open` raises a bare UnicodeDecodeError only when the reader reaches it, mid-training)."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError:
                raise AksharaError(f"{path}:{number}: not UTF-8 text") from None


def _iter_jsonl(path: Path) -> Iterator[str]:
    for number, line in _utf8_lines(path):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError):  # RecursionError: nested too deeply
            raise AksharaError(f"{path}:{number}: not a JSON object with a 'text' field") from None
        if not isinstance(text, str):
            raise AksharaError(f"{path}:{number}: 'text' is {type(text).__name__}, not a string")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise AksharaError(f"{path}:{number}: 'text' has an unpaired surrogate (a lone \\ud800-\\udfff escape)") from None
        yield text


def _iter_parquet(path: Path) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid/OSError for non-parquet input
        raise AksharaError(f"{path}: not a parquet file ({error})") from None
    if "text" not in parquet.schema_arrow.names:
        raise AksharaError(f"{path}: no 'text' column (columns: {parquet.schema_arrow.names})")
    kind = parquet.schema_arrow.field("text").type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise AksharaError(f"{path}: the 'text' column holds {kind}, not strings")
    try:
        for batch in parquet.iter_batches(columns=["text"]):
            yield from (text for text in batch.column(0).to_pylist() if text)
    except (pa.ArrowException, OSError) as error:  # a damaged row group, met only when read
        raise AksharaError(f"{path}: not a readable parquet file ({' '.join(str(error).split())})") from None


# ---------------------------------------------------------------------------------------------------------------
# CLI


def register(subparsers) -> None:
    p = subparsers.add_parser("train-tokenizer", help="train a nanochat-kind BPE tokenizer (HF folder)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".txt (a document per line), .jsonl or .parquet (text)")
    p.add_argument("--vocab-size", type=int, required=True, help="all ids, the 256 bytes and 9 special tokens included")
    p.add_argument("--output", required=True, help="folder for the HF tokenizer files")
    p.add_argument("--nanochat-format", action="store_true", help="also write tokenizer.pkl and token_bytes.pt there")
    add_overwrite_flag(p)
    p.set_defaults(func=_train_command)

    p = subparsers.add_parser("convert-tokenizer", help="nanochat tokenizer.pkl folder -> HF tokenizer folder")
    p.add_argument("nanochat_tokenizer_dir", metavar="NANOCHAT_TOKENIZER_DIR")
    p.add_argument("output_dir", metavar="OUTPUT_DIR")
    add_overwrite_flag(p)
    p.set_defaults(func=_convert_command)


def check_vocab_size_flag(vocab_size: int, flag: str = "--vocab-size") -> None:
    """A trainable vocabulary size, checked before any work (train-tokenizer, the demo)."""
    from akshara_hf.bounds import human_bytes, machine_memory

    if not len(SPECIAL_TOKENS) + 256 <= vocab_size <= MAX_VOCAB_SIZE:
        raise AksharaError(f"{flag} {vocab_size}: must be between {len(SPECIAL_TOKENS) + 256} (256 bytes + "
                           f"{len(SPECIAL_TOKENS)} special tokens) and {MAX_VOCAB_SIZE:,} (token ids are int32)")
    memory, estimate = machine_memory(), vocab_size * TRAINER_BYTES_PER_TOKEN
    if memory is not None and estimate > memory:  # the Rust trainer reserves it up front; failing, it aborts
        raise AksharaError(f"{flag} {vocab_size:,}: the tokenizer trainer needs at least {human_bytes(estimate)} of "
                           f"memory for it, this machine has {human_bytes(memory)}")


def _train_command(args) -> int:
    # Fail fast on a size, a missing or unsupported input, or an output we may not replace, rather than after training.
    check_vocab_size_flag(args.vocab_size)
    for path in args.inputs:
        next(iter_texts([path]), None)
    check_output(args.output, "train-tokenizer", overwrite=args.overwrite, inputs=args.inputs)
    tokenizer = train_tokenizer(iter_texts(args.inputs), args.vocab_size)
    with staged_output(args.output, "train-tokenizer", overwrite=args.overwrite, inputs=args.inputs) as staging:
        tokenizer.save_pretrained(staging.folder)
        if args.nanochat_format:
            save_nanochat_tokenizer(tokenizer, staging.folder)
    print(f"wrote a {len(tokenizer)}-id tokenizer to {args.output}")
    return 0


def _convert_command(args) -> int:
    inputs = [args.nanochat_tokenizer_dir]
    check_output(args.output_dir, "convert-tokenizer", overwrite=args.overwrite, inputs=inputs)
    tokenizer = tiktoken_to_fast(load_tiktoken_encoding(args.nanochat_tokenizer_dir))
    with staged_output(args.output_dir, "convert-tokenizer", overwrite=args.overwrite, inputs=inputs) as staging:
        tokenizer.save_pretrained(staging.folder)
    print(f"wrote a {len(tokenizer)}-id tokenizer to {args.output_dir}")
    return 0
