"""`akshara-hf demo`: the whole pipeline on the shipped Telugu samples, end to end, on a CPU in minutes.

tokenizer -> tiny Akshara -> base stage -> mid-training -> SFT with Muon -> HF folder with card and curves ->
reload in a fresh process -> `pipeline("text-generation")` answers a Telugu prompt. Each training stage runs the
user-facing script (`training/*.py --config training/recipes/tiny-*.yaml`) in its own process, as a user would: the
clone's, or the installed wheel's (`akshara_hf.training.shipped`). With a recipe argument (a file or a packaged
recipe's name) it runs that recipe instead (e.g. a seed run on a GPU).

Progress is shown all the way: each training stage's step count, rate, ETA, loss and tokens/s (the Trainer's tqdm
bar on a terminal; one line per step when the output goes to a log or a pipe, `akshara_hf.progress`), and each
stage's time. The small progress bars of `datasets` and the Hub (split generation, weight loading of files of a few
kilobytes) stay off. Idle CPU threads sleep instead of spinning, in every stage (`akshara_hf.threads`): on a machine
shared with other jobs that made the demo many times faster.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from akshara_hf.errors import AksharaError
from akshara_hf.folders import claim
from akshara_hf.training.shipped import find_recipe, recipes_dir, training_script  # the clone's, or the installed wheel's

SCRIPTS = {"base": "mid_train.py", "mid": "mid_train.py", "sft": "sft.py"}
DEMO_PROMPT = "తెలుగు భాష గురించి ఒక వాక్యం రాయండి"
STEPS = 6
# Measured with bench/bench_first_hour.py (bench/README.md): the stages' step counts scale the time.
EXPECTED = ("40 + 40 + 28 training steps, each stage showing its progress and ETA; 75 s measured on a quiet 2-core "
            "machine, 110 s beside two busy processes, 6-15 minutes on one other jobs kept at load average 4-7")
QUIET = {"HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
         "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}

# Runs in a fresh process: the folder's own remote code, as a Hub user without this package meets it.
PIPELINE_CHECK = """
import sys, json
sys.modules["akshara_hf"] = None  # the folder must stand on its own (remote code), as on the Hub
from transformers import pipeline, set_seed
set_seed(0)
chat = pipeline("text-generation", model=sys.argv[1], trust_remote_code=True)
out = chat([{"role": "user", "content": sys.argv[2]}], max_new_tokens=48)
print(json.dumps(out[0]["generated_text"][-1], ensure_ascii=False))
"""


def _fmt(loss) -> str:
    return f"{loss:.3f}" if isinstance(loss, (int, float)) else str(loss)


def _stage_of(recipe: Path) -> str:
    from akshara_hf.data.mixture import read_recipe

    stage = read_recipe(recipe).get("stage", "sft")
    if stage not in SCRIPTS:
        raise AksharaError(f"{recipe}: stage must be one of {sorted(SCRIPTS)}, got {stage!r}")
    return stage


def _quiet() -> None:
    """No `datasets` / Hub progress bars in this process or the stages it starts (the training bars stay)."""
    os.environ.update(QUIET)
    from datasets import disable_progress_bars

    disable_progress_bars()


def _announce(step: int, text: str) -> float:
    print(f"\n=== [{step}/{STEPS}] {text}", flush=True)
    return time.time()


def _done(started: float) -> None:
    print(f"    done in {time.time() - started:.0f} s", flush=True)


def _run_stage(stage: str, recipe: Path, extra: list[str], launcher: list[str], step: int | None = None) -> None:
    command = [*launcher, str(training_script(SCRIPTS[stage])), "--config", str(recipe), "--stage", stage, *extra]
    started = _announce(step, f"{stage}: {' '.join(command)}") if step else time.time()
    if step is None:
        print(f"\n=== {stage}: {' '.join(command)}", flush=True)
    code = subprocess.run(command).returncode
    if code != 0:  # the script printed its own error above
        raise AksharaError(f"the {stage} stage ({SCRIPTS[stage]} --config {recipe}) failed with exit status {code}")
    if step:
        _done(started)


ENTRIES = ("tokenizer_corpus", "tokenizer", "base", "mid", "sft")  # what the demo writes into its folder


def _prepare_output(root: Path, overwrite: bool) -> Path:
    """The project's output rule (akshara_hf.folders): an earlier demo run is replaced only with --overwrite, a folder
    the demo did not write never, and --overwrite removes only the entries the demo's marker lists (`claim`): anything
    else there (an `evaluate --output` the "try next" suggests, the user's notes) stays, and is reported. (Not staged
    like the one-shot commands: the stages write into it for minutes, and the user watches them do so.)"""
    from akshara_hf.folders import MARKER, check_output, output_marker, remove_claimed, replace_file

    root = check_output(root, "demo", overwrite=overwrite)
    if output_marker(root) is not None:  # check_output accepted it: our own earlier demo run, and --overwrite given
        kept = remove_claimed(root)
        if kept:
            print(f"kept in {root} (not written by the demo): {', '.join(kept)}", flush=True)
    for name in ENTRIES:  # in a folder that holds other things too, the demo's names must be free
        if (root / name).exists() or (root / name).is_symlink():
            raise AksharaError(f"{root / name}: not written by the demo (its marker does not list it); move it away "
                               "or choose another --output")
    root.mkdir(parents=True, exist_ok=True)
    if output_marker(root) is None:
        replace_file(root / MARKER, json.dumps({"command": "demo", "written_by": "akshara-hf", "wrote": []}) + "\n")
    return root


def pipeline_check(folder: Path, prompt: str = DEMO_PROMPT) -> dict:
    """Step 5: `pipeline("text-generation")` on FOLDER in a fresh process without this package; the reply message.

    The one place the demo runs a model folder's Python, announced in its step line: the folder it has just written,
    and only while that Python is this package's own (`check_folder_code(own_files=True)`: the Akshara auto_map, the
    installed files byte for byte, no tokenizer or generate code). The remote code goes to a temporary modules cache,
    as publish's check does, so no stale copy answers for it."""
    import tempfile

    from akshara_hf.loading import check_folder_code

    check_folder_code(str(folder), own_files=True, hint="the demo runs only the code it wrote itself")
    with tempfile.TemporaryDirectory(prefix="akshara-demo-") as scratch:
        env = {**os.environ, "HF_MODULES_CACHE": str(Path(scratch) / "modules"), "HF_HUB_OFFLINE": "1"}
        result = subprocess.run([sys.executable, "-c", PIPELINE_CHECK, str(folder), prompt],
                                capture_output=True, text=True, env=env, cwd=scratch)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise AksharaError(f"{folder}: the pipeline check failed: {lines[-1] if lines else result.returncode}")
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    if reply.get("role") != "assistant":
        raise AksharaError(f"pipeline returned {reply!r}, expected an assistant message")
    return reply


