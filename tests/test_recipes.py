"""The seed runs' recipes: each parses into the trainer settings of `docs/akshara-runs.md`."""

import json
from pathlib import Path

import pytest

from akshara_hf.errors import AksharaError
from akshara_hf.training.run import AksharaRunArguments
from akshara_hf.training.trainer import parse_config

RECIPES = Path(__file__).parents[1] / "training" / "recipes"
MID_PARENT = "nanochat-telugu-d20-mid-smoltalk-100k"

# run -> (stage, parent, device batch, source kinds) from the runs table; every run: 1 GPU, bf16, base LRs 0.02/0.2/0.004.
SEED_RUNS = {
    "nanochat-telugu-d20-mid-smoltalk-100k": ("mid", "nanochat-telugu-d20-base", 4, ["smoltalk"]),
    "nanochat-telugu-d20-mid-v1-akshara": (
        "mid", "nanochat-telugu-d20-base", 2,
        ["smoltalk", "news", "tesum", "xlsum", "paraphrase", "stories", "identity"],
    ),
    "nanochat-telugu-d20-sft-smoltalk-10k": ("sft", MID_PARENT, 2, ["smoltalk"]),
    "nanochat-telugu-d20-sft-summary": ("sft", MID_PARENT, 2, ["tesum"]),
    "nanochat-telugu-d20-sft-paraphrase": ("sft", MID_PARENT, 2, ["paraphrase"]),
    "nanochat-telugu-d20-sft-smoltalk-news-articles": ("sft", MID_PARENT, 2, ["news"]),
    "nanochat-telugu-d20-sft-smoltalk-stories": ("sft", MID_PARENT, 2, ["stories"]),
    "nanochat-telugu-d20-sft-v1": (
        "sft", "nanochat-telugu-d20-mid-v1-akshara", 2,
        ["smoltalk", "identity", "paraphrase", "news", "tesum", "xlsum", "stories"],
    ),
}


def test_one_recipe_per_seed_run():
    assert sorted(p.stem for p in RECIPES.glob("nanochat-*.yaml")) == sorted(SEED_RUNS)


@pytest.mark.parametrize("name", sorted(SEED_RUNS))
def test_seed_recipe_has_the_seed_numbers(name):
    stage, parent, device_batch, kinds = SEED_RUNS[name]
    # bf16 is the seeds' dtype; on this CPU-only machine the Trainer accepts it only with use_cpu (next test).
    args, run = parse_config(["--config", str(RECIPES / f"{name}.yaml"), "--use_cpu", "true"], AksharaRunArguments)
    assert args.stage == stage and run.base_model == parent and args.bf16
    assert (args.matrix_lr, args.embedding_lr, args.unembedding_lr, args.weight_decay) == (0.02, 0.2, 0.004, 0.0)
    assert args.per_device_train_batch_size == device_batch and args.num_train_epochs == 1
    assert [source.kind for source in run.data.sources] == kinds
    identity = [s for s in run.data.sources if s.kind == "identity"]
    if stage == "mid":
        tokens_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * run.max_seq_len
        assert tokens_per_step == 524_288 and run.max_seq_len == 2048
        assert (args.schedule, args.init_lr_frac, args.muon_momentum_warmup_steps) == ("mid", 1.0, 300)
        assert (args.eval_steps, args.eval_bpb, run.eval_tokens) == (150, True, 10_485_760)
        assert args.learning_rate == 0.02
        assert all(s.repeat == 2 for s in identity)  # identity included twice in the mid mixture
    else:
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 32
        assert (args.schedule, args.init_lr_frac, args.muon_momentum_warmup_steps) == ("sft", 0.02, 0)
        assert args.eval_steps == 100 and args.max_length == 2048
        assert args.learning_rate == pytest.approx(0.02 * 0.02)
        assert run.model_name_or_path == f"runs/{parent}"
        assert all(s.repeat == 1 for s in identity)
        if any(s.kind == "smoltalk" for s in run.data.sources):
            assert next(s for s in run.data.sources if s.kind == "smoltalk").limit == 10_000


