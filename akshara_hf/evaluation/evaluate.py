"""`akshara-hf evaluate`: validation loss / bits-per-byte and task scores (ROUGE, chrF) of a model folder.

Loss data is a dataset of conversations (`messages`) or plain text (`text`). For conversations the loss is the SFT
one (mean NLL over assistant targets, nanochat's mask) and bpb counts the same targets; `all_tokens=True` scores
every token instead, as mid-training's bpb does. Plain text is `<|bos|>` + text, every token a target.

Tasks are held-out rows of the seeds' tasks, read from a built mixture (`build-mixture` output, its `validation`
split by default) by their `source`: summarization = tesum / xlsum, paraphrase = paraphrase. The prompt is the
conversation minus its last (assistant) message, the reference is that message; replies are batched greedy decodes.
"""

import contextlib
import functools
import json
import math
from pathlib import Path

from akshara_hf.errors import AksharaError, one_line
from akshara_hf.progress import progress
from akshara_hf.tokenization.tokenizer import encode_ordinary

def _no_grad(function):
    """`torch.no_grad()` as a decorator, importing torch only when called (`akshara-hf --help` loads no torch)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return function(*args, **kwargs)
    return wrapper


TASK_SOURCES = {"summarization": ("tesum", "xlsum"), "paraphrase": ("paraphrase",)}


def _rows_for_loss(dataset, tokenizer, all_tokens: bool, max_tokens: int):
    from akshara_hf.tokenization.chat import render_conversation, special_token_ids

    bos = special_token_ids(tokenizer)["<|bos|>"]
    for index, example in enumerate(dataset):
        if "messages" in example:
            try:
                ids, mask = render_conversation(example["messages"], tokenizer, max_tokens=max_tokens)
            except AksharaError as error:
                raise AksharaError(f"row {index}: {error}") from None
            if all_tokens:
                mask = [1] * len(ids)
        elif "text" in example:
            ids = [bos, *encode_ordinary(tokenizer, [example["text"]])[0]]
            ids, mask = ids[:max_tokens], [1] * min(len(ids), max_tokens)
        else:
            raise AksharaError(f"row {index}: needs a 'messages' or a 'text' column (has {sorted(example)})")
        yield ids, mask


@_no_grad
def evaluate_loss(model, tokenizer, dataset, batch_size: int = 4, all_tokens: bool = False, max_tokens: int = 2048) -> dict:
    """Mean loss (nats/target) and bits-per-byte over the dataset's targets (see module docstring)."""
    import torch
    import torch.nn.functional as F

    from akshara_hf.evaluation.metrics import bits_per_byte, bpb_from_losses
    from akshara_hf.data.packing import token_byte_lengths

    token_bytes = torch.as_tensor(token_byte_lengths(tokenizer))
    device = next(model.parameters()).device
    model.eval()
    loss_sum, loss_count, bpb_nats, bpb_bytes = 0.0, 0, 0.0, 0
    rows = list(_rows_for_loss(dataset, tokenizer, all_tokens, max_tokens))
    with progress(len(rows), "evaluate: loss", "row") as bar:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.zeros(len(batch), width, dtype=torch.long)
            targets = torch.full((len(batch), width), -100, dtype=torch.long)
            attention = torch.zeros(len(batch), width, dtype=torch.long)
            for row, (ids, mask) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                targets[row, : len(ids)] = torch.tensor([i if m else -100 for i, m in zip(ids, mask)])
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
            shifted = targets[:, 1:].to(device)
            per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=-100,
                                        reduction="none")
            per_token = per_token.view_as(shifted)
            valid = shifted != -100
            loss_sum += float(per_token[valid].sum())
            loss_count += int(valid.sum())
            nats, num_bytes = bpb_from_losses(per_token.cpu(), shifted.cpu(), token_bytes)
            bpb_nats, bpb_bytes = bpb_nats + nats, bpb_bytes + num_bytes
            bar.update(len(batch))
    if loss_count == 0:
        raise AksharaError("the evaluation data has no targets")
    return {
        "loss": loss_sum / loss_count,
        "bpb": bits_per_byte(bpb_nats, bpb_bytes) if bpb_bytes else math.nan,
        "targets": loss_count,
        "bytes": bpb_bytes,
    }


@_no_grad
def generate_replies(model, tokenizer, prompts: list[list[dict]], batch_size: int = 8, max_new_tokens: int = 128,
                     desc: str = "evaluate: replies") -> list[str]:
    """Batched greedy replies to chat prompts, left-padded, rendered as nanochat renders them."""
    import torch

    from akshara_hf.tokenization.chat import generation_config_kwargs, render_for_generation

    special = generation_config_kwargs(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    replies = []
    with progress(len(prompts), desc, "reply") as bar:
        for start in range(0, len(prompts), batch_size):
            batch = [render_for_generation(messages, tokenizer) for messages in prompts[start : start + batch_size]]
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), special["pad_token_id"], dtype=torch.long)
            attention = torch.zeros(len(batch), width, dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=special["eos_token_id"],
                pad_token_id=special["pad_token_id"],
            )
            replies.extend(tokenizer.batch_decode(output[:, width:], skip_special_tokens=True))
            bar.update(len(batch))
    return [reply.strip() for reply in replies]


