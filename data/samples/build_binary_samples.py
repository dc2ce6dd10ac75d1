"""Rebuild the binary samples (parquet files, `save_to_disk` folders) from the JSON Lines beside them.

Run from anywhere: `python data/samples/build_binary_samples.py`. The outputs are committed; this script
only documents how they were made and regenerates them after an edit to the text.
"""

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict

HERE = Path(__file__).resolve().parent


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_parquet(rows: list[dict], path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_dataset_dict(splits: dict[str, list[dict]], path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()}).save_to_disk(str(path))


def main() -> None:
    # XL-Sum: the public parquet layout (id, url, title, summary, text).
    for split in ("train", "validation"):
        write_parquet(read_jsonl(HERE / f"xlsum/telugu_{split}.jsonl"), HERE / f"xlsum/telugu_{split}.parquet")
    # Stories: a DatasetDict folder with a `messages` column, as the 200k tiny-stories set ships.
    write_dataset_dict({split: read_jsonl(HERE / f"source_text/stories_{split}.jsonl")
                        for split in ("train", "validation")}, HERE / "stories")

    # Broken: row 3 has an empty summary.
    rows = read_jsonl(HERE / "xlsum/telugu_train.jsonl")[:4]
    rows[2]["summary"] = ""
    write_parquet(rows, HERE / "broken/xlsum_empty_summary.parquet")
    # Broken: train row 2 starts with the assistant.
    stories = read_jsonl(HERE / "source_text/stories_train.jsonl")[:3]
    stories[1]["messages"] = list(reversed(stories[1]["messages"]))
    write_dataset_dict({"train": stories}, HERE / "broken/stories_bad_roles")


if __name__ == "__main__":
    main()
