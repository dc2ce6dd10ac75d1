"""One converter per Akshara source kind, turning the real public formats into conversations.

Every kind produces a `datasets.Dataset` with `messages` (list of `{role, content}`) and `source` (the
kind), written through `Dataset.from_generator` into memory-mapped Arrow, so a 1M-row source never sits
in Python lists. Inputs: a local `.jsonl`, `.json` or `.parquet` file, a `save_to_disk` folder, or a
Hub dataset id (`load_dataset`). Row numbers in messages are 1-based: the line number for JSON Lines,
the position in the array / file / split otherwise.

Prompted kinds (tesum, xlsum, paraphrase) draw one prompt per input row, in input order, from
`random.Random(seed)`. Bad rows draw too, so skipping a row never changes another row's prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import datasets
from datasets import Dataset, DatasetDict, Features, List, Value

from akshara_hf.tokenization.chat import conversation_problem
from akshara_hf.bounds import regular_file, regular_tree
from akshara_hf.errors import AksharaError
from akshara_hf.data.prompts import PARAPHRASE_PROMPTS, SUMMARY_PROMPTS

MESSAGES_FEATURE = List({"role": Value("string"), "content": Value("string")})
FEATURES = Features({"messages": MESSAGES_FEATURE, "source": Value("string")})
# Generated rows also carry their input row number and problem, so skip mode can count drops by reason
# after the fact instead of through a side channel that a cache hit would bypass.
_ROW_FEATURES = Features({**FEATURES, "_row": Value("int64"), "_problem": Value("string")})
_FORMAT_VERSION = 1  # part of the cache fingerprint: bump when conversion output changes
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
_BATCH = 1024


class BadRow(Exception):
    """A row a converter cannot use; `reason` is worded without the row number, for counting."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- converters: one small function per kind, record (+ drawn prompt) -> messages -------------------


def _field(record: Any, *names: str) -> Any:
    if not isinstance(record, dict):
        raise BadRow(f"expected an object with {' or '.join(map(repr, names))}, got {type(record).__name__}")
    for name in names:
        if record.get(name) is not None:
            return record[name]
    raise BadRow(f"missing field {' or '.join(map(repr, names))}")


def _text(record: Any, *names: str) -> str:
    value = _field(record, *names)
    if not isinstance(value, str):
        raise BadRow(f"field {names[0]!r} is a {type(value).__name__}, not a string")
    if not value.strip():
        raise BadRow(f"field {names[0]!r} is empty")
    return value


def _sentences(record: Any, name: str) -> str:
    value = _field(record, name)
    # A plain string here would otherwise be "joined" character by character.
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BadRow(f"field {name!r} must be a list of sentence strings")
    text = " ".join(s.strip() for s in value if s.strip())
    if not text:
        raise BadRow(f"field {name!r} is empty")
    return text


def messages_as_is(record: Any, prompt: str | None) -> Any:
    """smoltalk, stories: the record's own `messages` (validated by the caller)."""
    return _field(record, "messages")


def identity_messages(record: Any, prompt: str | None) -> Any:
    """nanochat CustomJSON: a bare list of messages per line, or a `{"messages": [...]}` record."""
    return record if isinstance(record, list) else _field(record, "messages")


def news_messages(record: Any, prompt: str | None) -> list[dict]:
    """Already phrased (title→article, article→title): no prompt added."""
    return [{"role": "user", "content": _text(record, "inputs")},
            {"role": "assistant", "content": _text(record, "targets")}]


def tesum_messages(record: Any, prompt: str | None) -> list[dict]:
    return [{"role": "user", "content": f"{prompt}:\n\n{_sentences(record, 'cleaned_text')}"},
            {"role": "assistant", "content": _sentences(record, "summary")}]


def xlsum_messages(record: Any, prompt: str | None) -> list[dict]:
    return [{"role": "user", "content": f"{prompt}:\n\n{_text(record, 'text')}"},
            {"role": "assistant", "content": _text(record, "summary")}]


def paraphrase_messages(record: Any, prompt: str | None) -> list[dict]:
    return [{"role": "user", "content": f"{prompt}:\n\n{_text(record, 'input', 'inputs')}"},
            {"role": "assistant", "content": _text(record, "target", "targets")}]


@dataclass(frozen=True)
class SourceKind:
    name: str
    to_messages: Callable[[Any, str | None], Any]
    prompts: tuple[str, ...] = ()


KINDS: dict[str, SourceKind] = {kind.name: kind for kind in (
    SourceKind("smoltalk", messages_as_is),
    SourceKind("identity", identity_messages),
    SourceKind("news", news_messages),
    SourceKind("tesum", tesum_messages, SUMMARY_PROMPTS),
    SourceKind("xlsum", xlsum_messages, SUMMARY_PROMPTS),
    SourceKind("paraphrase", paraphrase_messages, PARAPHRASE_PROMPTS),
    SourceKind("stories", messages_as_is),
)}


