"""Writes nanochat2026_sft_reference.json: the SFT rows nanochat 2026's own loader (`sft_data_generator_bos_bestfit`
in scripts/chat_sft.py) builds from the training conversations of training/recipes/tiny-sft-2026.yaml, rendered by
nanochat's own `render_conversation` with the shipped samples' tokenizer (data/samples/tokenizer, as tokenizer.pkl).

Not run by the tests (it needs a nanochat checkout, which this project does not ship or depend on):

    python tests/data/make_nanochat2026_sft_reference.py /path/to/nanochat   # karpathy/nanochat master, 2026

chat_sft.py is a script (importing it trains), so its loader function is taken from the file's syntax tree and run
with the globals it reads (args, tokenizer, the datasets, the rank); a stand-in for `torch` records the `rows` and
`mask_rows` lists it turns into tensors. One row per batch (`device_batch_size` 1), so the loader's `approx_progress`
after each batch gives the conversations consumed row by row. nanochat's tokenizer module imports `rustbpe`
(tokenizer training only): a stub module stands in for it.
"""

import ast
import json
import sys
import tempfile
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# (max_seq_len, buffer_size): the recipe's rows with nanochat's buffer (larger than these 63 conversations), and
# shorter rows with a small buffer (the epoch wraps inside the buffer near the end).
CASES = [(512, 100), (256, 8)]


class RecordingTorch(types.ModuleType):
    """`torch`, except that `torch.tensor(rows, dtype=torch.long)` / `(mask_rows, dtype=torch.int8)` are recorded."""

    def __init__(self):
        super().__init__("torch")
        self.rows, self.masks = [], []

    def __getattr__(self, name):
        return getattr(torch, name)

    def tensor(self, data, dtype=None, **kwargs):
        if dtype is torch.long:
            self.rows.extend(data)
        elif dtype is torch.int8:
            self.masks.extend(data)
        return torch.tensor(data, dtype=dtype)


def loader_source(nanochat_dir: Path) -> str:
    source = (nanochat_dir / "scripts" / "chat_sft.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == "sft_data_generator_bos_bestfit":
            return ast.get_source_segment(source, node)
    raise SystemExit("sft_data_generator_bos_bestfit not found in scripts/chat_sft.py")


def conversations() -> list[dict]:
    """The recipe's training conversations, in the mixture's order."""
    from akshara_hf.data.mixture import build_mixture, load_data_section
    from akshara_hf.loading import load_tokenizer

    tokenizer = load_tokenizer(str(REPO / "data" / "samples" / "tokenizer"))
    section = load_data_section(REPO / "training" / "recipes" / "tiny-sft-2026.yaml")
    with tempfile.TemporaryDirectory() as folder:
        mixture = build_mixture(section, Path(folder) / "mixture", tokenizer=tokenizer)
        return [{"messages": messages} for messages in mixture["train"]["messages"]]


def main(nanochat_dir: str) -> None:
    sys.modules.setdefault("rustbpe", types.ModuleType("rustbpe"))
    sys.path[:0] = [nanochat_dir, str(REPO)]
    from nanochat.tokenizer import RustBPETokenizer

    from akshara_hf.loading import load_tokenizer
    from akshara_hf.tokenization.tokenizer import save_nanochat_tokenizer

    data = conversations()
    with tempfile.TemporaryDirectory() as folder:
        save_nanochat_tokenizer(load_tokenizer(str(REPO / "data" / "samples" / "tokenizer")), folder)
        tokenizer = RustBPETokenizer.from_directory(folder)
    source = loader_source(Path(nanochat_dir))
    cases = []
    for max_seq_len, buffer_size in CASES:
        recorder = RecordingTorch()
        namespace = {
            "torch": recorder, "tokenizer": tokenizer, "train_dataset": data, "val_dataset": data,
            "args": types.SimpleNamespace(max_seq_len=max_seq_len, device_batch_size=1, num_iterations=-1),
            "ddp_rank": 0, "ddp_world_size": 1, "device_type": "cpu", "device": "cpu",
            "last_step": False, "approx_progress": 0.0, "current_epoch": 1,
        }  # fmt: skip
        exec(source, namespace)
        loader = namespace["sft_data_generator_bos_bestfit"]("train", buffer_size=buffer_size)
        consumed = []
        while not namespace["last_step"]:
            next(loader)
            consumed.append(round(namespace["approx_progress"] * len(data)))
        cases.append({
            "max_seq_len": max_seq_len, "buffer_size": buffer_size, "rows": recorder.rows,
            "masks": ["".join(map(str, mask)) for mask in recorder.masks], "consumed": consumed,
        })  # fmt: skip
    out = {
        "made_by": "tests/data/make_nanochat2026_sft_reference.py with karpathy/nanochat master (2026)",
        "recipe": "training/recipes/tiny-sft-2026.yaml", "conversations": len(data), "cases": cases,
    }  # fmt: skip
    (HERE / "nanochat2026_sft_reference.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
