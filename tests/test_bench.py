"""Every benchmark runs at its smallest settings and prints its reference/ours/ratio table.

Smoke tests against bit-rot only: the figures are in `bench/README.md`, and nothing here asserts a speed (timings on
a shared CI box are noise). What is asserted is what the scripts compute exactly: ids equal, losses equal, FLOPs.
All slow (`bash scripts/test.sh --slow`): together about 2.5 minutes on a quiet 2-core machine. The time limit is
generous on purpose (a shared machine ran them ten times slower): it catches a hang, not a slow run.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIMIT = 3600  # seconds per script; see the docstring
pytestmark = pytest.mark.slow


def bench(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=LIMIT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def table(out: str, title: str) -> list[dict]:
    """The markdown table printed after the `## title...` line, as dicts of strings."""
    lines = out[out.index(f"## {title}"):].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| "))
    columns = [c.strip() for c in lines[header].strip("|").split("|")]
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("| "):
            break
        rows.append(dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


def positive(value: str) -> bool:
    return float(value) > 0


def test_train_step():
    out = bench("bench_train_step.py", "--steps", "2", "--warmup", "1", "--memory-repeats", "1",
                "--variants", "sdpa", "--checkpointing-modes", "off", "--batch", "2", "--seq", "32",
                "--batching", "padded,padding-free")
    padded, padding_free = table(out, "training step")
    assert padded["batch"] == "padded" and padding_free["batch"].startswith("padding-free, ")
    assert 16 <= int(padding_free["batch"].split(", ")[1].split()[0]) <= 64  # 2 rows of 8-32 tokens
    for row in (padded, padding_free):
        assert all(positive(row[c]) for c in ("native tok/s", "akshara tok/s", "speed ratio", "memory ratio"))


def test_generation():
    out = bench("bench_generation.py", "--rounds", "1", "--prompt", "8", "--new", "3")
    rows = table(out, "generation")
    assert [(r["batch"], r["reference"]) for r in rows] == [
        ("1", "native"), ("1", "akshara, no cache"), ("8", "native"), ("8", "akshara, no cache")]
    assert all(positive(r["prefill ratio"]) and positive(r["decode ratio"]) for r in rows)


def test_optimizer():
    out = bench("bench_optimizer.py", "--steps", "1", "--batch", "1", "--seq", "32")
    rows = table(out, "optimizer")
    assert rows[0]["reference"] == "AdamW" and positive(rows[0]["ratio"])
    # Optimizer and full step are timed separately (median of --steps), so on a loaded machine one step's "fraction"
    # can exceed 1 (1.44 seen); the test checks the figure is printed and sane, bench/README.md holds measured ones.
    assert 0 < float(out.split("optimizer fraction of the training step: ")[1].split()[0]) < 10


def test_flops_reproduce_the_seeds_totals():
    out = bench("bench_flops.py", "--steps", "1", "--batch", "1", "--seq", "32")
    assert "d20 FLOPs per token at sequence 2048: 3,491,758,080" in out
    seeds = table(out, "FLOPs: our formula")
    assert seeds[0]["ours FLOPs"] == "479,639,957,384,724,480"  # the seed log prints ...500 (a float)
    assert float(seeds[1]["ratio"]) == pytest.approx(1, abs=2e-4)  # the write-up rounds to 1.917 EFLOP
    assert positive(table(out, "achieved model FLOP/s")[0]["achieved TFLOP/s"])


def test_sft_batching_padding_free_trains_on_the_same_rows():
    out = bench("bench_sft_batching.py", "--dist", "mixture", "--steps", "2", "--no-packing", "--vocab", "512")
    reference, padding_free = table(out, "SFT batching")
    assert float(padding_free["pad fraction"]) == 0 < float(reference["pad fraction"])
    assert padding_free["loss"] == reference["loss"]  # same rows, same order: same losses (as printed)


@pytest.mark.slow  # a minute on a loaded 2-core machine (the mixture build and TRL's imports)
def test_bos_packing_places_every_conversation():
    out = bench("bench_bos_packing.py", "--copies", "1", "--lengths", "64", "--batch", "4")
    line = next(line for line in out.splitlines() if line.startswith("max_length 64:"))
    placed = int(line.split(" conversations placed")[0].split(", ")[-1])
    assert "63 conversations;" in out and placed >= 63  # the epoch's, and the last row filled from the buffer


def test_tokenizer_ids_checked_equal():
    out = bench("bench_tokenizer.py", "--mb", "0.05", "--steps", "1", "--chunk", "50", "--vocab", "512",
                "--large-vocab", "1024", "--corpus-mb", "0.3")
    assert out.count("ids equal to tiktoken's") == 2
    assert len(table(out, "encode throughput")) == 10


def test_mixture_memory():
    out = bench("bench_mixture.py", "--rows", "2000")
    assert "ratio ours/reference, above the baseline" in out and "2,000 conversations" in out


def test_gpu_script_runs_tiny_on_cpu():
    """`bench/gpu.sh --tiny`: every part of the GPU table at the CPU shape (compiled rows on Dynamo's eager backend)."""
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--tiny"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=LIMIT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    rows = table(done.stdout, "GPU benchmark")
    assert [(r["measurement"].split(",")[0], r["config"]) for r in rows] == [
        ("train step", "sdpa, eager"), ("train step", "sdpa, compiled"),
        ("memory", "MuonAdamW (seed SFT LRs), sdpa, eager"), ("memory", "MuonAdamW (seed SFT LRs), sdpa, eager"),
        ("SFT", "pad-to-longest (reference), sdpa"), ("SFT", "padding-free, sdpa"),
        ("decode", "dynamic cache, eager (reference)"), ("decode", "static cache, compiled"),
        ("decode", "dynamic cache, eager (reference)"), ("decode", "static cache, compiled"),
    ]  # flash_attention_2 is not installed on CPU: its rows are left out
    assert [r["measurement"] for r in rows[6::2]] == [
        "decode, batch 1, prompt 8, 4 new", "decode, batch 32, prompt 8, 4 new"]
    assert [r["measurement"] for r in rows[2:4]] == ["memory, 1 x 32", "memory, 2 x 32"]
    assert all(positive(row["tok/s"]) for row in rows[2:4])
    for row in rows[:2] + rows[4:6]:
        assert positive(row["tok/s"])
        assert float(row["projection"].split(": ")[1].removesuffix(" h")) > 0
    assert rows[0]["projection"].startswith("mid-v1 (1,047 x 524,288 tok)")
    assert rows[4]["projection"].startswith("v1 SFT (45,102 x 32 conv)") and rows[4]["ratio"] == "1"
    assert "flash_attention_2: not installed, skipped" in done.stdout


@pytest.mark.slow
def test_d20_step_memory_table_runs_tiny():
    """`bench_d20_step.py --tiny`: one step of the seed SFT recipe in two fresh processes, and the GPU batch table."""
    out = bench("bench_d20_step.py", "--tiny")
    steps = table(out, "one optimizer step of nanochat-telugu-d20-sft-v1.yaml")
    assert [row["micro-batch"] for row in steps] == ["1 x 16", "1 x 32"]
    assert all(positive(row["loss"]) and positive(row["fwd+bwd peak GiB"]) for row in steps)
    cards = table(out, "device batch (rows of 2048 tokens) that fits")
    assert [row["card"] for row in cards] == ["A30 (24 GB)", "A100 / H100 (80 GB)"]
    assert int(cards[1]["device batch that fits"]) >= int(cards[0]["device batch that fits"]) >= 0


def test_nanochat_comparison_needs_a_nanochat_checkout(tmp_path):
    """bench_nanochat.py imports nanochat from a checkout the user supplies (the project ships none): anything else is
    a one-line error. Its figures are in bench/README.md."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_nanochat.py"), "--nanochat-src", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=LIMIT)
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [
        f"bench_nanochat.py: error: {tmp_path}: not a nanochat checkout (no nanochat/gpt.py)"]


def test_nanochat2026():
    out = bench("bench_nanochat2026.py", "--rounds", "1", "--new", "2", "--batch", "1", "--sequence-len", "512")
    rows = table(out, "nanochat 2026 vs late 2025")
    assert [(r["what"], r["reference"]) for r in rows] == [
        ("forward tok/s", "late-2025"), ("forward tok/s", "2026, no windows"), ("decode tok/s", "late-2025"),
        ("decode tok/s", "2026, no windows"), ("KV cache bytes", "late-2025"), ("KV cache bytes", "2026, no windows")]
    assert all(positive(r["ratio"]) for r in rows)
    # input = 4 x the short window (512): each of the 3 sliding layers of 4 caches its last 128 keys (the 129th is the
    # next query's own), the full layer all 512
    assert float(rows[-1]["ratio"]) == pytest.approx((1 + 3 * 128 / 512) / 4, abs=1e-3)


def test_threads_compares_the_settings_alone_and_beside_busy_processes():
    out = bench("bench_threads.py", "--rounds", "1", "--busy", "1", "--seconds", "0.1", "--settings",
                "torch default,akshara")
    rows = table(out, "CPU threads beside busy processes")
    assert [(r["condition"], r["setting"]) for r in rows] == [
        ("alone", "torch default"), ("alone", "akshara"), ("beside 1 busy", "torch default"), ("beside 1 busy", "akshara")]
    assert rows[0]["x torch default alone (median)"] == "1"  # the reference of its round
    assert all(positive(r["s/step median"]) for r in rows)


def test_first_hour_times_every_help():
    rows = table(bench("bench_first_hour.py", "--only", "help", "--rounds", "1"), "First hour")
    assert [r["what"] for r in rows] == ["akshara-hf --help", "akshara-hf demo --help", "python training/sft.py --help",
                                         "python training/mid_train.py --help"]
    assert all(positive(r["seconds (median)"]) for r in rows)


def test_compiled_decode():
    out = bench("bench_compiled_decode.py", "--depths", "1", "--vocab", "256", "--prompt", "4", "--new", "3",
                "--rounds", "1")
    (row,) = table(out, "frozen compiled decoding vs plain generate")
    assert row["depth"] == "1" and positive(row["speed ratio"]) and positive(row["first compiled call s"])
    assert row["same tokens"] in ("True", "False") and row["calls to break even"]


def test_vllm_comparison_needs_the_vllm_environment(tmp_path):
    """bench_vllm.py starts vLLM from the environment scripts/test_vllm.sh builds; without it, one line and no server
    (the lead runs the comparison on a quiet machine; figures in bench/README.md)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_vllm.py"), "--vllm-python", str(tmp_path / "nope")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=LIMIT)  # fmt: skip
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [
        f"bench_vllm.py: error: {tmp_path / 'nope'}: no vLLM environment (bash scripts/test_vllm.sh builds it)"]