# --- inputs: where rows come from -----------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def is_hub_id(path: str) -> bool:
    """Shaped like a Hub dataset id (`owner/name`, no data-file suffix); callers check local paths first."""
    return bool(_HUB_ID.fullmatch(path)) and not path.endswith(_FILE_SUFFIXES)


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    # By hand, not load_dataset("json"): pyarrow's JSON reader rejects the whole file at the first bad
    # line or type change between rows, reports offsets inside a block rather than line numbers, and
    # cannot read nanochat's bare-list lines. Line by line we name the line and can skip just that row.
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").lstrip("\ufeff").strip()
            except UnicodeDecodeError:
                yield number, BadRow("line is not valid UTF-8")
                continue
            if not line:
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, BadRow(f"invalid JSON ({error.msg})")
            except RecursionError:  # the stdlib parser recurses once per nesting level
                yield number, BadRow("JSON nested too deeply")


def _read_json(path: Path) -> Iterator[tuple[int, Any]]:
    # A JSON array is parsed whole (the stdlib has no streaming parser); it suits small files such as
    # identity. Big sources should be JSON Lines, which `.json` files may also hold.
    try:
        with open(path, encoding="utf-8-sig") as handle:
            document = json.load(handle)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":
            yield from _read_jsonl(path)
            return
        raise AksharaError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    except UnicodeDecodeError:
        raise AksharaError(f"{path}: not valid UTF-8") from None
    except RecursionError:  # the stdlib parser recurses once per nesting level
        raise AksharaError(f"{path}: JSON nested too deeply (use JSON Lines to have the row named)") from None
    if not isinstance(document, list):
        raise AksharaError(f"{path}: expected a JSON array of records (or JSON Lines), got a {type(document).__name__}")
    yield from enumerate(document, start=1)


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    number = 0
    for batch in _open_parquet(path).iter_batches(batch_size=_BATCH):
        for record in batch.to_pylist():
            number += 1
            yield number, record


def _open_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a file that is not parquet
        raise AksharaError(f"{path}: not a readable parquet file ({_one_line(error)})") from None


def _read_dataset(dataset: Dataset) -> Iterator[tuple[int, Any]]:
    number = 0
    for table in dataset.with_format("arrow").iter(batch_size=_BATCH):
        for record in table.to_pylist():
            number += 1
            yield number, record


def open_datasets(path: str, config: str | None = None, revision: str | None = None) -> Dataset | DatasetDict | None:
    """The `save_to_disk` folder or Hub dataset behind `path`; None for a local file."""
    local = Path(path)
    if local.exists() and (config or revision):
        raise AksharaError(f"{path}: `config` and `revision` apply to Hub ids, not to local files or folders")
    if local.is_dir():
        regular_tree(local, depth=3)  # datasets opens every file it lists: a named pipe there would block forever
        try:
            return datasets.load_from_disk(str(local))
        except Exception as error:
            raise AksharaError(f"{path}: not a datasets save_to_disk folder ({_one_line(error)})") from None
    if local.exists():
        return None
    if not is_hub_id(path):
        raise AksharaError(f"{path}: no such file or folder")
    try:
        return datasets.load_dataset(path, config, revision=revision)
    except Exception as error:  # network, auth, unknown id or config: all one message for the user
        raise AksharaError(
            f"{path}: not a local file or folder ({local.resolve()} does not exist) "
            f"and loading it from the Hugging Face Hub failed: {_one_line(error)}") from None


def available_splits(path: str, config: str | None = None, revision: str | None = None) -> list[str] | None:
    """Split names of a DatasetDict folder or Hub dataset; None where the input has no splits."""
    opened = open_datasets(path, config, revision)
    return list(opened) if isinstance(opened, DatasetDict) else None


def _stat(path: Path) -> list:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]


@dataclass(frozen=True)
class _Input:
    where: str  # how messages name it
    rows: Callable[[], Iterator[tuple[int, Any]]]
    identity: Any  # what the cache fingerprint hashes


def _open_input(path: str, split: str | None, config: str | None, revision: str | None) -> _Input:
    opened = open_datasets(path, config, revision)
    if opened is None:
        local = regular_file(path, "data file")  # a named pipe or device would block the read forever
        if split is not None:
            raise AksharaError(f"{path}: `split` applies to folders and Hub ids, not to a single file")
        suffix = local.suffix.lower()
        if suffix == ".jsonl":
            return _Input(path, lambda: _read_jsonl(local), _stat(local))
        if suffix == ".json":
            return _Input(path, lambda: _read_json(local), _stat(local))
        if suffix == ".parquet":
            _open_parquet(local)  # fail here, with the file named, rather than inside the generator
            return _Input(path, lambda: _read_parquet(local), _stat(local))
        raise AksharaError(f"{path}: unsupported file type {suffix or '(none)'!r} (use .jsonl, .json or .parquet)")
    if isinstance(opened, DatasetDict):
        split = split or "train"
        if split not in opened:
            raise AksharaError(f"{path}: no split {split!r} (has {', '.join(opened)})")
        dataset = opened[split]
    else:
        if split is not None:
            raise AksharaError(f"{path}: holds a single Dataset, so `split: {split}` does not apply")
        dataset = opened
    where = f"{path} [{'/'.join(x for x in (config, split) if x)}]" if (config or split) else path
    return _Input(where, lambda: _read_dataset(dataset), [revision, dataset._fingerprint])