def _content_text(content) -> str:
    return content if isinstance(content, str) else "".join(part["text"] for part in content if part["type"] == "text")


def evaluate_tasks(model, tokenizer, dataset, tasks=("summarization", "paraphrase"), limit: int | None = None,
                   batch_size: int = 8, max_new_tokens: int = 128) -> dict:
    """Per task: ROUGE-1/2/L F1 and chrF (0..100) of greedy replies against the held-out references."""
    from akshara_hf.evaluation.metrics import score_pairs

    unknown = sorted(set(tasks) - set(TASK_SOURCES))
    if unknown:
        raise AksharaError(f"unknown task(s) {unknown}; known: {sorted(TASK_SOURCES)}")
    if "source" not in dataset.column_names:
        raise AksharaError("task evaluation needs a built mixture split (columns 'messages' and 'source')")
    results = {}
    for task in tasks:
        rows = dataset.filter(lambda source: source in TASK_SOURCES[task], input_columns="source")
        if limit is not None:
            rows = rows.select(range(min(limit, len(rows))))
        if len(rows) == 0:
            continue
        prompts = [messages[:-1] for messages in rows["messages"]]
        references = [_content_text(messages[-1]["content"]) for messages in rows["messages"]]
        predictions = generate_replies(model, tokenizer, prompts, batch_size, max_new_tokens, desc=f"evaluate: {task}")
        results[task] = {"rows": len(rows), "sources": sorted(set(rows["source"])), **score_pairs(predictions, references),
                         "examples": [{"reference": r, "prediction": p} for r, p in zip(references[:3], predictions[:3])]}
    return results


def results_markdown(results: dict) -> str:
    lines = []
    if "loss" in results:
        loss = results["loss"]
        lines += ["| split | targets | loss | bpb |", "|---|---|---|---|",
                  f"| {results.get('split', '')} | {loss['targets']} | {loss['loss']:.4f} | {loss['bpb']:.4f} |", ""]
    tasks = results.get("tasks", {})
    if tasks:
        lines += ["| task | rows | ROUGE-1 | ROUGE-2 | ROUGE-L | chrF |", "|---|---|---|---|---|---|"]
        lines += [f"| {task} | {r['rows']} | {r['rouge1']:.2f} | {r['rouge2']:.2f} | {r['rougeL']:.2f} | {r['chrf']:.2f} |"
                  for task, r in tasks.items()]
    return "\n".join(lines) + "\n"


def eval_results_for_card(results: dict, dataset_name: str) -> list[dict]:
    """`run_facts.json`'s `eval_results` entries (task, dataset, metric, value) for the model card's model-index."""
    out = []
    if "loss" in results:
        out += [{"task": "language-modeling", "dataset": dataset_name, "metric": "loss", "value": results["loss"]["loss"]},
                {"task": "language-modeling", "dataset": dataset_name, "metric": "bpb", "value": results["loss"]["bpb"]}]
    for task, r in results.get("tasks", {}).items():
        out += [{"task": task, "dataset": dataset_name, "metric": m, "value": r[m]} for m in ("rouge1", "rouge2", "rougeL", "chrf")]
    return out


def load_eval_data(path: str | Path, split: str):
    """A `save_to_disk` DatasetDict/Dataset folder, or a .jsonl/.json/.parquet file."""
    from akshara_hf.bounds import check_json_depth, regular_file, regular_tree

    path = Path(path)
    if not path.exists():
        raise AksharaError(f"{path}: no such file or folder")
    if path.is_dir():  # a named pipe here or inside would block the read forever
        regular_tree(path, depth=3)
    else:
        regular_file(path, "data file")
    kinds = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
    if not path.is_dir() and path.suffix not in kinds:
        raise AksharaError(f"{path}: expected a dataset folder or a .jsonl/.json/.parquet file")
    if path.is_file() and path.stat().st_size == 0:
        raise AksharaError(f"{path}: empty file")
    if path.is_file() and kinds[path.suffix] == "json":
        check_json_depth(path)
    with _quiet_datasets():
        return _load_eval_data(path, split, kinds)


