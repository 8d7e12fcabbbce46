"""Helpers shared by the benchmark scripts: machine facts, medians, JSON output. Not part of modalign."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the figures: CPU, threads, versions, load at the start."""
    import modalign

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "modalign": modalign.__version__,
        "git": _git_revision(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=BENCH_DIR,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def print_header(title: str, info: dict[str, Any]) -> None:
    print(f"== {title} ==")
    print(f"machine: {info['cpu']}; cpu_count={info['cpu_count']} (usable {info['cpus_usable']}); "
          f"torch {info['torch']}, threads={info['torch_threads']} (interop {info['torch_interop_threads']}); "
          f"python {info['python']}; modalign {info['modalign']} ({info['git']}); "
          f"load avg (1 min) at start: {info['load_avg_1m']}")
    print("command: " + " ".join([Path(sys.executable).name, *sys.argv]))
    sys.stdout.flush()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def write_json(path: str | Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
