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
