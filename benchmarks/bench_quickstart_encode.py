"""The quickstart's cold encode time: before (eager torch, no decode cache) and after (ONNX Runtime fast
path, decode worker processes, an empty decode cache), each in a fresh process on an empty store.

What is measured: `run_quickstart` (Tux Paint, Fashion-MNIST zero-shot, the label bridge's prompts) with
every `EmbeddingStore.encode` call timed (wall seconds summed; the fit and evaluation are not counted).
Both variants start with an empty embedding store; "after" also starts with an empty decode cache, so
nothing it measures was decoded before. Exported ONNX graphs are reused from the cache home when they exist
(the first run on a machine exports them once; `--fresh-graphs` counts that too).

    python benchmarks/bench_quickstart_encode.py --threads 2 --json benchmarks/results/quickstart_encode.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_info, print_header, write_json

VARIANTS = {
    "before": {"MODALIGN_RUNTIME": "eager", "MODALIGN_DECODE_CACHE": "off"},
    "after": {"MODALIGN_RUNTIME": "auto"},  # decode cache: an empty folder, set per run
}


def child(out: Path) -> None:
    """One cold quickstart in this process; writes {encode_s, calls, total_s} to `out`."""
    from modalign.store import EmbeddingStore
    from modalign.workflows.quickstart import QuickstartConfig, run_quickstart

    spent = {"encode_s": 0.0, "calls": 0}
    original = EmbeddingStore.encode

    def timed(self: EmbeddingStore, *a: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(self, *a, **kw)
        finally:
            spent["encode_s"] += time.perf_counter() - t0
            spent["calls"] += 1

    EmbeddingStore.encode = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="modalign-qs-") as tmp:
        t0 = time.perf_counter()
        run_quickstart(QuickstartConfig(out_dir=Path(tmp) / "run"), EmbeddingStore(Path(tmp) / "store"),
                       progress=False)
        out.write_text(json.dumps({**spent, "total_s": time.perf_counter() - t0}))


def run_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="modalign-qs-env-") as tmp:
        env = {**os.environ, **VARIANTS[name], "OMP_NUM_THREADS": str(args.threads)}
        if name == "after":
            env["MODALIGN_DECODE_CACHE"] = str(Path(tmp) / "decoded")
        if args.fresh_graphs:
            env["MODALIGN_CACHE"] = str(Path(tmp) / "cache")
        out = Path(tmp) / "result.json"
        subprocess.run([sys.executable, __file__, "--child", str(out), "--threads", str(args.threads)], env=env,
                       check=True)
        result = json.loads(out.read_text())
    print(f"{name:<7} encode {result['encode_s']:.1f} s ({result['calls']} store encodes), "
          f"quickstart total {result['total_s']:.1f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads (OMP_NUM_THREADS too)")
    p.add_argument("--fresh-graphs", action="store_true", help="an empty cache home: count exporting the graphs")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child)
        return 0
    info = machine_info()
    print_header("quickstart cold encode time: before (eager) vs after (fast path)", info)
    results = {name: run_variant(name, args) for name in VARIANTS}
    ratio = results["before"]["encode_s"] / results["after"]["encode_s"]
    print(f"encode time before / after: {ratio:.2f}x")
    write_json(args.json, {"benchmark": "quickstart_encode", "machine": info, "config": vars(args),
                           "results": results, "speedup": ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
