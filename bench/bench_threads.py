"""Why a shared machine made the demo 55x slower, and what `akshara_hf.threads.configure_threads` changes.

One training step of a small model (forward + backward + optimizer step), timed in a fresh process per setting
(OpenMP reads its settings when torch starts), alone and beside N busy processes this script starts itself (pure
Python loops, one core each). Settings:

  torch default   no OMP_* variables: one OpenMP thread per core, waiting threads spin
  1 thread        OMP_NUM_THREADS=1
  passive         torch's thread count, OMP_WAIT_POLICY=PASSIVE (waiting threads sleep)
  akshara         what the project's entry points set (akshara_hf.threads.configure_threads)

Rounds alternate the settings (in a rotated order) and the conditions, so a change of load on a shared machine
hits every setting alike; each cell reports the median and range over rounds of seconds per step, and its ratio to
"torch default" alone measured in the same round.

    python bench/bench_threads.py                     # 3 rounds, busy = number of cores
    python bench/bench_threads.py --rounds 5 --busy 2 --workload akshara
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "torch default": {},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "akshara": None,  # configure_threads() inside the worker
}
CLEARED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "AKSHARA_HF_AUTO_THREADS")


def worker(workload: str, seconds: float, configure: bool) -> None:
    """Time steps for about `seconds` after two warm-up steps; print one JSON line."""
    if configure:
        sys.path.insert(0, str(REPO))
        from akshara_hf.threads import configure_threads

        configure_threads()
    import torch

    torch.manual_seed(0)
    if workload == "mlp":  # the case: a small MLP, forward + backward
        model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256))
        batch = torch.randn(512, 256)

        def loss():
            return model(batch).square().mean()
    else:  # the demo's model: a depth-4 Akshara (width 256), 8 rows of 256 tokens, as tiny-base trains it
        sys.path.insert(0, str(REPO))
        from akshara_hf.model.configuration_akshara import AksharaConfig
        from akshara_hf.model.modeling_akshara import AksharaForCausalLM

        model = AksharaForCausalLM(AksharaConfig.from_depth(depth=4, vocab_size=1024, max_position_embeddings=256))
        ids = torch.randint(0, 1024, (8, 256))

        def loss():
            return model(input_ids=ids, labels=ids).loss
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()

    for _ in range(2):
        step()
    times, started = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - started < seconds and len(times) < 200):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    print(json.dumps({"seconds": statistics.median(times), "steps": len(times), "threads": torch.get_num_threads()}))


def measure(setting: str, workload: str, seconds: float) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in CLEARED}
    env.update(SETTINGS[setting] or {})
    command = [sys.executable, __file__, "--worker", workload, "--seconds", str(seconds)]
    if SETTINGS[setting] is None:
        command.append("--configure")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{setting}: worker failed\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=len(os.sched_getaffinity(0)), help="busy processes beside it")
    parser.add_argument("--workload", choices=("mlp", "akshara"), default="mlp")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per measurement (at least 3 steps)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma list of: " + ", ".join(SETTINGS))
    parser.add_argument("--worker", choices=("mlp", "akshara"), help=argparse.SUPPRESS)
    parser.add_argument("--configure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.seconds, args.configure)
    settings = [name for name in args.settings.split(",") if name]
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown or "torch default" not in settings:
        raise SystemExit(f"--settings: unknown {unknown}, or 'torch default' (the reference) missing")
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    results = {}  # (condition, setting) -> [(seconds, ratio, threads)]
    for round_index in range(args.rounds):
        order = settings[round_index % len(settings):] + settings[:round_index % len(settings)]
        conditions = ["alone", f"beside {args.busy} busy"]
        if round_index % 2:
            conditions.reverse()
        measured = {}
        for condition in conditions:
            busy = []
            if condition != "alone":
                busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
                time.sleep(1.0)  # let them take their cores (and the load be seen)
            try:
                for setting in order:
                    measured[condition, setting] = measure(setting, args.workload, args.seconds)
            finally:
                for process in busy:
                    process.kill()
                    process.wait()
        reference = measured["alone", "torch default"]["seconds"]
        for key, value in measured.items():
            results.setdefault(key, []).append((value["seconds"], value["seconds"] / reference, value["threads"]))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    print(f"\n## CPU threads beside busy processes ({args.workload} training step)")
    print("env: " + json.dumps({"cores": cores, "load average before (1/5/15 min)": [round(x, 2) for x in load],
                                "rounds": args.rounds, "busy processes": args.busy, "python": sys.version.split()[0]}))
    print("| condition | setting | threads | s/step median | s/step range | x torch default alone (median) "
          "| x range |")
    print("|---|---|---|---|---|---|---|")
    for (condition, setting), values in sorted(results.items(), key=lambda kv: (kv[0][0] != "alone",
                                                                                settings.index(kv[0][1]))):
        seconds = [v[0] for v in values]
        ratios = [v[1] for v in values]
        threads = sorted({v[2] for v in values})
        print(f"| {condition} | {setting} | {'/'.join(map(str, threads))} | {statistics.median(seconds):.4g} "
              f"| {min(seconds):.4g}-{max(seconds):.4g} | {statistics.median(ratios):.3g} "
              f"| {min(ratios):.3g}-{max(ratios):.3g} |")


if __name__ == "__main__":
    main()
