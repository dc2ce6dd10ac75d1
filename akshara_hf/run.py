"""One training run from a recipe: what `training/mid_train.py`, `training/sft.py` and the demo call.

A recipe is one YAML file: `AksharaSFTConfig` fields (TRL's `SFTConfig` plus nanochat's optimizer fields), the
`AksharaRunArguments` below, and the `data:` section read by `akshara_hf.data` (paths relative to the recipe). CLI
flags override the YAML (`--config RECIPE --max_steps 10`). Stages:
  - "sft": conversations rendered with nanochat's mask, pad-to-longest batches (or TRL's padding-free/packing);
  - "mid": conversations rendered and concatenated into rows of `max_seq_len + 1`, every token a target;
  - "base": every message text as a plain document (`<|bos|>` + text), packed like "mid" (the demo's base stage).
The output folder is an HF model folder (as is every `checkpoint-*` inside it) with `run_facts.json`, `log.jsonl`
and a model card.
"""

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AksharaError

STAGES = ("base", "mid", "sft")


@dataclass
class AksharaRunArguments:
    """Run-level recipe keys (everything that is not a trainer setting)."""

    stage: str = field(default="sft", metadata={"help": "base | mid | sft", "choices": list(STAGES)})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "HF folder or Hub id, or a nanochat checkpoint dir (converted first)."}
    )
    model_config: dict | str | None = field(
        default=None, metadata={"help": "Train a new model: AksharaConfig fields, or {'depth': N} for nanochat's rule."}
    )
    tokenizer_name_or_path: str | None = field(default=None, metadata={"help": "Default: the model's own tokenizer."})
    data: dict | str | None = field(default=None, metadata={"help": "The data section (read from the recipe file)."})
    mixture_dir: str | None = field(default=None, metadata={"help": "A prebuilt build-mixture output to train on."})
    max_seq_len: int = field(default=2048, metadata={"help": "mid/base: tokens per row (nanochat's max_seq_len)."})
    eval_tokens: int | None = field(default=None, metadata={"help": "mid/base: validation tokens per evaluation."})
    hardware: str | None = field(default=None, metadata={"help": "Recorded in run_facts.json (default: detected)."})
    base_model: str | None = field(default=None, metadata={"help": "Parent checkpoint name for the model card."})


def _recipe_path(argv: list[str]) -> Path | None:
    return Path(argv[argv.index("--config") + 1]) if "--config" in argv else None


