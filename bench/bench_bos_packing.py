"""nanochat 2026's SFT rows (`packing_strategy: bos_bestfit`) against pad-to-longest batches and TRL's BFD packing.

On the shipped samples' SFT conversations (training/recipes/tiny-sft-2026.yaml's mixture, data/samples/tokenizer),
copied `--copies` times, in mixture order. Per layout: the share of the tokens a step processes that are learnt
(supervised), and the share that is padding, each relative to pad-to-longest batches of `--batch` conversations
measured in the same run; then the time to pack, bos_bestfit against TRL's `pack_dataset(..., "bfd")` on the same
rows (a ratio; the machine's load changes it). Token shares are exact counts, not timings.

    python bench/bench_bos_packing.py [--copies 50] [--lengths 512 2048] [--batch 32]
"""

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def conversations(copies: int):
    from datasets import Dataset, concatenate_datasets

    from akshara_hf.data.mixture import build_mixture, load_data_section
    from akshara_hf.loading import load_tokenizer
    from akshara_hf.tokenization.chat import render_conversation, special_token_ids

    tokenizer = load_tokenizer(str(ROOT / "data" / "samples" / "tokenizer"))
    section = load_data_section(ROOT / "training" / "recipes" / "tiny-sft-2026.yaml")
    with tempfile.TemporaryDirectory() as folder:
        messages = list(build_mixture(section, Path(folder) / "m", tokenizer=tokenizer)["train"]["messages"])
    rows = []
    for item in messages:
        ids, mask = render_conversation(item, tokenizer)
        rows.append({"input_ids": ids, "labels": [i if m else -100 for i, m in zip(ids, mask)]})
    one = Dataset.from_list(rows)
    return concatenate_datasets([one] * copies), special_token_ids(tokenizer)["<|bos|>"]


def padded_shares(rows, batch: int) -> tuple[float, float]:
    """(learnt, padding) shares of the tokens of pad-to-longest batches in dataset order."""
    lengths = [len(ids) for ids in rows["input_ids"]]
    learnt = sum(sum(label != -100 for label in labels) for labels in rows["labels"])
    total = sum(max(lengths[i:i + batch]) * len(lengths[i:i + batch]) for i in range(0, len(lengths), batch))
    return learnt / total, (total - sum(lengths)) / total


def packed_shares(packed) -> tuple[float, float]:
    total = sum(len(ids) for ids in packed["input_ids"])
    learnt = sum(sum(label != -100 for label in labels) for labels in packed["labels"])
    content = sum(sum(lengths[:count]) for lengths, count in zip(packed["seq_lengths"], packed["conversations"]))
    return learnt / total, (total - content) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--batch", type=int, default=32)
    options = parser.parse_args()
    from trl.data_utils import pack_dataset

    from akshara_hf.data.packing import pack_bos_bestfit

    rows, bos = conversations(options.copies)
    print(f"{len(rows)} conversations; pad-to-longest batches of {options.batch} as the reference")
    for length in options.lengths:
        # Conversations cut to max_length first, as the trainer does (a row holds max_length + 1 tokens).
        cut = rows.map(lambda row: {key: row[key][:length] for key in ("input_ids", "labels")})
        learnt_ref, pad_ref = padded_shares(cut, options.batch)
        start = time.perf_counter()
        packed = pack_bos_bestfit(cut, length + 1, bos)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        pack_dataset(cut, length, "bfd")
        bfd = time.perf_counter() - start
        learnt, padding = packed_shares(packed)
        print(f"max_length {length}: pad-to-longest learnt {learnt_ref:.3f} of the tokens, padding {pad_ref:.3f}; "
              f"bos_bestfit {len(packed)} rows of {length + 1}, {sum(packed['conversations'])} conversations placed, "
              f"learnt {learnt:.3f} ({learnt / learnt_ref:.2f}x), padding {padding:.3f}; packing time "
              f"{ours / bfd:.1f}x TRL's bfd")

if __name__ == "__main__":
    main()
