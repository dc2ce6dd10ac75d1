"""Build a run's training mixture from the `data:` section of its recipe (`training/recipes/*.yaml`).

The mixture is written as a `save_to_disk` DatasetDict (`train`, `validation`; columns `messages`,
`source`) plus `report.json`/`report.md`. Everything stays in memory-mapped Arrow: sources are converted
into a build-private cache, then concatenated, shuffled (an index permutation) and written once.

Validation rows of a source come from, in order: its `validation_path`; its `validation_split` (or the
`validation` split a DatasetDict folder or Hub dataset has), used whole; else ceil(rows × validation_fraction)
rows held out of its train rows after `limit`. `repeat` copies train rows only.

Determinism: every random choice is seeded by `derive_seed(data.seed, purpose, source index)`, so the
same recipe over the same files rebuilds the same rows in the same order. Safety: the output is written through
`akshara_hf.folders.staged_output` (staged beside OUTPUT_DIR, moved into place when complete, never replacing a
folder this command did not write); a recipe that reads one input twice (the same file by inode, or a folder and
something inside it) is refused, and conversations are deduplicated by content across the whole mixture before
validation rows are held out (`conversation_key`): no validation conversation is ever in train, whatever the file
names. `repeat` copies the train rows after that.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from akshara_hf.bounds import regular_file, regular_tree
from akshara_hf.errors import AksharaError
from akshara_hf.folders import add_overwrite_flag, check_output, staged_output
from akshara_hf.loading import add_trust_flag
from akshara_hf.progress import progress

DATA_KEYS = ("seed", "on_bad_row", "validation_fraction", "sources")
SOURCE_KEYS = ("kind", "path", "split", "config", "revision", "validation_path", "validation_split", "limit",
               "repeat")
COMMAND = "build-mixture"
# `repeat` copies a source's train rows (one Arrow table per copy, concatenated): a weight, not a way to multiply data
# without end (`repeat: 1000000000` built a billion-entry list before any row was read). nanochat repeats twice.
MAX_REPEAT = 1000


@dataclass(frozen=True)
class SourceSpec:
    """One entry of `data.sources` (the recipe keys), with its paths resolved (`location`, `validation_location`)."""

    index: int
    kind: str
    path: str  # as written in the recipe
    location: str  # absolute local path, or the Hub id
    split: str | None = None
    config: str | None = None  # Hub config, e.g. "telugu" for csebuetnlp/xlsum
    revision: str | None = None  # Hub revision, e.g. "refs/convert/parquet" for script-only datasets
    validation_location: str | None = None
    validation_split: str | None = None
    limit: int | None = None  # first N valid rows, before the validation hold-out
    repeat: int = 1  # copies in train (validation rows are never repeated)
    validation_path: str | None = None  # as written in the recipe

    @property
    def is_hub(self) -> bool:
        """Loaded from the Hugging Face Hub (not a local file or folder)."""
        return not os.path.isabs(self.location)


@dataclass(frozen=True)
class DataSection:
    """A recipe's `data:` section, typed and checked, as TRL's `DatasetMixtureConfig` types its `datasets:`.

    `recipe` names where the section came from (the recipe file, or `--data` for the command line): error messages
    start with it, and relative paths resolve against its folder (the current folder for `--data`).
    """

    recipe: Path | str
    seed: int
    on_bad_row: str
    validation_fraction: float
    sources: tuple[SourceSpec, ...]

    @classmethod
    def from_mapping(cls, data: Any, origin: Path | str, base: Path | None = None) -> "DataSection":
        """Check `data` (the parsed YAML/JSON of a data section) strictly; `base`: folder for relative paths."""
        return parse_data_section(data, origin, base)

    @classmethod
    def from_text(cls, text: str, origin: str = "--data", base: Path | None = None) -> "DataSection":
        """A data section given as YAML or JSON text (the command line's `--data '{sources: [...]}'`)."""
        try:
            data = load_yaml(text)
        except yaml.YAMLError as error:
            raise AksharaError(f"{origin}: not valid YAML or JSON{yaml_where(error)}") from None
        return parse_data_section(data, origin, base)


# --- recipe ---------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: `safe_load` keeps the last silently, so a
    `max_steps: 1000000` added at the end of a recipe replaced the `max_steps: 1` above it without a word."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden here
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the safe loader reports it itself
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"{key!r} given twice (first on line {first.line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


MAX_YAML_VALUES = 1_000_000  # a recipe holds hundreds; aliases of aliases reach billions from a few lines


def load_yaml(text: str):
    """YAML (or JSON) text as Python data, safely (no tags that build objects), with unique keys and at most
    `MAX_YAML_VALUES` values once aliases are expanded: nine lines of `&a [*b, *b, ...]` are 9**9 values to anything
    that walks them (an error message's repr of one filled the memory), and an alias may even contain itself."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  a SafeLoader subclass
    except RecursionError:  # `[[[[...` 100,000 deep: PyYAML's parser recurses once per level
        raise yaml.error.MarkedYAMLError(problem="nested too deeply") from None
    pending, count = [data], 0
    while pending:  # the expanded size, counted only up to the limit (a shared value counts at each use)
        value = pending.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise yaml.error.MarkedYAMLError(problem=f"more than {MAX_YAML_VALUES:,} values once its aliases are "
                                             "expanded")
        if isinstance(value, dict):
            pending.extend(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return data


def yaml_where(error: Exception) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    return f"{where} ({getattr(error, 'problem', None) or 'parse error'})"


def read_recipe(recipe_path: str | os.PathLike) -> dict:
    """A recipe file as a mapping; a missing file, bad YAML or a non-mapping is a one-line `AksharaError`."""
    recipe = regular_file(recipe_path, "recipe file")  # a named pipe would block the read forever
    try:
        document = load_yaml(recipe.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise AksharaError(f"{recipe}: not a UTF-8 text file") from None
    except yaml.YAMLError as error:
        raise AksharaError(f"{recipe}: not valid YAML{yaml_where(error)}") from None
    if not isinstance(document, dict):
        raise AksharaError(f"{recipe}: must be a YAML mapping of recipe keys, got {type(document).__name__}")
    return document


def load_data_section(recipe_path: str | os.PathLike) -> DataSection:
    """Read and strictly check the `data:` section of a recipe file; the rest of the recipe belongs to training."""
    recipe = Path(recipe_path)
    document = read_recipe(recipe)
    if "data" not in document:
        raise AksharaError(f"{recipe}: needs a `data:` mapping with `sources`")
    return parse_data_section(document["data"], recipe, recipe.resolve().parent)


def parse_data_section(data: Any, origin: Path | str, base: Path | None = None) -> DataSection:
    """Check a data section (a mapping) key by key; relative paths resolve against `base` (default: cwd)."""
    from akshara_hf.data.sources import KINDS, is_hub_id

    if not isinstance(data, dict):
        raise AksharaError(f"{origin}: data must be a mapping with `sources`, got {type(data).__name__}")
    _reject_unknown(origin, "data", data, DATA_KEYS)

    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise AksharaError(f"{origin}: data.seed must be a non-negative integer, got {seed!r}")
    on_bad_row = data.get("on_bad_row", "error")
    if on_bad_row not in ("error", "skip"):
        raise AksharaError(f"{origin}: data.on_bad_row must be 'error' or 'skip', got {on_bad_row!r}")
    fraction = data.get("validation_fraction", 0.01)
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction < 1:
        raise AksharaError(f"{origin}: data.validation_fraction must be a number in [0, 1), got {fraction!r}")
    entries = data.get("sources")
    if not isinstance(entries, list) or not entries:
        raise AksharaError(f"{origin}: data.sources must be a non-empty list")

    base = Path.cwd() if base is None else Path(base)

    def locate(path: str) -> str:
        candidate = Path(path) if os.path.isabs(path) else base / path
        return path if not candidate.exists() and is_hub_id(path) else os.path.normpath(candidate)

    sources = []
    for index, entry in enumerate(entries):
        where = f"{origin}: data.sources[{index}]"
        if not isinstance(entry, dict):
            raise AksharaError(f"{where}: must be a mapping with `kind` and `path`")
        _reject_unknown(origin, f"data.sources[{index}]", entry, SOURCE_KEYS)
        kind = entry.get("kind")
        if kind not in KINDS:
            raise AksharaError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
        text = {key: entry.get(key)
                for key in ("path", "split", "config", "revision", "validation_path", "validation_split")}
        for key, value in text.items():
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise AksharaError(f"{where}.{key}: must be a non-empty string, got {value!r}")
        if text["path"] is None:
            raise AksharaError(f"{where}: missing `path`")
        counts = {}
        for key, default in (("limit", None), ("repeat", 1)):
            value = entry.get(key, default)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise AksharaError(f"{where}.{key}: must be a positive integer, got {value!r}")
            if key == "repeat" and value > MAX_REPEAT:
                raise AksharaError(f"{where}.repeat: {value} copies; at most {MAX_REPEAT} (repeat weights a source)")
            counts[key] = value
        sources.append(SourceSpec(
            index=index, kind=kind, path=text["path"], location=locate(text["path"]), split=text["split"],
            config=text["config"], revision=text["revision"],
            validation_location=locate(text["validation_path"]) if text["validation_path"] else None,
            validation_split=text["validation_split"], limit=counts["limit"], repeat=counts["repeat"],
            validation_path=text["validation_path"]))
    return DataSection(origin, seed, on_bad_row, float(fraction), tuple(sources))


def _reject_unknown(recipe: Path | str, where: str, mapping: dict, allowed: tuple[str, ...]) -> None:
    for key in mapping:
        if key not in allowed:
            raise AksharaError(f"{recipe}: {where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def derive_seed(seed: int, *purpose: Any) -> int:
    """A 63-bit seed for one purpose. sha256 rather than hash(), which Python salts per process."""
    digest = hashlib.sha256(":".join(str(part) for part in (seed, *purpose)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# --- sizes ----------------------------------------------------------------------------------------


def count_tokens(messages: list[dict], tokenizer: Any) -> int:
    """Tokens the model trains on for one conversation (nanochat layout, truncated as in training)."""
    from akshara_hf.tokenization.chat import render_conversation  # lazy: chat.py is the model side's, and pulls in the tokenizer stack

    ids, _mask = render_conversation(messages, tokenizer)
    return len(ids)


def _measure(dataset, tokenizer: Any) -> int:
    total = 0
    for batch in dataset.select_columns(["messages"]).iter(batch_size=1000):
        for messages in batch["messages"]:
            if tokenizer is None:
                total += sum(len(m["content"].encode("utf-8")) for m in messages)
            else:
                total += count_tokens(messages, tokenizer)
    return total


# --- build ----------------------------------------------------------------------------------------


def _validation_split(location: str, spec: SourceSpec, train_split: str | None, config: str | None = None,
                      revision: str | None = None):
    """Which split of `location` validates: the explicit one, else its own `validation` split if any."""
    from akshara_hf.data.sources import available_splits

    explicit = spec.validation_split
    splits = available_splits(location, config, revision)
    if explicit is not None:
        if splits is None:
            raise AksharaError(f"{location}: validation_split {explicit!r} given, but this input has no splits")
        return explicit
    if splits and "validation" in splits and train_split != "validation":
        return "validation"
    return None


def _convert_inputs(section: DataSection, spec: SourceSpec, cache: Path):
    """(train rows, validation rows or None, where validation comes from or None, dropped rows by part) of one
    source, converted; nothing deduplicated or held out yet."""
    from akshara_hf.data.sources import convert_source

    hub = {"config": spec.config, "revision": spec.revision}
    options = {"on_bad_row": section.on_bad_row, "cache_dir": cache}
    train = convert_source(spec.kind, spec.location, split=spec.split, limit=spec.limit,
                           seed=derive_seed(section.seed, "prompts", spec.index), **hub, **options)
    validation_seed = derive_seed(section.seed, "validation-prompts", spec.index)
    validation, origin = None, None
    if spec.validation_location is not None:
        # A separate validation input is local (Hub datasets carry their validation split), so no config.
        split = _validation_split(spec.validation_location, spec, None)
        validation = convert_source(spec.kind, spec.validation_location, split=split, seed=validation_seed, **options)
        origin = f"{os.path.basename(spec.validation_location)}" + (f" [{split}]" if split else "")
    elif (split := _validation_split(spec.location, spec, spec.split, **hub)) is not None:
        validation = convert_source(spec.kind, spec.location, split=split, seed=validation_seed, **hub, **options)
        origin = f"split {split}"
    if len(train.dataset) == 0:
        raise AksharaError(f"no usable rows ({train.dropped_count} dropped)")
    dropped = {}
    for part, result in (("train", train), ("validation", validation)):
        for reason, rows in (result.dropped.items() if result is not None else ()):
            dropped[f"{reason} [{part}]" if part == "validation" else reason] = {
                "count": rows.count, "first_rows": rows.rows}
    return train.dataset, None if validation is None else validation.dataset, origin, dropped


def conversation_key(messages: list[dict]) -> bytes:
    """The identity of a conversation for deduplication: roles and contents, each content in Unicode NFC with runs
    of whitespace made one space and the ends stripped (a copy re-saved by another tool, or with a trailing newline,
    is the same conversation)."""
    import unicodedata

    normalized = [[m["role"], " ".join(unicodedata.normalize("NFC", m["content"]).split())] for m in messages]
    return hashlib.sha256(json.dumps(normalized, ensure_ascii=False).encode("utf-8")).digest()[:16]


def _drop_seen(rows, seen: set[bytes]):
    """(rows without the conversations in `seen` or repeated among them, how many went); adds the kept ones' keys
    to `seen`."""
    keep, position = [], 0
    for batch in rows.select_columns(["messages"]).iter(batch_size=1000):
        for messages in batch["messages"]:
            key = conversation_key(messages)
            if key not in seen:
                seen.add(key)
                keep.append(position)
            position += 1
    dropped = len(rows) - len(keep)
    return (rows.select(keep) if dropped else rows), dropped


def _split_source(section: DataSection, spec: SourceSpec, train_rows, validation_rows, origin: str | None,
                  duplicates: int, dropped: dict, tokenizer: Any):
    """Hold out validation rows (when the source has no validation input), measure, then repeat the train rows."""
    from datasets import concatenate_datasets

    if validation_rows is None:
        # `datasets` sizes the split itself (a fractional test_size rounds up: 5 rows x 0.1 -> 1 row); a source of
        # one row keeps it for training.
        if section.validation_fraction and len(train_rows) > 1:
            parts = train_rows.train_test_split(test_size=section.validation_fraction, shuffle=True,
                                                seed=derive_seed(section.seed, "holdout", spec.index))
            train_rows, validation_rows = parts["train"], parts["test"]
        else:
            validation_rows = train_rows.select([])
        origin = f"held out {len(validation_rows)}"
    train_size = _measure(train_rows, tokenizer)
    entry = {
        "index": spec.index, "kind": spec.kind, "path": spec.path, "repeat": spec.repeat,
        "train_rows": len(train_rows) * spec.repeat, "validation_rows": len(validation_rows),
        "validation_from": origin,
        "train_size": train_size * spec.repeat, "validation_size": _measure(validation_rows, tokenizer),
        "dropped": dropped, "dropped_rows": sum(d["count"] for d in dropped.values()),
        "duplicate_rows": duplicates,
    }
    if spec.repeat > 1:
        train_rows = concatenate_datasets([train_rows] * spec.repeat)
    return train_rows, validation_rows, entry


def build_mixture(recipe_path: str | os.PathLike | DataSection, output_dir: str | os.PathLike, tokenizer: Any = None,
                  overwrite: bool = False):
    """Build, write and print the mixture of `recipe_path`'s `data:` section (or of a parsed `DataSection`: the
    runner's, command-line overrides included); return the written DatasetDict.

    Sizes in the report are tokens (`count_tokens`) when a tokenizer is given, else UTF-8 bytes of the
    message contents. OUTPUT_DIR is written through `folders.staged_output`: an existing folder is replaced only
    by a complete new build, only with `overwrite`, and only if it is empty or an earlier build-mixture output.
    """
    from datasets import DatasetDict, concatenate_datasets, load_from_disk

    section = recipe_path if isinstance(recipe_path, DataSection) else load_data_section(recipe_path)
    check_source_files(section)
    _check_distinct_sources(section)
    inputs = [section.recipe, *(location for spec in section.sources
                                for location in (spec.location, spec.validation_location))]
    output = Path(output_dir)
    check_output(output, COMMAND, overwrite=overwrite, inputs=inputs)
    _clean_legacy_staging(output)
    with staged_output(output, COMMAND, overwrite=overwrite, inputs=inputs) as staging:
        converted = []
        with progress(len(section.sources), f"{COMMAND}: sources", "source") as bar:
            for spec in section.sources:
                bar.set_postfix_str(spec.kind, refresh=False)
                try:
                    converted.append(_convert_inputs(section, spec, staging.scratch / "cache"))
                except AksharaError as error:
                    raise AksharaError(f"{section.recipe}: data.sources[{spec.index}] ({spec.kind}): {error}") from None
                bar.update(1)
        # Deduplicated by content across the whole mixture before any row is held out, whatever the files are called:
        # validation inputs first (their conversations are validation rows wherever else they appear), then the
        # train rows in recipe order (a conversation seen earlier is dropped). Held-out rows are then unique too.
        seen: set[bytes] = set()
        validation_inputs, duplicates = [], [0] * len(converted)
        for number, (_, validation, _, _) in enumerate(converted):
            kept = None
            if validation is not None:
                kept, duplicates[number] = _drop_seen(validation, seen)
            validation_inputs.append(kept)
        train_parts, validation_parts, entries = [], [], []
        for spec, (train, _, origin, dropped), validation, earlier in zip(section.sources, converted,
                                                                         validation_inputs, duplicates):
            train, count = _drop_seen(train, seen)
            train, validation, entry = _split_source(section, spec, train, validation, origin, earlier + count,
                                                     dropped, tokenizer)
            train_parts.append(train)
            validation_parts.append(validation)
            entries.append(entry)
        validation = concatenate_datasets(validation_parts)
        if len(validation) == 0:
            raise AksharaError(f"{section.recipe}: the validation split is empty: raise data.validation_fraction "
                               "or give a source a validation split")
        mixture = DatasetDict({
            "train": concatenate_datasets(train_parts).shuffle(seed=derive_seed(section.seed, "shuffle", "train")),
            "validation": validation.shuffle(seed=derive_seed(section.seed, "shuffle", "validation")),
        })
        mixture.save_to_disk(str(staging.folder))
        report = _report(section, entries, tokenizer)
        markdown = _markdown(report)
        (staging.folder / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n",
                                                    encoding="utf-8")
        (staging.folder / "report.md").write_text(markdown, encoding="utf-8")
    print(markdown, end="")
    return load_from_disk(str(output))


def check_source_files(section: DataSection) -> None:
    """Every local input is a regular file or a folder of them: a named pipe or device would block the build (or a
    training run, which calls this before any work) forever. Missing inputs are left to the build, which names them."""
    for spec in section.sources:
        for key, location in (("path", spec.location), ("validation_path", spec.validation_location)):
            if location is None or spec.is_hub and key == "path" or not os.path.lexists(location):
                continue
            try:
                if os.path.isdir(location):
                    regular_tree(location, depth=3)
                else:
                    regular_file(location, "data file")
            except AksharaError as error:
                raise AksharaError(f"{section.recipe}: data.sources[{spec.index}].{key}: {error}") from None


def _check_distinct_sources(section: DataSection) -> None:
    """Refuse a recipe that reads the same input twice: each copy would hold out its own validation rows, so the
    rows one copy validates on the other trains on. `repeat: N` is how a source is used N times (train rows only).
    The same input is the same file or folder (compared by device and inode: a symbolic or hard link, another
    spelling of the path), or a folder and anything inside it. A source's validation input that is another entry's
    (or its own) train input leaks the same way. Copies under other names are caught later, by content."""
    def identity(location: str, split: str | None, config: str | None = None, revision: str | None = None) -> tuple:
        try:
            status = os.stat(location)
            local = (status.st_dev, status.st_ino)
        except (OSError, ValueError):  # a Hub id, or a missing input (reported by the build, with its entry)
            local = location
        return local, config, revision, split or "train"  # no split reads the train split (or the whole file)

    train_inputs: dict[tuple, SourceSpec] = {}
    for spec in section.sources:
        key = identity(spec.location, spec.split, spec.config, spec.revision)
        if key in train_inputs:
            first = train_inputs[key]
            raise AksharaError(
                f"{section.recipe}: data.sources[{first.index}] and data.sources[{spec.index}] both read "
                f"{spec.path}{f' [{spec.split}]' if spec.split else ''}: each copy would hold out other validation "
                "rows, which the other copy trains on; list it once with `repeat: 2`")
        train_inputs[key] = spec
    _check_no_containment(section)
    for spec in section.sources:
        if spec.validation_location is None or not os.path.exists(spec.validation_location):
            continue  # a missing validation input is reported by the build, with its source entry
        try:
            split = _validation_split(spec.validation_location, spec, None)
        except AksharaError:
            continue  # reported by the build, with its source entry
        other = train_inputs.get(identity(spec.validation_location, split))
        if other is not None:
            raise AksharaError(
                f"{section.recipe}: data.sources[{spec.index}].validation_path reads the train input of "
                f"data.sources[{other.index}] ({other.path}): its validation rows would be trained on")


def _check_no_containment(section: DataSection) -> None:
    """A folder and a file or folder inside it (`stories` and `stories/train`) read the same rows twice."""
    entries = []
    for spec in section.sources:
        for key, written, location in (("path", spec.path, spec.location),
                                       ("validation_path", spec.validation_path, spec.validation_location)):
            if location is not None and os.path.exists(location):
                entries.append((f"data.sources[{spec.index}].{key}", written, Path(location).resolve()))
    for outer_name, outer_written, outer in entries:
        if not outer.is_dir():
            continue
        for inner_name, inner_written, inner in entries:
            if inner != outer and inner.is_relative_to(outer):
                raise AksharaError(
                    f"{section.recipe}: {outer_name} ({outer_written}) contains {inner_name} ({inner_written}): the "
                    "same rows would be read twice, and a validation row could be trained on; list one of them "
                    "(a folder's splits are chosen with split / validation_split)")


def _clean_legacy_staging(output: Path) -> None:
    """Remove `.OUT.building-XXXXXXXX` folders that interrupted builds of earlier versions left (tens of MB each).
    Only folders with exactly that name pattern and nothing but the old build's `cache`/`output` inside."""
    parent = output.absolute().parent
    if not parent.is_dir():
        return
    pattern = re.compile(re.escape(f".{output.name}.building-") + r"[A-Za-z0-9_]{8}")
    for candidate in parent.iterdir():
        if not pattern.fullmatch(candidate.name) or candidate.is_symlink() or not candidate.is_dir():
            continue
        if {p.name for p in candidate.iterdir()} <= {"cache", "output"}:
            shutil.rmtree(candidate, ignore_errors=True)


# --- report ---------------------------------------------------------------------------------------


def _report(section: DataSection, entries: list[dict], tokenizer: Any) -> dict:
    unit = "tokens" if tokenizer is not None else "utf8_bytes"
    totals = {key: sum(entry[key] for entry in entries)
              for key in ("train_rows", "validation_rows", "train_size", "validation_size", "dropped_rows",
                      "duplicate_rows")}
    return {
        "recipe": str(section.recipe), "seed": section.seed, "on_bad_row": section.on_bad_row,
        "validation_fraction": section.validation_fraction, "size_unit": unit,
        "tokenizer": None if tokenizer is None else getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
        "sources": entries, "totals": totals,
    }


def _markdown(report: dict) -> str:
    unit = "tokens" if report["size_unit"] == "tokens" else "UTF-8 bytes"
    lines = [
        f"# Mixture report: {report['recipe']}", "",
        f"seed {report['seed']}, on_bad_row {report['on_bad_row']}, validation_fraction "
        f"{report['validation_fraction']}; sizes in {unit}"
        + (f" ({report['tokenizer']})" if report["tokenizer"] else " of message contents (no tokenizer given)"), "",
        f"| # | kind | path | repeat | train rows | validation rows | validation from | train {unit} "
        f"| validation {unit} | dropped rows | duplicates dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in report["sources"]:
        lines.append(f"| {e['index']} | {e['kind']} | {e['path']} | {e['repeat']} | {e['train_rows']:,} "
                     f"| {e['validation_rows']:,} | {e['validation_from']} | {e['train_size']:,} "
                     f"| {e['validation_size']:,} | {e['dropped_rows']:,} | {e['duplicate_rows']:,} |")
    t = report["totals"]
    lines += [f"| | **total** | | | {t['train_rows']:,} | {t['validation_rows']:,} | | {t['train_size']:,} "
              f"| {t['validation_size']:,} | {t['dropped_rows']:,} | {t['duplicate_rows']:,} |", ""]
    if t["duplicate_rows"]:
        lines += [f"{t['duplicate_rows']:,} duplicate conversations dropped (same roles and text, whitespace and Unicode "
                  "form aside, as a validation row or a row earlier in the mixture), before validation rows were "
                  "held out: no validation conversation is in train.", ""]
    dropped = [(e, reason, d) for e in report["sources"] for reason, d in e["dropped"].items()]
    if not dropped:
        lines.append("No rows dropped.")
    else:
        lines.append(f"Dropped rows (on_bad_row: skip), {t['dropped_rows']:,} in all:")
        for e, reason, d in dropped:
            rows = ", ".join(map(str, d["first_rows"])) + (", ..." if d["count"] > len(d["first_rows"]) else "")
            lines.append(f"- sources[{e['index']}] {e['kind']} ({e['path']}): {d['count']:,} × {reason} (rows {rows})")
    return "\n".join(lines) + "\n"


# --- command line ---------------------------------------------------------------------------------


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-mixture", help="build a recipe's training mixture (train/validation DatasetDict + report)",
        description="Convert the sources in RECIPE's `data:` section and write the shuffled mixture to OUTPUT_DIR.")
    parser.add_argument("recipe", metavar="RECIPE",
                        help="recipe YAML with a `data:` section, or a packaged recipe's name (tiny-mid)")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="where the DatasetDict and report go")
    parser.add_argument("--tokenizer", metavar="PATH",
                        help="count tokens with this tokenizer (AutoTokenizer.from_pretrained) instead of bytes")
    add_overwrite_flag(parser)
    add_trust_flag(parser)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    tokenizer = None
    if args.tokenizer:
        from akshara_hf.loading import load_tokenizer

        try:
            tokenizer = load_tokenizer(args.tokenizer, args.trust_remote_code)
        except AksharaError as error:
            raise AksharaError(f"--tokenizer {args.tokenizer}: could not load a tokenizer ({error})") from None
    from akshara_hf.training.shipped import find_recipe

    build_mixture(find_recipe(args.recipe), args.output_dir, tokenizer=tokenizer, overwrite=args.overwrite)
    return 0