def _load_model_and_tokenizer(run, output_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .configuration_akshara import AksharaConfig
    from .convert import convert_nanochat
    from .modeling_akshara import AksharaForCausalLM

    source = run.model_name_or_path
    if source and Path(source).is_dir() and any(Path(source).glob("model_*.pt")):
        source = str(convert_nanochat(source, output_dir / "converted_base", run.tokenizer_name_or_path))
    tokenizer_source = run.tokenizer_name_or_path if run.tokenizer_name_or_path and run.model_config else source
    if tokenizer_source is None:
        raise AksharaError("the recipe needs model_name_or_path, or model_config with tokenizer_name_or_path")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    except (OSError, ValueError) as error:
        raise AksharaError(f"{tokenizer_source}: cannot load a tokenizer ({str(error).splitlines()[0]})") from None
    if run.model_config is not None:
        spec = json.loads(run.model_config) if isinstance(run.model_config, str) else dict(run.model_config)
        spec.setdefault("vocab_size", len(tokenizer))
        spec.setdefault("max_position_embeddings", run.max_seq_len)
        config = AksharaConfig.from_depth(**spec) if "depth" in spec else AksharaConfig(**spec)
        if config.vocab_size != len(tokenizer):
            raise AksharaError(f"model_config vocab_size {config.vocab_size} != tokenizer size {len(tokenizer)}")
        return AksharaForCausalLM(config), tokenizer
    if source is None:
        raise AksharaError("the recipe needs model_name_or_path or model_config")
    try:
        return AutoModelForCausalLM.from_pretrained(source, trust_remote_code=True), tokenizer
    except (OSError, ValueError) as error:
        raise AksharaError(f"{source}: cannot load a model ({str(error).splitlines()[0]})") from None


def _mixture(run, recipe: Path | None, output_dir: Path, tokenizer):
    from datasets import load_from_disk

    from .data.mixture import build_mixture

    if run.mixture_dir:
        return load_from_disk(run.mixture_dir)
    if recipe is None or run.data is None:
        raise AksharaError("no data: give the recipe a data: section (and --config RECIPE) or mixture_dir")
    return build_mixture(recipe, output_dir / "mixture", tokenizer=tokenizer)


def _documents(conversations):
    """The base stage's plain text: each message's text as its own document."""
    from datasets import Dataset

    def texts():
        for messages in conversations["messages"]:
            for message in messages:
                content = message["content"]
                yield {"text": content if isinstance(content, str) else "".join(p["text"] for p in content)}

    return Dataset.from_generator(texts)


def _tokenize(stage: str, split, tokenizer, max_seq_len: int, max_length: int | None):
    from .chat import render_conversation
    from .packing import pack_conversations, pack_documents

    if stage == "sft":
        def render(example):
            ids, mask = render_conversation(example["messages"], tokenizer, max_tokens=max_length or 2048)
            return {"input_ids": ids, "assistant_masks": mask}

        rows = split.map(render, remove_columns=split.column_names, desc="rendering conversations")
        # A conversation whose assistant tokens all lie beyond max_length has nothing to learn from; TRL drops such
        # rows only when it truncates itself (not with padding_free / max_length None), and a micro-batch made only of
        # them would give a NaN loss (nanochat's too). Drop them here, always, and say how many.
        kept = rows.filter(lambda row: any(row["assistant_masks"]), desc="dropping rows without targets")
        if len(kept) < len(rows):
            print(f"{len(rows) - len(kept)} of {len(rows)} conversations have no assistant token within "
                  f"{max_length or 2048} tokens; dropped", file=sys.stderr)
        return kept
    if stage == "mid":
        return pack_conversations(split, tokenizer, max_seq_len)
    return pack_documents(_documents(split), tokenizer, max_seq_len)


def train(argv: list[str] | None = None, stage: str | None = None, card_writer=None) -> Path:
    """Run one recipe; returns the output folder. `card_writer(output_dir, facts=...)` writes its model card: the
    training scripts pass `model_card.write_model_card` (this package does not import model_card, which imports it)."""
    import torch
    from transformers import GenerationConfig

    from .chat import generation_config_kwargs
    from .trainer import MuonSFTTrainer, check_akshara_model, parse_config
    from .training_log import JsonlLogCallback, run_facts

    argv = list(sys.argv[1:] if argv is None else argv)
    if stage is not None and "--stage" not in argv:
        argv += ["--stage", stage]
    recipe = _recipe_path(argv)
    args, run = parse_config(argv, AksharaRunArguments)
    if run.stage in ("mid", "base"):
        if args.schedule != "mid":
            raise AksharaError(f"stage {run.stage} uses schedule: mid (got {args.schedule})")
        args.max_length = run.max_seq_len + 1  # rows carry one extra token: the last target
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    model, tokenizer = _load_model_and_tokenizer(run, output_dir)
    check_akshara_model(model)  # before any data is built
    model.generation_config = GenerationConfig(**generation_config_kwargs(tokenizer))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.config, key, getattr(model.generation_config, key))
    mixture = _mixture(run, recipe, output_dir, tokenizer)
    train_rows = _tokenize(run.stage, mixture["train"], tokenizer, run.max_seq_len, args.max_length)
    eval_rows = _tokenize(run.stage, mixture["validation"], tokenizer, run.max_seq_len, args.max_length)
    if run.eval_tokens is not None and run.stage != "sft":
        eval_rows = eval_rows.select(range(min(len(eval_rows), max(1, run.eval_tokens // run.max_seq_len))))
    if args.eval_strategy != "no" and len(eval_rows) == 0:
        raise AksharaError("the validation split is empty; set validation_fraction in the data section")
    seq_len = run.max_seq_len if run.stage != "sft" else args.max_length or 2048
    if run.stage == "sft" and args.padding_free and not args.packing:
        # The rows are cut to max_length above; TRL refuses padding_free with a max_length (it would not enforce it).
        args.max_length = None

    trainer = MuonSFTTrainer(
        model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows if len(eval_rows) else None,
        processing_class=tokenizer,
        callbacks=[JsonlLogCallback(output_dir / "log.jsonl")],
    )
    started = time.time()
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    elapsed = time.time() - started
    final_eval = trainer.evaluate() if len(eval_rows) else {}
    trainer.save_model(str(output_dir))
    facts = run_facts(trainer, run, mixture, elapsed, final_eval, torch, seq_len)
    (output_dir / "run_facts.json").write_text(json.dumps(facts, indent=2, ensure_ascii=False))
    if card_writer is not None:
        card_writer(output_dir, facts=facts)
    return output_dir


def main(stage: str, card_writer=None) -> int:
    try:
        print(train(stage=stage, card_writer=card_writer))
        return 0
    except AksharaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
