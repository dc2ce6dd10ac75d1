"""SFT batching: supervised tokens per second and pad fraction of nanochat's pad-to-longest batches (the reference,
`MuonSFTTrainer`'s default) against TRL's padding-free batches and `packing=True` (best-fit decreasing), measured
through real `MuonSFTTrainer` training steps on the same random nanochat weights.

Pad-to-longest spends compute on `<|assistant_end|>` pads whenever a batch mixes short and long conversations;
padding-free concatenates the same rows into one sequence with reset `position_ids` and `cu_seq_lens_*` (no pads;
on SDPA the model runs one causal SDPA per conversation, on eager a block-diagonal mask over the concatenation);
packing fills rows of `max_length` from several conversations. Which wins depends on the length distribution, hence two:

- `mixture`: the shipped `training/recipes/tiny-sft.yaml` mixture, rendered with `render_conversation` by a tokenizer
  trained on the mixture's own text (`--vocab` ids; the sample text is too small for much more than 1.6k), rows cut to
  the recipe's `max_length` (1024).
- `v1`: synthetic rows shaped like the v1 SFT mixture (~1.44M conversations, dominated by short paraphrase and news
  title pairs, a tail of stories, chats and article/summary tasks). Shares and token lengths below are assumptions
  chosen to look like that mixture, not counts from it; rows are cut at 2048 (nanochat's SFT length).

Rows are cut to `max_length` here, before TRL sees them: TRL refuses `padding_free=True` with a `max_length` (it would
not truncate), so that config runs with `max_length=None`. Packed micro-batches hold about as many tokens as the
padding-free ones (`round(batch x mean length / max_length)` rows), which TRL also flattens into one sequence.

Each round trains every config once, in a rotated order (so a change in the machine's load hits them alike), each a
fresh model with the same weights for `--warmup + --steps` optimizer steps; the round's seed orders the rows, so
pad-to-longest and padding-free train on the same rows in the same order (their losses agree). A step is timed from the
previous step's end to its own (data loading and collation included). Supervised tokens are targets (labels != -100
after the shift); pad fraction is pad tokens / all tokens fed to the model. Usage:
    python bench/bench_sft_batching.py [--shape cpu|d20] [--rounds R] [--steps N] [--batch B] [--dist mixture v1]
"""

import argparse
import contextlib
import io
import math
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import torch  # noqa: E402
import transformers  # noqa: E402
from common import SHAPES, environment, print_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "training" / "recipes" / "tiny-sft.yaml"

# v1-shaped synthetic mixture: (component, share of rows, (prompt median, prompt spread), (reply median, reply
# spread)); token lengths are log-normal (median, sigma), each part clipped to [4, 2048].
V1_COMPONENTS = (
    ("paraphrase", 0.55, (30, 0.4), (30, 0.4)),  # sentence -> paraphrase
    ("news title", 0.20, (350, 0.6), (20, 0.4)),  # article -> title (short target, long prompt)
    ("stories", 0.14, (40, 0.4), (350, 0.5)),  # prompt -> story
    ("news article", 0.05, (20, 0.4), (450, 0.6)),  # title -> article
    ("summaries", 0.04, (800, 0.5), (90, 0.5)),  # TeSum / XL-Sum: article -> summary
    ("smoltalk", 0.02, (120, 0.8), (350, 0.7)),  # general chats (one exchange here)
)


def message_texts(conversations) -> list[str]:
    """Every message's text (assistant parts included), the tokenizer's training text."""
    texts = []
    for messages in conversations:
        for message in messages:
            content = message["content"]
            texts.extend([content] if isinstance(content, str) else [part["text"] for part in content])
    return texts


def mixture_rows(vocab_size: int, max_length: int) -> tuple[list[dict], object]:
    """The tiny-sft train split rendered by a tokenizer trained on the mixture's text."""
    import datasets

    from akshara_hf.tokenization.chat import render_conversation
    from akshara_hf.data.mixture import build_mixture
    from akshara_hf.tokenization.tokenizer import train_tokenizer

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):  # the mixture report
            mixture = build_mixture(RECIPE, Path(tmp) / "mixture")
        conversations = list(mixture["train"]["messages"]) + list(mixture["validation"]["messages"])
        train = list(mixture["train"]["messages"])
    tokenizer = train_tokenizer(message_texts(conversations), vocab_size)
    rows = []
    for messages in train:
        ids, mask = render_conversation(messages, tokenizer, max_tokens=max_length)
        rows.append({"input_ids": ids, "assistant_masks": mask})
    return supervised_only(rows), tokenizer


