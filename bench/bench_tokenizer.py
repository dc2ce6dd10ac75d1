"""Encode throughput on Telugu text: our HF fast tokenizer (the reference is nanochat's tiktoken `Encoding` of the same
ranks, from `fast_to_tiktoken`), one call per document and batched.

Akshara renders and packs every training row through the HF tokenizer, where nanochat uses tiktoken; this checks what
that costs. Ids are asserted equal (HF with `split_special_tokens=True` is `encode_ordinary`) before anything is timed.
Calls are the ones the project makes: `tokenizer(doc, add_special_tokens=False, split_special_tokens=True)` (as
`render_conversation` does), plus the bare Rust `backend_tokenizer.encode` to show the transformers wrapper's share;
batched is `tokenizer(list, ...)` (and the backend's `encode_batch_fast`, which skips offsets) against
`encode_ordinary_batch(list)`, in chunks of `--chunk` documents (both spread a chunk over all cores).

Two vocabularies:
- `samples`: trained on the tiny-sft mixture's text (the Telugu samples under data/samples), at `--vocab` ids or, as
  that text is small, the largest vocab it trains; encodes that text repeated to `--mb` MB (repeats favour the HF
  word cache, so this case flatters HF).
- `synthetic`: trained on `--corpus-mb` MB of synthetic Telugu, at `--large-vocab` ids or the largest that trains;
  encodes `--mb` MB of different synthetic text. The synthetic text: words drawn with Zipf frequencies from the
  samples' real words followed by 50,000 pseudo-words made of aksharas sampled with the samples' akshara frequencies.
  nanochat's split regex cuts Telugu at every vowel sign (a mark, not a letter), so pre-tokens are short and
  Telugu-only text runs out of merges early (under 10k ids from the default 8 MB).

MB = 10^6 bytes of UTF-8. Usage:
    python bench/bench_tokenizer.py [--mb 4] [--steps 5] [--vocab 4096] [--large-vocab 16384] [--corpus-mb 8]
"""

import argparse
import contextlib
import io
import itertools
import os
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import regex  # noqa: E402
import tiktoken  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
from common import environment, print_table, timed  # noqa: E402

from akshara_hf.errors import AksharaError  # noqa: E402
from akshara_hf.tokenization.tokenizer import fast_to_tiktoken, train_tokenizer  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "training" / "recipes" / "tiny-sft.yaml"
# An akshara: consonants joined by virama, then its marks (vowel sign, anusvara...); or a lone letter / vowel.
AKSHARA = regex.compile(r"(?:[\u0C15-\u0C39]\u0C4D)*\p{L}\p{M}*")
TELUGU_WORD = regex.compile(r"[\u0C00-\u0C7F]+")


def sample_documents() -> list[str]:
    """Every message text of the tiny-sft mixture (train and validation), one document each."""
    import datasets

    from akshara_hf.data.mixture import build_mixture

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        mixture = build_mixture(RECIPE, Path(tmp) / "mixture")
        conversations = [*mixture["train"]["messages"], *mixture["validation"]["messages"]]
    docs = []
    for messages in conversations:
        for message in messages:
            content = message["content"]
            docs.extend([content] if isinstance(content, str) else [part["text"] for part in content])
    return [doc for doc in docs if doc]


def repeat_to(docs: list[str], megabytes: float) -> list[str]:
    out, size = [], 0
    for doc in itertools.cycle(docs):
        if size >= megabytes * 1e6:
            return out
        out.append(doc)
        size += len(doc.encode())


class SyntheticTelugu:
    """Zipf-distributed words: the samples' real words (most frequent first), then pseudo-words of sampled aksharas."""

    def __init__(self, docs: list[str], pseudo_words: int = 50_000, seed: int = 0):
        rng = random.Random(seed)
        words = [w for doc in docs for w in TELUGU_WORD.findall(doc)]
        counts = {}
        for word in words:
            counts[word] = counts.get(word, 0) + 1
        real = sorted(counts, key=counts.get, reverse=True)
        aksharas = [a for w in words for a in AKSHARA.findall(w)]
        lengths = [len(AKSHARA.findall(w)) for w in words]
        pseudo = {"".join(rng.choices(aksharas, k=rng.choice(lengths))) for _ in range(pseudo_words)}
        self.lexicon = real + sorted(pseudo - counts.keys())
        self.cum_weights = list(itertools.accumulate(1 / (rank + 1) ** 1.05 for rank in range(len(self.lexicon))))

    def documents(self, megabytes: float, seed: int, doc_bytes: int = 2000) -> list[str]:
        rng, docs, size = random.Random(seed), [], 0
        while size < megabytes * 1e6:
            sentences, length = [], 0
            while length < doc_bytes:
                words = rng.choices(self.lexicon, cum_weights=self.cum_weights, k=rng.randint(5, 15))
                if rng.random() < 0.1:
                    words.insert(rng.randrange(len(words)), str(rng.randint(1, 2030)))
                sentence = " ".join(words) + rng.choice(".,.?!")
                sentences.append(sentence)
                length += len(sentence.encode()) + 1
            docs.append(" ".join(sentences) + ("\n" if rng.random() < 0.3 else ""))
            size += length
        return docs


def train_largest(texts: list[str], vocab_size: int):
    """`train_tokenizer` at `vocab_size`, or at the most ids the text trains (it says how many merges it learned)."""
    for _ in range(5):
        try:
            return train_tokenizer(texts, vocab_size)
        except AksharaError as error:
            learned = re.search(r"learned (\d+) merges", str(error))
            if not learned:
                raise
            vocab_size = 256 + int(learned.group(1)) + 9  # bytes + merges + nanochat's special tokens
    raise AksharaError(f"could not train a tokenizer on the text (last try {vocab_size} ids)")