def _train_tokenizer(root: Path, vocab_size: int) -> Path:
    from akshara_hf.data.mixture import build_mixture
    from akshara_hf.tokenization.tokenizer import train_tokenizer

    # The demo's own (listed in its marker before it is written).
    mixture = build_mixture(recipes_dir() / "tiny-mid.yaml", claim(root, "tokenizer_corpus"), overwrite=True)

    def texts():
        for messages in mixture["train"]["messages"]:
            for message in messages:
                content = message["content"]
                yield content if isinstance(content, str) else "".join(part["text"] for part in content)

    tokenizer = train_tokenizer(texts(), vocab_size=vocab_size)
    tokenizer.save_pretrained(claim(root, "tokenizer"))
    return root / "tokenizer"


def run_demo(output: str | Path = "runs/demo", recipe: str | Path | None = None, vocab_size: int = 1024,
             max_steps: int | None = None, overwrite: bool = False) -> Path:
    from akshara_hf.tokenization.tokenizer import check_vocab_size_flag

    if max_steps is not None and (type(max_steps) is not int or max_steps < 1):  # -1 and 0 ran uncapped, silently
        raise AksharaError(f"--max-steps {max_steps}: must be a positive number of steps")
    if recipe is None:
        check_vocab_size_flag(vocab_size)  # before the output folder or any work, not after the corpus is built
    launcher = [sys.executable]
    steps = ["--max_steps", str(max_steps)] if max_steps else []
    _quiet()
    if recipe is not None:
        recipe = find_recipe(recipe)  # a file, or a packaged recipe by name
        _run_stage(_stage_of(recipe), recipe, steps, launcher)
        return recipe
    root = _prepare_output(Path(output), overwrite)
    started = time.time()
    print(f"The whole pipeline on the shipped Telugu samples, in {STEPS} steps: {EXPECTED}.", flush=True)
    step = _announce(1, "tokenizer: training a byte-level BPE (nanochat's split regex) on the shipped Telugu samples")
    tokenizer = _train_tokenizer(root, vocab_size)
    _done(step)
    _run_stage("base", recipes_dir() / "tiny-base.yaml",
               ["--tokenizer_name_or_path", str(tokenizer), "--output_dir", str(claim(root, "base")), *steps],
               launcher, 2)
    _run_stage("mid", recipes_dir() / "tiny-mid.yaml",
               ["--model_name_or_path", str(root / "base"), "--output_dir", str(claim(root, "mid")), *steps],
               launcher, 3)
    _run_stage("sft", recipes_dir() / "tiny-sft.yaml",
               ["--model_name_or_path", str(root / "mid"), "--output_dir", str(claim(root, "sft")), *steps],
               launcher, 4)
    step = _announce(5, "reload sft/ in a fresh process without akshara_hf (as from the Hub), trusting the remote code "
                        "this demo just wrote there (configuration_akshara.py, modeling_akshara.py, checked identical "
                        "to the installed package's), and ask pipeline('text-generation') a Telugu question")
    reply = pipeline_check(root / "sft")
    _done(step)
    facts = json.loads((root / "sft" / "run_facts.json").read_text())
    _announce(6, "the answer")
    print(f"user: {DEMO_PROMPT}\nassistant: {reply['content']}")
    print("""
Expect word salad: this model has depth 4 and was trained for a few minutes on a few dozen sample conversations.
It has learnt the chat format (it answers in the assistant turn and stops) and Telugu script, not the language.
The same code on a real checkpoint (nanochat-telugu-d20, 560M parameters) answers in Telugu.""")
    print(f"""
Done in {time.time() - started:.0f} s. Everything is under {root}:
  tokenizer/          the trained tokenizer (tokenizer.json, chat template)
  base/ mid/ sft/     HF model folders (each with checkpoints, log.jsonl, run_facts.json, README.md model card,
                      loss_curve.png); sft/ is the final model: {facts.get('num_steps')} SFT steps,
                      final train loss {_fmt(facts.get('final_train_loss'))}, val loss {_fmt(facts.get('final_val_loss'))}
Try next:
  akshara-hf chat {root / 'sft'}
  akshara-hf evaluate {root / 'sft'} --data {root / 'sft' / 'mixture'} --output {root / 'eval'}
  akshara-hf model-card {root / 'sft'} --repo-id YOU/akshara-tiny --eval-results {root / 'eval' / 'eval_results.json'}
  akshara-hf publish {root / 'sft'} --repo-id YOU/akshara-tiny --dry-run
  akshara-hf recipes                                   # every packaged recipe; a seed run on a GPU:
  akshara-hf demo nanochat-telugu-d20-sft-v1           # (or: akshara-hf sft --config nanochat-telugu-d20-sft-v1)
""")
    return root / "sft"


