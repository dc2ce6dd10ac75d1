"""Packed rows: nanochat's mid-training token stream (every token a target) and nanochat 2026's SFT rows
(`pack_bos_bestfit`: whole conversations placed best-fit into rows that start with `<|bos|>`).

nanochat's mid-training renders each conversation (bos, turns, special tokens), concatenates ALL tokens into one
stream with no attention reset between conversations, and reads `B*T + 1` tokens per micro-batch so that row `i`
has inputs `stream[i*T:(i+1)*T]` and targets shifted by one. We write rows of `T + 1` tokens that overlap by one token
(`row i = stream[i*T : i*T + T + 1]`): the model's usual shift then gives exactly nanochat's inputs and targets, and
TRL's plain (non-packing) collator needs no change. TRL's own `packing` is not used here because it resets positions
and attention per conversation, which nanochat's mid-training does not do.
"""

from collections.abc import Iterator

import numpy as np
from datasets import Dataset, Features, Sequence, Value
from datasets.exceptions import DatasetGenerationError

from akshara_hf.errors import AksharaError
from akshara_hf.tokenization.tokenizer import encode_ordinary


def token_byte_lengths(tokenizer) -> np.ndarray:
    """nanochat's `token_bytes` for bits-per-byte: `len(decode([id]).encode())`, 0 for special tokens.

    nanochat's rule (tok_train.py), kept so bpb figures compare with the seed runs: a token holding an incomplete
    UTF-8 sequence decodes to U+FFFD and so counts 3 bytes, not its real length (frequent in Telugu, 3 bytes/char).
    """
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    return np.array(
        [0 if i in special else len(tokenizer.decode([i]).encode("utf-8")) for i in range(len(tokenizer))], dtype=np.int32
    )


def _stream_rows(rows: Dataset, render, max_seq_len: int) -> Iterator[dict]:
    buffer = np.zeros(0, dtype=np.int64)
    for index, example in enumerate(rows):
        try:
            ids = render(example)
        except AksharaError as error:
            raise AksharaError(f"row {index}: {error}") from None
        buffer = np.concatenate([buffer, np.asarray(ids, dtype=np.int64)])
        while len(buffer) >= max_seq_len + 1:
            yield {"input_ids": buffer[: max_seq_len + 1].tolist()}
            buffer = buffer[max_seq_len:]  # the last token of this row is the first input of the next


def _pack(rows: Dataset, render, max_seq_len: int) -> Dataset:
    """Rows of `max_seq_len + 1` ids through `Dataset.from_generator` (Arrow on disk): the token stream is never a
    Python list. The incomplete tail is dropped, as nanochat's loader does."""
    if max_seq_len < 1:
        raise AksharaError(f"max_seq_len must be positive, got {max_seq_len}")
    features = Features({"input_ids": Sequence(Value("int32"))})
    too_short = AksharaError(f"the data renders to fewer than max_seq_len + 1 = {max_seq_len + 1} tokens")
    try:
        packed = Dataset.from_generator(
            _stream_rows, gen_kwargs={"rows": rows, "render": render, "max_seq_len": max_seq_len}, features=features
        )
    except ValueError as error:  # datasets refuses to build an empty split ("corresponds to no data")
        if "no data" in str(error):
            raise too_short from None
        raise
    if len(packed) == 0:
        raise too_short
    return packed