# --- conversion -----------------------------------------------------------------------------------


@dataclass
class Dropped:
    count: int = 0
    rows: list[int] = field(default_factory=list)  # the first few, for the report


@dataclass
class Converted:
    dataset: Dataset  # columns: messages, source
    dropped: dict[str, Dropped]  # by reason; empty unless on_bad_row="skip"

    @property
    def dropped_count(self) -> int:
        return sum(d.count for d in self.dropped.values())


def _generate(kind: str, source: _Input, seed: int, limit: int | None, on_bad_row: str):
    spec = KINDS[kind]
    rng = random.Random(seed)
    kept = number = 0
    for number, record in source.rows():
        prompt = spec.prompts[rng.randrange(len(spec.prompts))] if spec.prompts else None
        try:
            if isinstance(record, BadRow):
                raise record
            messages = spec.to_messages(record, prompt)
            problem = conversation_problem(messages, allow_parts=False) or _unencodable(messages)
        except BadRow as bad:
            problem = bad.reason
        if problem is None:
            yield {"messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                   "source": kind, "_row": number, "_problem": None}
            kept += 1
            if limit is not None and kept >= limit:
                return
        elif on_bad_row == "error":
            raise AksharaError(f"{source.where}, row {number}: {problem}")
        else:
            yield {"messages": [], "source": kind, "_row": number, "_problem": problem}
    if number == 0:  # also spares datasets' own "corresponds to no data" error for an empty split
        raise AksharaError(f"{source.where}: has no rows")


def _unencodable(messages: list[dict]) -> str | None:
    """JSON's `\\ud800` escapes decode to lone surrogates, which no UTF-8 writer (Arrow, tokenizers) accepts."""
    for index, message in enumerate(messages, start=1):
        try:
            if isinstance(message["content"], str):
                message["content"].encode("utf-8")
        except UnicodeEncodeError as error:
            return f"message {index} content has an unpaired surrogate (a lone \\ud800-\\udfff escape)"
    return None


def convert_source(kind: str, path: str | os.PathLike, *, split: str | None = None, config: str | None = None,
                   revision: str | None = None, seed: int = 0, limit: int | None = None, on_bad_row: str = "error",
                   cache_dir: str | os.PathLike | None = None) -> Converted:
    """Convert one input of `kind` into conversations: the first `limit` valid rows in input order.

    on_bad_row="error" raises AksharaError naming the input, row and problem at the first bad row;
    "skip" drops bad rows and counts them by reason in `Converted.dropped`.
    """
    if kind not in KINDS:
        raise AksharaError(f"unknown source kind {kind!r} (known: {', '.join(KINDS)})")
    if on_bad_row not in ("error", "skip"):
        raise AksharaError(f"on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    source = _open_input(os.fspath(path), split, config, revision)
    # Our own fingerprint (input contents by size/mtime or Arrow fingerprint, plus every option), so a
    # cache hit can never serve rows of an edited file.
    fingerprint = hashlib.sha256(json.dumps(
        [_FORMAT_VERSION, kind, source.where, source.identity, seed, limit, on_bad_row], default=str,
    ).encode()).hexdigest()[:32]
    try:
        generated = Dataset.from_generator(
            _generate, features=_ROW_FEATURES, cache_dir=None if cache_dir is None else str(cache_dir),
            fingerprint=fingerprint,
            gen_kwargs={"kind": kind, "source": source, "seed": seed, "limit": limit, "on_bad_row": on_bad_row})
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, AksharaError):
            raise error.__cause__ from None
        raise AksharaError(f"{source.where}: could not convert ({_one_line(error.__cause__ or error)})") from None
    return Converted(*_split_off_problems(generated))


def _split_off_problems(generated: Dataset) -> tuple[Dataset, dict[str, Dropped]]:
    import pyarrow.compute as pc

    table = generated.data.table.select(["_row", "_problem"])
    bad = table.filter(pc.is_valid(table["_problem"]))
    dropped: dict[str, Dropped] = {}
    for number, problem in zip(bad["_row"].to_pylist(), bad["_problem"].to_pylist()):
        entry = dropped.setdefault(problem, Dropped())
        entry.count += 1
        if len(entry.rows) < 5:
            entry.rows.append(number)
    if dropped:
        generated = generated.filter(lambda problems: [p is None for p in problems],
                                     input_columns="_problem", batched=True)
    return generated.remove_columns(["_row", "_problem"]), dropped