def measure(case: str, tokenizer, docs: list[str], args) -> list[dict]:
    encoding = fast_to_tiktoken(tokenizer)
    backend = tokenizer.backend_tokenizer
    chunks = [docs[i : i + args.chunk] for i in range(0, len(docs), args.chunk)]

    def hf_single():
        return [tokenizer(doc, add_special_tokens=False, split_special_tokens=True)["input_ids"] for doc in docs]

    def backend_single():
        return [backend.encode(doc, add_special_tokens=False).ids for doc in docs]

    def backend_single_fast():  # the backend's cheapest call for one document: a batch of one, no offsets
        return [backend.encode_batch_fast([doc], add_special_tokens=False)[0].ids for doc in docs]

    def tt_single():
        return [encoding.encode_ordinary(doc) for doc in docs]

    def hf_batched():
        return [ids for chunk in chunks
                for ids in tokenizer(chunk, add_special_tokens=False, split_special_tokens=True)["input_ids"]]

    def backend_batched():  # no offsets computed
        return [out.ids for chunk in chunks for out in backend.encode_batch_fast(chunk, add_special_tokens=False)]

    def tt_batched():
        return [ids for chunk in chunks for ids in encoding.encode_ordinary_batch(chunk)]

    expected = tt_single()
    for fn in (hf_single, backend_single, backend_single_fast, hf_batched, backend_batched, tt_batched):
        assert fn() == expected, f"{case}: {fn.__name__} ids differ from tiktoken's encode_ordinary"
    megabytes = sum(len(doc.encode()) for doc in docs) / 1e6
    tokens = sum(map(len, expected))
    print(f"{case}: {len(tokenizer)} ids, {len(docs)} documents, {megabytes:.2f} MB, {tokens} tokens "
          f"({megabytes * 1e6 / tokens:.2f} bytes/token); ids equal to tiktoken's", flush=True)
    # Every function is timed once per round, the rounds interleaved, so that load from other processes on a shared
    # machine hits them alike; each figure is the median over the rounds.
    functions = (tt_single, hf_single, backend_single, backend_single_fast, tt_batched, hf_batched, backend_batched)
    seconds = {fn: [] for fn in functions}
    for _ in range(args.steps):
        for fn in functions:
            seconds[fn].append(timed(fn, steps=1, warmup=0, device="cpu"))
    median = {fn: statistics.median(times) for fn, times in seconds.items()}
    rows = []
    for mode, ours, reference in (
        ("single: tokenizer(doc)", hf_single, tt_single),
        ("single: backend_tokenizer.encode(doc)", backend_single, tt_single),
        ("single: backend_tokenizer.encode_batch_fast([doc])", backend_single_fast, tt_single),
        (f"batched: tokenizer(list of {args.chunk})", hf_batched, tt_batched),
        (f"batched: backend_tokenizer.encode_batch_fast(list of {args.chunk})", backend_batched, tt_batched),
    ):
        ours_s, ref_s = median[ours], median[reference]
        rows.append({
            "case": case, "vocab": len(tokenizer), "mode": mode,
            "tiktoken MB/s": megabytes / ref_s, "HF MB/s": megabytes / ours_s,
            "tiktoken Mtok/s": tokens / ref_s / 1e6, "HF Mtok/s": tokens / ours_s / 1e6,
            "ratio HF/tiktoken": ref_s / ours_s,
        })  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=4.0, help="MB of text encoded per pass")
    parser.add_argument("--steps", type=int, default=5, help="timed passes per call (median), interleaved")
    parser.add_argument("--chunk", type=int, default=1000, help="documents per batched call")
    parser.add_argument("--vocab", type=int, default=4096, help="ids of the tokenizer trained on the samples")
    parser.add_argument("--large-vocab", type=int, default=16384, help="ids of the one trained on synthetic text")
    parser.add_argument("--corpus-mb", type=float, default=8.0, help="MB of synthetic training text")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # timings on a shared machine are only as good as its idleness
    samples = sample_documents()
    synthetic = SyntheticTelugu(samples)
    cases = [
        ("samples", train_largest(samples, args.vocab), repeat_to(samples, args.mb)),
        ("synthetic", train_largest(synthetic.documents(args.corpus_mb, seed=0), args.large_vocab),
         synthetic.documents(args.mb, seed=1)),
    ]
    rows = [row for case in cases for row in measure(*case, args)]
    env = {key: value for key, value in environment(torch.float32, "cpu").items() if key != "dtype"} | {
        "cores": os.cpu_count(), "tokenizers": tokenizers.__version__, "tiktoken": tiktoken.__version__,
        "load avg (1 min)": f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after",
    }  # fmt: skip
    print_table(f"encode throughput, {args.mb:g} MB per pass, median of {args.steps}", env, rows, list(rows[0]))
    for case, *_ in cases:  # each library's fastest call, whichever mode it is
        best = {lib: max(row[f"{lib} MB/s"] for row in rows if row["case"] == case) for lib in ("HF", "tiktoken")}
        print(f"{case}: fastest HF {best['HF']:.3g} MB/s / fastest tiktoken {best['tiktoken']:.3g} MB/s = "
              f"{best['HF'] / best['tiktoken']:.3g}")


if __name__ == "__main__":
    main()
