"""The times a newcomer meets, as the README and `akshara-hf recipes` state them: `--help`, each tiny recipe, the demo.

Each is run as a user runs it (a fresh process, from the repository root), alone and, with `--busy N`, beside N busy
processes this script starts (pure Python loops, one core each: the "machine shared with other jobs" case). Figures
are ranges over `--rounds`, with the machine (cores, load average before and after) printed beside them; the
training runs also report seconds per optimizer step (from their run_facts.json), the figure that scales with
`--max_steps`. Timings taken while other people's jobs run are noise: say the load with any figure you copy.

    python bench/bench_first_hour.py                        # help x3, the four tiny recipes, alone
    python bench/bench_first_hour.py --busy 2 --demo        # also beside 2 busy processes, and the whole demo
    python bench/bench_first_hour.py --only help --rounds 5
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELP = {
    "akshara-hf --help": [sys.executable, "-m", "akshara_hf.cli", "--help"],
    "akshara-hf demo --help": [sys.executable, "-m", "akshara_hf.cli", "demo", "--help"],
    "python training/sft.py --help": [sys.executable, "training/sft.py", "--help"],
    "python training/mid_train.py --help": [sys.executable, "training/mid_train.py", "--help"],
}
# The README's first training, in order (each makes the parent of the next), and the 2026 recipe.
RECIPES = (
    ("tiny-base", "mid_train.py", []),
    ("tiny-mid", "mid_train.py", ["--model_name_or_path", "{out}/tiny-base"]),
    ("tiny-sft", "sft.py", ["--model_name_or_path", "{out}/tiny-mid"]),
    ("tiny-sft-2026", "sft.py", ["--tokenizer_name_or_path", "data/samples/tokenizer"]),
)


def run(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "load average (1/5/15 min)":
            [round(value, 2) for value in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each --help (the recipes run once a round)")
    parser.add_argument("--recipe-rounds", type=int, default=1)
    parser.add_argument("--busy", type=int, default=0, help="also measure beside this many busy processes")
    parser.add_argument("--max-steps", type=int, default=None, help="cap each recipe (default: its own steps)")
    parser.add_argument("--demo", action="store_true", help="also time `akshara-hf demo` (the whole pipeline)")
    parser.add_argument("--only", choices=("help", "recipes", "demo"), default=None)
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1"}
    conditions = ["alone"] + ([f"beside {args.busy} busy"] if args.busy else [])
    rows = []
    before = machine()
    for condition in conditions:
        busy = []
        if condition != "alone":
            busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
            time.sleep(1.0)
        try:
            if args.only in (None, "help"):
                for name, command in HELP.items():
                    times = [run(command, env) for _ in range(args.rounds)]
                    rows.append({"what": name, "condition": condition, "times": times})
            if args.only in (None, "recipes"):
                for _ in range(args.recipe_rounds):
                    with tempfile.TemporaryDirectory() as out:
                        for name, script, extra in RECIPES:
                            steps = ["--max_steps", str(args.max_steps)] if args.max_steps else []
                            command = [sys.executable, f"training/{script}", "--config", f"training/recipes/{name}.yaml",
                                       "--output_dir", f"{out}/{name}", *[e.format(out=out) for e in extra], *steps]
                            seconds = run(command, env)
                            facts = json.loads(Path(out, name, "run_facts.json").read_text())
                            rows.append({"what": f"{name} ({script})", "condition": condition, "times": [seconds],
                                         "steps": facts["num_steps"],
                                         "train_s_per_step": facts["train_time_seconds"] / facts["num_steps"]})
            if args.demo or args.only == "demo":
                with tempfile.TemporaryDirectory() as out:
                    command = [sys.executable, "-m", "akshara_hf.cli", "demo", "--output", f"{out}/demo"]
                    if args.max_steps:
                        command += ["--max-steps", str(args.max_steps)]
                    rows.append({"what": "akshara-hf demo", "condition": condition, "times": [run(command, env)]})
                    for stage, recipe in (("base", "tiny-base"), ("mid", "tiny-mid"), ("sft", "tiny-sft")):
                        facts = json.loads(Path(out, "demo", stage, "run_facts.json").read_text())
                        rows.append({"what": f"demo: {stage} ({recipe})", "condition": condition,
                                     "times": [facts["train_time_seconds"]], "steps": facts["num_steps"],
                                     "train_s_per_step": facts["train_time_seconds"] / facts["num_steps"]})
        finally:
            for process in busy:
                process.kill()
                process.wait()
        print(f"{condition}: done", file=sys.stderr, flush=True)

    print("\n## First hour: help, tiny recipes, demo")
    print("env: " + json.dumps({"before": before, "after": machine(), "python": sys.version.split()[0],
                                "max_steps": args.max_steps}))
    print("| what | condition | seconds (median) | seconds (range) | steps | training s/step |")
    print("|---|---|---|---|---|---|")
    merged = {}
    for row in rows:
        key = (row["what"], row["condition"])
        entry = merged.setdefault(key, {"times": [], "steps": row.get("steps"), "per_step": []})
        entry["times"] += row["times"]
        if "train_s_per_step" in row:
            entry["per_step"].append(row["train_s_per_step"])
    for (what, condition), entry in merged.items():
        times, per_step = entry["times"], entry["per_step"]
        spread = f"{min(per_step):.3g}-{max(per_step):.3g}" if len(per_step) > 1 else (
            f"{per_step[0]:.3g}" if per_step else "")
        print(f"| {what} | {condition} | {statistics.median(times):.3g} | {min(times):.3g}-{max(times):.3g} "
              f"| {entry['steps'] or ''} | {spread} |")


if __name__ == "__main__":
    main()