def test_seed_recipe_on_cpu_without_use_cpu_is_a_clear_error():
    with pytest.raises(AksharaError, match="bf16"):
        parse_config(["--config", str(RECIPES / "nanochat-telugu-d20-sft-v1.yaml")], AksharaRunArguments)



@pytest.fixture(scope="module")
def mixture_dir(tmp_path_factory):
    from akshara_hf.data.mixture import build_mixture

    out = tmp_path_factory.mktemp("mixture") / "tiny-sft"
    build_mixture(RECIPES / "tiny-sft.yaml", out)
    return out


@pytest.mark.parametrize("name", ["nanochat-telugu-d20-mid-v1-akshara", "nanochat-telugu-d20-sft-v1"])
def test_seed_recipe_runs_end_to_end_at_tiny_scale(name, tmp_path, mixture_dir):
    """The seed recipe itself through the runner, with only the scale overridden: a tiny nanochat checkpoint (converted
    on the fly, as the mid recipes expect), the shipped samples' mixture, CPU fp32, a few steps."""
    from model_fixtures import make_nanochat_run
    from transformers import AutoModelForCausalLM

    from akshara_hf.training.run import train

    _, checkpoints, _ = make_nanochat_run(tmp_path / "nanochat")
    stage = SEED_RUNS[name][0]
    scale = ["--max_seq_len", "64", "--eval_tokens", "256"] if stage == "mid" else ["--max_length", "128"]
    out = train([
        "--config", str(RECIPES / f"{name}.yaml"), "--model_name_or_path", str(checkpoints),
        "--mixture_dir", str(mixture_dir), "--output_dir", str(tmp_path / "run"), "--use_cpu", "true", "--bf16", "false",
        "--max_steps", "2", "--target_examples_per_step", "4", "--eval_steps", "1", "--save_steps", "2",
        "--disable_tqdm", "true", *scale,
    ])  # fmt: skip
    facts = json.loads((out / "run_facts.json").read_text())
    assert (facts["stage"], facts["num_steps"], facts["base_model"]) == (stage, 2, SEED_RUNS[name][1])
    assert facts["final_val_loss"] > 0
    if stage == "mid":  # bpb is the mid stage's metric; FLOPs as nanochat counts: per token x steps x 4 rows x 64
        assert facts["final_val_bpb"] > 0
        assert facts["total_batch_tokens"] == 256
        assert facts["total_flops"] == facts["flops_per_token"] * 2 * 256
    AutoModelForCausalLM.from_pretrained(out / "checkpoint-2", trust_remote_code=True)


def test_sft_recipe_with_padding_free_cuts_rows_and_trains(tmp_path, mixture_dir, capsys):
    """`--padding_free true` on an SFT recipe that sets max_length: the runner cuts the rows to max_length itself
    (TRL refuses padding_free with a max_length it would not enforce), and every micro-batch is one padding-free row."""
    from model_fixtures import make_nanochat_run

    from akshara_hf.training.run import train

    _, checkpoints, _ = make_nanochat_run(tmp_path / "nanochat")
    out = train([
        "--config", str(RECIPES / "nanochat-telugu-d20-sft-v1.yaml"), "--model_name_or_path", str(checkpoints),
        "--mixture_dir", str(mixture_dir), "--output_dir", str(tmp_path / "run"), "--use_cpu", "true", "--bf16", "false",
        "--max_steps", "2", "--target_examples_per_step", "4", "--eval_steps", "1", "--save_steps", "2",
        "--disable_tqdm", "true", "--max_length", "48", "--padding_free", "true",
    ])  # fmt: skip
    facts = json.loads((out / "run_facts.json").read_text())
    assert (facts["num_steps"], facts["max_seq_len"]) == (2, 48)
    assert facts["final_val_loss"] > 0
    # the mixture has conversations longer than 48 tokens: cut, and those with no assistant token left dropped
    assert "have no assistant token within 48 tokens; dropped" in capsys.readouterr().err
    # TRL counts the tokens it fed: 2 steps x 4 rows of at most 48
    assert 0 < facts["tokens_seen"] <= 2 * 4 * 48
