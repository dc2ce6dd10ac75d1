"""`akshara-hf demo`: the whole pipeline on the shipped Telugu samples, end to end, on a CPU in minutes.

tokenizer -> tiny Akshara -> base stage -> mid-training -> SFT with Muon -> HF folder with card and curves ->
reload in a fresh process -> `pipeline("text-generation")` answers a Telugu prompt. Each training stage runs the
user-facing script (`training/*.py --config training/recipes/tiny-*.yaml`) in its own process, as a user would.
With a recipe argument it runs that recipe instead (e.g. a seed run on a GPU).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from .errors import AksharaError

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "training" / "recipes"
SCRIPTS = {"base": "mid_train.py", "mid": "mid_train.py", "sft": "sft.py"}
DEMO_PROMPT = "తెలుగు భాష గురించి ఒక వాక్యం రాయండి"

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
    from .data.mixture import read_recipe

    stage = read_recipe(recipe).get("stage", "sft")
    if stage not in SCRIPTS:
        raise AksharaError(f"{recipe}: stage must be one of {sorted(SCRIPTS)}, got {stage!r}")
    return stage


def _run_stage(stage: str, recipe: Path, extra: list[str], launcher: list[str]) -> None:
    command = [*launcher, str(REPO / "training" / SCRIPTS[stage]), "--config", str(recipe), "--stage", stage, *extra]
    print(f"\n=== {stage}: {' '.join(command)}", flush=True)
    code = subprocess.run(command).returncode
    if code != 0:  # the script printed its own error above
        raise AksharaError(f"the {stage} stage ({SCRIPTS[stage]} --config {recipe}) failed with exit status {code}")


def _train_tokenizer(root: Path, vocab_size: int) -> Path:
    from .data.mixture import build_mixture
    from .tokenizer import train_tokenizer

    mixture = build_mixture(RECIPES / "tiny-mid.yaml", root / "tokenizer_corpus", overwrite=True)  # the demo's own

    def texts():
        for messages in mixture["train"]["messages"]:
            for message in messages:
                content = message["content"]
                yield content if isinstance(content, str) else "".join(part["text"] for part in content)

    tokenizer = train_tokenizer(texts(), vocab_size=vocab_size)
    tokenizer.save_pretrained(root / "tokenizer")
    return root / "tokenizer"


def run_demo(output: str | Path = "runs/demo", recipe: str | Path | None = None, vocab_size: int = 1024,
             max_steps: int | None = None) -> Path:
    launcher = [sys.executable]
    steps = ["--max_steps", str(max_steps)] if max_steps else []
    if recipe is not None:
        recipe = Path(recipe)
        _run_stage(_stage_of(recipe), recipe, steps, launcher)
        return recipe
    root = Path(output).resolve()
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print("=== tokenizer: training a byte-level BPE (nanochat's split regex) on the shipped Telugu samples", flush=True)
    tokenizer = _train_tokenizer(root, vocab_size)
    _run_stage("base", RECIPES / "tiny-base.yaml",
               ["--tokenizer_name_or_path", str(tokenizer), "--output_dir", str(root / "base"), *steps], launcher)
    _run_stage("mid", RECIPES / "tiny-mid.yaml",
               ["--model_name_or_path", str(root / "base"), "--output_dir", str(root / "mid"), *steps], launcher)
    _run_stage("sft", RECIPES / "tiny-sft.yaml",
               ["--model_name_or_path", str(root / "mid"), "--output_dir", str(root / "sft"), *steps], launcher)
    print("\n=== reload in a fresh process (remote code only) and ask the pipeline", flush=True)
    result = subprocess.run([sys.executable, "-c", PIPELINE_CHECK, str(root / "sft"), DEMO_PROMPT],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise AksharaError(f"{root / 'sft'}: the pipeline check failed: {lines[-1] if lines else result.returncode}")
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    if reply.get("role") != "assistant":
        raise AksharaError(f"pipeline returned {reply!r}, expected an assistant message")
    facts = json.loads((root / "sft" / "run_facts.json").read_text())
    print(f"\nuser: {DEMO_PROMPT}\nassistant: {reply['content']}")
    print(f"""
Done in {time.time() - started:.0f} s. Everything is under {root}:
  tokenizer/          the trained tokenizer (tokenizer.json, chat template)
  base/ mid/ sft/     HF model folders (each with checkpoints, log.jsonl, run_facts.json, README.md model card,
                      loss_curve.png); sft/ is the final model: {facts.get('num_steps')} SFT steps,
                      final train loss {_fmt(facts.get('final_train_loss'))}, val loss {_fmt(facts.get('final_val_loss'))}
Try next:
  akshara-hf chat {root / 'sft'}
  akshara-hf evaluate {root / 'sft'} --data {root / 'sft' / 'mixture'}
  akshara-hf publish {root / 'sft'} --repo-id YOU/akshara-tiny --dry-run
  bash scripts/demo.sh training/recipes/nanochat-telugu-d20-sft-v1.yaml   # a seed recipe, on a GPU
""")
    return root / "sft"


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the whole pipeline on the shipped samples (or run one recipe)")
    p.add_argument("recipe", nargs="?", default=None, help="run this recipe instead of the tiny pipeline")
    p.add_argument("--output", default="runs/demo")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--max-steps", type=int, default=None, help="cap every stage (quick checks)")
    p.set_defaults(func=lambda a: run_demo(a.output, a.recipe, a.vocab_size, a.max_steps) and 0)