def v1_rows(tokenizer, n: int, max_length: int, seed: int = 0) -> list[dict]:
    """`n` synthetic rows drawn from `V1_COMPONENTS`: bos, user turn, assistant turn, random ordinary token ids."""
    from akshara_hf.tokenization.chat import special_token_ids

    special = special_token_ids(tokenizer)
    ordinary = min(special.values())  # special ids sit after the ranks
    rng = random.Random(seed)
    shares = [share for _, share, _, _ in V1_COMPONENTS]

    def length(median, sigma):
        return max(4, min(2048, round(rng.lognormvariate(math.log(median), sigma))))

    rows = []
    while len(rows) < n:
        _, _, prompt, reply = rng.choices(V1_COMPONENTS, weights=shares)[0]
        user = [rng.randrange(ordinary) for _ in range(length(*prompt))]
        answer = [rng.randrange(ordinary) for _ in range(length(*reply))]
        ids = [special["<|bos|>"], special["<|user_start|>"], *user, special["<|user_end|>"],
               special["<|assistant_start|>"], *answer, special["<|assistant_end|>"]]
        mask = [0] * (len(user) + 4) + [1] * (len(answer) + 1)
        if any(mask[:max_length]):  # see `supervised_only`
            rows.append({"input_ids": ids[:max_length], "assistant_masks": mask[:max_length]})
    return rows


def supervised_only(rows: list[dict]) -> list[dict]:
    """Rows with a target left after truncation. TRL drops the others only when it truncates (`max_length` set, no
    packing), so with them in, padding-free would train on other rows in another order than pad-to-longest."""
    return [row for row in rows if any(row["assistant_masks"])]


def length_summary(rows: list[dict]) -> str:
    lengths = sorted(len(row["input_ids"]) for row in rows)
    supervised = sum(sum(row["assistant_masks"]) for row in rows) / sum(lengths)
    quantile = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
    return (f"{len(lengths)} rows, tokens min {lengths[0]} / median {quantile(0.5)} / mean "
            f"{statistics.mean(lengths):.0f} / p90 {quantile(0.9)} / max {lengths[-1]}, {supervised:.0%} supervised")