@contextlib.contextmanager
def _quiet_datasets():
    """No `datasets` progress bars or logged errors: a broken file's error is our one line, and bars per split or
    filter of a few rows bury the results."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars, logging

    verbosity, bars_off = logging.get_verbosity(), are_progress_bars_disabled()
    logging.set_verbosity(logging.CRITICAL + 1)
    disable_progress_bars()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if not bars_off:
            enable_progress_bars()


def _load_eval_data(path: Path, split: str, kinds: dict):
    from datasets import DatasetDict, load_dataset, load_from_disk

    try:
        if path.is_dir():
            data = load_from_disk(str(path))
        else:
            data = load_dataset(kinds[path.suffix], data_files=str(path), split="train")
    except Exception as error:  # datasets, pyarrow and json raise many types for a broken file
        cause = error.__cause__ or error  # datasets wraps the reader's error in DatasetGenerationError
        raise AksharaError(f"{path}: cannot read it as a dataset ({type(cause).__name__}: {one_line(cause)})") from None
    if isinstance(data, DatasetDict):
        if split not in data:
            raise AksharaError(f"{path}: no split {split!r} (has {list(data)})")
        data = data[split]
    if len(data) == 0:
        raise AksharaError(f"{path}: no rows")
    return data


def evaluate(model_path, data, split="validation", tasks=("summarization", "paraphrase"), loss=True, all_tokens=False,
             limit=None, batch_size=8, max_new_tokens=128, output_dir=None, overwrite=False,
             trust_remote_code=False) -> dict:
    from akshara_hf.folders import check_output, staged_output
    from akshara_hf.loading import load_model_and_tokenizer

    for flag, value in (("--limit", limit), ("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens)):
        if value is not None and (type(value) is not int or value < 1):  # --limit -1 evaluated nothing, exit 0
            raise AksharaError(f"{flag} {value}: must be a positive integer")
    if output_dir is not None:  # refused before the (long) evaluation, checked again when writing
        check_output(output_dir, "evaluate", overwrite=overwrite, inputs=[model_path, data])

    unknown = sorted(set(tasks) - set(TASK_SOURCES))
    if unknown:
        raise AksharaError(f"--tasks: unknown task(s) {unknown}; known: {sorted(TASK_SOURCES)}")
    if not tasks and not loss:  # exited 0 having evaluated nothing
        raise AksharaError("nothing to evaluate: --no-loss with --tasks '' (give tasks, or drop --no-loss)")
    model, tokenizer = load_model_and_tokenizer(model_path, trust_remote_code)
    dataset = load_eval_data(data, split)
    results = {"model": str(model_path), "data": str(data), "split": split}
    # Rows are cut where the rotary tables end (past them: an error deep inside torch); longer prompts fail below.
    config = model.config
    context = min(2048, getattr(config, "max_position_embeddings", 2048) * getattr(config, "rotary_cache_factor", 1))
    try:
        with _quiet_datasets():
            if loss:
                rows = dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
                results["loss"] = evaluate_loss(model, tokenizer, rows, batch_size=batch_size, all_tokens=all_tokens,
                                                max_tokens=context)
            if tasks:
                results["tasks"] = evaluate_tasks(model, tokenizer, dataset, tasks, limit, batch_size, max_new_tokens)
    except AksharaError as error:  # a row of the data
        raise AksharaError(f"{data}: {error}") from None
    except (RuntimeError, ValueError, IndexError, TypeError) as error:  # torch/transformers during forward/generate
        raise AksharaError(f"{model_path}: evaluation failed ({type(error).__name__}: {one_line(error)})") from None
    if output_dir is not None:
        with staged_output(output_dir, "evaluate", overwrite=overwrite, inputs=[model_path, data]) as staging:
            (staging.folder / "eval_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
            (staging.folder / "eval_results.md").write_text(results_markdown(results))
    return results


def register(subparsers) -> None:
    from akshara_hf.loading import add_trust_flag

    p = subparsers.add_parser("evaluate", help="validation loss/bpb and task scores (ROUGE, chrF) of a model")
    p.add_argument("model", help="model folder or Hub id")
    p.add_argument("--data", required=True, help="built mixture folder, dataset folder, or .jsonl/.parquet file")
    p.add_argument("--split", default="validation")
    p.add_argument("--tasks", default="summarization,paraphrase", help="comma list, or '' for none")
    p.add_argument("--no-loss", action="store_true", help="skip the loss/bpb pass")
    p.add_argument("--all-tokens", action="store_true", help="score every token of conversations (mid-training bpb)")
    p.add_argument("--limit", type=int, default=None, help="at most this many rows (per task)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--output", default=None, help="folder for eval_results.json / .md (a new folder, or an earlier "
                   "evaluate output with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluate output folder")
    add_trust_flag(p)

    def run(args) -> int:
        tasks = tuple(t for t in args.tasks.split(",") if t)
        results = evaluate(args.model, args.data, args.split, tasks, not args.no_loss, args.all_tokens, args.limit,
                           args.batch_size, args.max_new_tokens, args.output, args.overwrite, args.trust_remote_code)
        print(results_markdown(results))
        return 0

    p.set_defaults(func=run)
