"""Mid-training rows: nanochat's token stream, cut into fixed-length rows where every token is a target.

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

from .errors import AksharaError


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 byte length of every token id (0 for special tokens), nanochat's `token_bytes.pt`, for bits-per-byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids) | {i for i in tokenizer.added_tokens_decoder}
    lengths = np.zeros(len(tokenizer), dtype=np.int32)
    for token, index in tokenizer.get_vocab().items():
        if index in special:
            continue
        try:
            lengths[index] = len(bytes(byte_of[char] for char in token))
        except KeyError:
            raise AksharaError(f"token {token!r} (id {index}) is not byte-level BPE; bits-per-byte needs byte tokens") from None
    return lengths


def _stream_rows(conversations: Dataset, tokenizer, max_seq_len: int) -> Iterator[dict]:
    from .chat import render_conversation

    buffer = np.zeros(0, dtype=np.int64)
    for index, example in enumerate(conversations):
        try:
            ids, _ = render_conversation(example["messages"], tokenizer)  # nanochat truncates at 2048 here too
        except AksharaError as error:
            raise AksharaError(f"row {index}: {error}") from None
        buffer = np.concatenate([buffer, np.asarray(ids, dtype=np.int64)])
        while len(buffer) >= max_seq_len + 1:
            yield {"input_ids": buffer[: max_seq_len + 1].tolist()}
            buffer = buffer[max_seq_len:]  # the last token of this row is the first input of the next


def pack_conversations(conversations: Dataset, tokenizer, max_seq_len: int) -> Dataset:
    """Rows of `max_seq_len + 1` token ids from the concatenated renderings; the incomplete tail is dropped.

    Streams through `Dataset.from_generator` (Arrow on disk), so the whole token stream is never a Python list.
    """
    if max_seq_len < 1:
        raise AksharaError(f"max_seq_len must be positive, got {max_seq_len}")
    features = Features({"input_ids": Sequence(Value("int32"))})
    rows = Dataset.from_generator(
        _stream_rows,
        gen_kwargs={"conversations": conversations, "tokenizer": tokenizer, "max_seq_len": max_seq_len},
        features=features,
    )
    if len(rows) == 0:
        raise AksharaError(f"the conversations render to fewer than max_seq_len + 1 = {max_seq_len + 1} tokens")
    return rows