def run_config(rows: list[dict], tokenizer, shape: dict, args, steps: int, overrides: dict, seed: int) -> dict:
    """Train a fresh model through `MuonSFTTrainer` for warmup + steps optimizer steps (rows in the order of `seed`);
    return the timed steps' seconds and their [supervised, pad, all] token counts."""
    from bench_train_step import build
    from datasets import Dataset
    from dist_train_script import tiny_config
    from transformers import TrainerCallback

    from akshara_hf.training.trainer import MuonSFTTrainer

    tallies = []  # per optimizer step: [supervised, pads, all tokens]

    class Counting(MuonSFTTrainer):
        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches, count = super().get_batch_samples(epoch_iterator, num_batches, device)
            tally = [0, 0, 0]
            for batch in batches:
                tokens = batch["input_ids"].numel()
                real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else tokens
                tally[0] += int((batch["labels"][:, 1:] != -100).sum())
                tally[1] += tokens - real
                tally[2] += tokens
            tallies.append(tally)
            return batches, count

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_train_begin(self, *_, **__):
            self.ends.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            if torch.cuda.is_available():  # the step's kernels are queued, not done, when the Trainer returns
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

    torch.manual_seed(0)
    model = build("akshara", shape, args.attn, torch.float32, "cpu")
    clock = StepClock()
    batch = overrides.pop("per_device_train_batch_size", args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        config = tiny_config(
            tmp, max_steps=args.warmup + steps, per_device_train_batch_size=batch,
            target_examples_per_step=batch * args.accum, logging_steps=10_000, train_sampling_strategy="random",
            seed=seed, **overrides,
        )  # fmt: skip
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the final metrics dict
            warnings.simplefilter("ignore")
            trainer = Counting(model, config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                               callbacks=[clock])
            loss = trainer.train().training_loss
    return {"rows/micro-batch": batch, "times": [b - a for a, b in zip(clock.ends, clock.ends[1:])][args.warmup:],
            "tallies": tallies[args.warmup:], "loss": loss}


def summarize(name: str, runs: list[dict]) -> dict:
    times = [t for run in runs for t in run["times"]]
    supervised, pads, tokens = (sum(tally[i] for run in runs for tally in run["tallies"]) for i in range(3))
    return {
        "config": name, "steps timed": len(times), "rows/micro-batch": runs[0]["rows/micro-batch"],
        "supervised tok/s": supervised / sum(times), "all tok/s": tokens / sum(times), "pad fraction": pads / tokens,
        "s/step (median)": statistics.median(times), "loss": statistics.mean(run["loss"] for run in runs),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="cpu", choices=SHAPES)
    parser.add_argument("--steps", type=int, help="timed optimizer steps per config and round; default: one epoch "
                        "of pad-to-longest micro-batches for mixture (15), 4 for v1")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps of each run")
    parser.add_argument("--rounds", type=int, default=1, help="runs per config, interleaved, each with its own order")
    parser.add_argument("--batch", type=int, default=8, help="rows per micro-batch (pad-to-longest, padding-free)")
    parser.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--vocab", type=int, default=1024, help="ids of the tokenizer trained on the mixture")
    parser.add_argument("--v1-rows", type=int, default=2000, help="rows of the synthetic v1-shaped mixture")
    parser.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"))
    parser.add_argument("--dist", nargs="+", default=["mixture", "v1"], choices=("mixture", "v1"))
    parser.add_argument("--no-packing", action="store_true", help="skip the packing config")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()  # pad/bos alignment notices, once per config
    shape = SHAPES[args.shape]
    mixture, tokenizer = mixture_rows(args.vocab, max_length=1024)
    if len(tokenizer) > shape["vocab_size"]:
        parser.error(f"--vocab {args.vocab} exceeds the model's {shape['vocab_size']} ids")
    data = {"mixture": (mixture, 1024), "v1": (v1_rows(tokenizer, args.v1_rows, 2048), 2048)}
    env = environment(torch.float32, "cpu") | {"attn": args.attn, "trl": __import__("trl").__version__}

    for dist in args.dist:
        rows, max_length = data[dist]
        steps = args.steps or (math.ceil(len(rows) / (args.batch * args.accum)) if dist == "mixture" else 4)
        load_before = os.getloadavg()[0]  # timings on a shared machine are only as good as its idleness
        print(f"\n{dist}: {length_summary(rows)}", flush=True)
        mean = statistics.mean(len(row["input_ids"]) for row in rows)
        # Packed micro-batches of about the padding-free one's tokens (TRL flattens them into one sequence too).
        pack_batch = max(1, round(args.batch * mean / max_length))
        configs = {
            "pad-to-longest (reference)": {"max_length": max_length},
            "padding_free=True": {"padding_free": True, "max_length": None},
        }
        if not args.no_packing:
            configs[f"packing=True, bfd, {max_length}/row"] = {
                "packing": True, "packing_strategy": "bfd", "max_length": max_length,
                "per_device_train_batch_size": pack_batch,
            }  # fmt: skip
        # Rounds interleave the configs (in a rotated order) so that a change in the machine's load hits them alike.
        runs = {name: [] for name in configs}
        for round_ in range(args.rounds):
            names = list(configs)[round_ % len(configs):] + list(configs)[: round_ % len(configs)]
            for name in names:
                runs[name].append(run_config(rows, tokenizer, shape, args, steps, dict(configs[name]), seed=round_))
        results = [summarize(name, runs[name]) for name in configs]
        reference = results[0]["supervised tok/s"]
        per_round = lambda run: sum(t[0] for t in run["tallies"]) / sum(run["times"])  # noqa: E731
        for row, name in zip(results, configs):
            row["ratio vs pad-to-longest"] = row["supervised tok/s"] / reference
            ratios = [per_round(ours) / per_round(ref) for ours, ref in zip(runs[name], runs[list(configs)[0]])]
            row["ratio range over rounds"] = f"{min(ratios):.2f}-{max(ratios):.2f}"
        title = (f"SFT batching, {dist} lengths, shape {args.shape}, {args.accum} micro-batch(es)/step, "
                 f"{args.rounds} round(s) x {steps} timed steps after {args.warmup} warm-up")
        load = f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
        print_table(title, env | {"load avg (1 min)": load}, results, list(results[0]))
        print(f"removing the pads alone, at equal cost per token: at most 1 / (1 - {results[0]['pad fraction']:.3f}) = "
              f"{1 / (1 - results[0]['pad fraction']):.2f}x")


if __name__ == "__main__":
    main()
