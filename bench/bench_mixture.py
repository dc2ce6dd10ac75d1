"""Peak memory of `build_mixture` on a synthetic 200k-conversation source, against a reference measured in
the same run: the same rows loaded as a Python list (what a naive converter holds before it even starts).

Each measurement runs in a fresh interpreter (peak RSS is per process). Two peaks are reported:
`VmHWM` (peak RSS; includes pages of memory-mapped Arrow files the build reads, which the kernel can drop)
and the sampled peak of `RssAnon` (heap and other private memory: what the build really holds).

    python bench/bench_mixture.py [--rows 200000]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = ("తెలుగు భాష కథ వార్త పాఠం ప్రశ్న జవాబు గ్రామం నగరం రైతు వర్షం పుస్తకం పిల్లలు ఆరోగ్యం నీరు చెట్టు "
         "సమాచారం ప్రభుత్వం విద్యార్థి ఉపాధ్యాయుడు సంస్కృతి పండుగ ఆహారం ప్రయాణం సమస్య పరిష్కారం").split()


def write_source(path: Path, rows: int) -> None:
    """SmolTalk-shaped JSONL: 1 or 2 user/assistant exchanges of Telugu words, ~1 KB of UTF-8 per row."""
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(rows):
            messages = []
            for _turn in range(rng.choice((1, 1, 2))):
                question = " ".join(rng.choices(WORDS, k=rng.randint(8, 20))) + "?"
                answer = " ".join(rng.choices(WORDS, k=rng.randint(30, 90))) + "."
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            handle.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


class AnonPeak:
    """Samples RssAnon from /proc/self/status every 20 ms (Linux has no peak counter for it)."""

    def __init__(self):
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> None:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._read()

    def __enter__(self):
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._read()


def vm_hwm_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def child(mode: str, source: str, output: str) -> None:
    import datasets

    from akshara_hf.data.mixture import build_mixture

    datasets.disable_progress_bars()
    start = time.perf_counter()
    with AnonPeak() as anon:
        if mode == "build":
            recipe = Path(output).parent / "recipe.yaml"
            recipe.write_text(f"data:\n  seed: 42\n  validation_fraction: 0.01\n  sources:\n"
                              f"    - {{kind: smoltalk, path: {source}}}\n", encoding="utf-8")
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                built = build_mixture(recipe, output)
            rows = len(built["train"]) + len(built["validation"])
        elif mode == "python-list":  # the reference: every row parsed into Python objects, held at once
            with open(source, encoding="utf-8") as handle:
                held = [json.loads(line) for line in handle]
            rows = len(held)
        else:  # baseline: the same imports, no data
            rows = 0
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start,
                      "vm_hwm_mb": vm_hwm_kb() / 1024, "anon_peak_mb": anon.peak_kb / 1024}))


def measure(mode: str, source: Path, output: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", mode, str(source), str(output)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SOURCE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-mixture-") as folder:
        folder = Path(folder)
        source = folder / "synthetic_smoltalk.jsonl"
        write_source(source, args.rows)
        size_mb = source.stat().st_size / 2**20
        results = {mode: measure(mode, source, folder / "mixture") for mode in ("baseline", "python-list", "build")}
    base, ref, build = results["baseline"], results["python-list"], results["build"]
    print(f"synthetic source: {args.rows:,} conversations, {size_mb:.1f} MiB of JSONL (UTF-8 Telugu)")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'':34}{'peak RSS (VmHWM)':>18}{'peak RssAnon':>16}{'seconds':>10}")
    for name, r in (("imports only (baseline)", base), ("reference: rows as a Python list", ref),
                    ("build_mixture (ours)", build)):
        print(f"{name:34}{r['vm_hwm_mb']:>15.0f} MB{r['anon_peak_mb']:>13.0f} MB{r['seconds']:>10.1f}")
    over = {key: (build[key] - base[key]) / (ref[key] - base[key]) for key in ("vm_hwm_mb", "anon_peak_mb")}
    print(f"ratio ours/reference, above the baseline: peak RSS {over['vm_hwm_mb']:.2f}, "
          f"peak RssAnon {over['anon_peak_mb']:.2f}")
    per_mib = {key: (build[key] - base[key]) / size_mb for key in ("vm_hwm_mb", "anon_peak_mb")}
    print(f"ours above the baseline per MiB of source: peak RSS {per_mib['vm_hwm_mb']:.2f}, "
          f"peak RssAnon {per_mib['anon_peak_mb']:.2f}")
    print(f"build throughput: {build['rows'] / build['seconds']:,.0f} conversations/s")


if __name__ == "__main__":
    main()