def register(subparsers) -> None:
    from akshara_hf.folders import add_overwrite_flag

    p = subparsers.add_parser(
        "demo", help="the whole pipeline on the shipped samples (or run one recipe)",
        description="Train a tokenizer, a tiny Akshara (depth 4) through base, mid and SFT stages (40 + 40 + 28 "
                    "steps) on the Telugu samples shipped with the package, write an HF folder with its model card, "
                    "reload it with its remote code only and ask pipeline('text-generation') a Telugu question. "
                    "Each stage shows its step count, ETA, loss and tokens/s, and its time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("recipe", nargs="?", default=None,
                   help="run this one recipe (a file, or a packaged recipe's name, e.g. nanochat-telugu-d20-sft-v1 on "
                        "a GPU) instead of the tiny pipeline")
    p.add_argument("--output", default="runs/demo", metavar="FOLDER",
                   help="where everything goes (tokenizer/, base/, mid/, sft/); a new folder, or an earlier demo "
                        "output with --overwrite")
    p.add_argument("--vocab-size", type=int, default=1024, metavar="N", help="size of the tokenizer the demo trains")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="cap every training stage at N steps, a quick check (None: the recipes' own step counts)")
    add_overwrite_flag(p)
    p.set_defaults(func=lambda a: run_demo(a.output, a.recipe, a.vocab_size, a.max_steps, a.overwrite) and 0)