class _RenderConversation:
    """nanochat's rendering (truncated at 2048, as mid-training does too); a class so `datasets` can hash it."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, example) -> list[int]:
        from akshara_hf.tokenization.chat import render_conversation

        return render_conversation(example["messages"], self.tokenizer)[0]


class _RenderDocument:
    """`<|bos|>` + the text as ordinary tokens (special-token text stays text, as tiktoken's encode_ordinary)."""

    def __init__(self, tokenizer):
        from akshara_hf.tokenization.chat import special_token_ids

        self.tokenizer, self.bos = tokenizer, special_token_ids(tokenizer)["<|bos|>"]

    def __call__(self, example) -> list[int]:
        return [self.bos, *encode_ordinary(self.tokenizer, [example["text"]])[0]]


def pack_conversations(conversations: Dataset, tokenizer, max_seq_len: int) -> Dataset:
    """Mid-training rows from a `messages` dataset."""
    return _pack(conversations, _RenderConversation(tokenizer), max_seq_len)


def pack_documents(documents: Dataset, tokenizer, max_seq_len: int) -> Dataset:
    """Base-training rows from a `text` dataset."""
    return _pack(documents, _RenderDocument(tokenizer), max_seq_len)


# nanochat 2026's chat_sft holds this many conversations to choose the best fit from.
BOS_BESTFIT_BUFFER = 100


def bos_bestfit_rows(conversations, row_length: int, bos_token_id: int,
                     buffer_size: int = BOS_BESTFIT_BUFFER) -> Iterator[dict]:
    """nanochat 2026's `sft_data_generator_bos_bestfit` (one process), row by row, for one epoch.

    `conversations` is a sequence of `(input_ids, labels)` (labels -100 where nothing is learnt), each starting with
    `<|bos|>`. Rules, as nanochat's loader applies them:
      - A buffer holds `buffer_size` conversations, refilled in dataset order before every choice; the cursor wraps to
        the start of the data (the next epoch) as often as needed, so with fewer conversations than the buffer holds,
        or near the end of the epoch, the buffer holds next-epoch copies too.
      - Each row is filled with the longest buffered conversation that fits the space left (the first such in buffer
        order on a tie), whole, until none fits; the rest of the row is `<|bos|>` with label -100 (never a cut).
      - Rows are produced until the epoch's number of conversations has been placed (nanochat's `consumed >=
        dataset_size`, checked after each row here since the Trainer, not the loader, makes the batches); the last
        row is still filled to the end, from the buffer.
    A conversation longer than `row_length` would never be placed (nanochat leaves it in the buffer for good, and a
    buffer full of them makes rows of padding only): it is refused instead; cut conversations to the row first.

    Yields `{"input_ids", "labels", "seq_lengths", "conversations"}`: `row_length` ids; `seq_lengths` the placed
    conversations' lengths then the padding's (TRL's packed-row column: position ids restart at each for
    document-masked attention); `conversations` how many were placed in the row (the data progress).
    """
    if row_length < 1 or buffer_size < 1:
        raise AksharaError(f"row_length and buffer_size must be positive, got {row_length} and {buffer_size}")
    total = len(conversations)
    if total == 0:
        raise AksharaError("no conversations to pack")
    buffer: list[tuple[list[int], list[int]]] = []
    cursor = placed = 0

    def fetch(index: int) -> tuple[list[int], list[int]]:
        ids, labels = conversations[index]
        if len(ids) > row_length:
            raise AksharaError(f"row {index}: {len(ids)} tokens do not fit in a packed row of {row_length}; cut "
                               "conversations to max_length (the row is max_length + 1 tokens) before packing")
        if len(labels) != len(ids):
            raise AksharaError(f"row {index}: {len(labels)} labels for {len(ids)} input ids")
        if not ids or ids[0] != bos_token_id:
            raise AksharaError(f"row {index}: a conversation must start with <|bos|> (id {bos_token_id}), this one "
                               f"starts with {ids[:1]}")
        return ids, labels

    while placed < total:
        row_ids: list[int] = []
        row_labels: list[int] = []
        lengths: list[int] = []
        count = 0
        while len(row_ids) < row_length:
            while len(buffer) < buffer_size:
                buffer.append(fetch(cursor))
                cursor = (cursor + 1) % total
            remaining = row_length - len(row_ids)
            best, best_length = -1, 0
            for index, (ids, _) in enumerate(buffer):
                if best_length < len(ids) <= remaining:
                    best, best_length = index, len(ids)
            if best < 0:  # nothing fits: pad the rest with <|bos|>, nothing learnt there
                row_ids += [bos_token_id] * remaining
                row_labels += [-100] * remaining
                lengths.append(remaining)
                break
            ids, labels = buffer.pop(best)
            row_ids += ids
            row_labels += labels
            lengths.append(len(ids))
            count += 1
        placed += count
        yield {"input_ids": row_ids, "labels": row_labels, "seq_lengths": lengths, "conversations": count}


class _Columns:
    """`(input_ids, labels)` of a dataset's rows by index, read from Arrow one row at a time."""

    def __init__(self, rows: Dataset):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[list[int], list[int]]:
        row = self.rows[index]
        return row["input_ids"], row["labels"]


def _bos_bestfit_generator(rows: Dataset, row_length: int, bos_token_id: int, buffer_size: int) -> Iterator[dict]:
    yield from bos_bestfit_rows(_Columns(rows), row_length, bos_token_id, buffer_size)


def pack_bos_bestfit(rows: Dataset, row_length: int, bos_token_id: int, buffer_size: int = BOS_BESTFIT_BUFFER) -> Dataset:
    """`bos_bestfit_rows` over a dataset of `input_ids` and `labels` (as TRL prepares conversations), written to Arrow
    through `Dataset.from_generator`."""
    if "labels" not in rows.column_names or "input_ids" not in rows.column_names:
        raise AksharaError(f"bos_bestfit packing needs input_ids and labels columns, got {rows.column_names}")
    if len(rows) == 0:
        raise AksharaError("no conversations to pack")
    features = Features({
        "input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int32")),
        "seq_lengths": Sequence(Value("int32")), "conversations": Value("int32"),
    })  # fmt: skip
    try:
        return Dataset.from_generator(
            _bos_bestfit_generator, features=features,
            gen_kwargs={"rows": rows, "row_length": row_length, "bos_token_id": bos_token_id, "buffer_size": buffer_size},
        )  # fmt: skip
    except DatasetGenerationError as error:  # datasets wraps what the generator raised
        if isinstance(error.__cause__, AksharaError):
            raise error.__cause__ from None
        raise
