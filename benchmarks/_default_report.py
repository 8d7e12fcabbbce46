"""Tables, auto's choice record and the data-size plot of bench_default.py. Not part of modalign."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ["mean_recall@1", "image_retrieval_recall@1", "text_retrieval_recall@1", "zs", "fmnist_zs"]


def _stat(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def summarize(runs: list[dict[str, Any]], candidates: list[str]) -> dict[str, Any]:
    """{dataset: {fraction: {"methods": {method: {metric: stat}}, "auto": {...choice record...}}}}."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        cells[(r["dataset"], str(r["fraction"]), r["method"])].append(r)
    out: dict[str, Any] = {}
    for (name, frac, method), rs in cells.items():
        stats = {k: _stat([r[k] for r in rs]) for k in METRICS if all(k in r for r in rs)}
        stats["n_train_pairs"] = float(np.mean([r["n_train_pairs"] for r in rs]))
        stats["fit_seconds"] = float(np.mean([r["fit_seconds"] for r in rs]))
        out.setdefault(name, {}).setdefault(frac, {"methods": {}})["methods"][method] = stats
    for name, per_frac in out.items():
        for frac, cell in per_frac.items():
            cell["auto"] = _auto_record([r for r in runs if r["dataset"] == name and str(r["fraction"]) == frac],
                                        candidates)
    return out


def _auto_record(runs: list[dict[str, Any]], candidates: list[str]) -> dict[str, Any]:
    """Per split: auto's choice, the test-best of the recipes it could take, and whether they agree."""
    by_split: dict[int, dict[str, float]] = defaultdict(dict)
    choices: dict[int, str] = {}
    for r in runs:
        if r["method"] in candidates:
            by_split[r["split_seed"]][r["method"]] = r["mean_recall@1"]
    for r in runs:
        if r["method"] == "auto":
            choices[r["split_seed"]] = r.get("choice", "")
            by_split[r["split_seed"]].setdefault(choices[r["split_seed"]], r["mean_recall@1"])  # the same fit
    record = []
    for split, choice in sorted(choices.items()):
        scores = by_split.get(split, {})
        if choice not in scores or len(scores) < len(candidates):
            continue
        best = max(scores, key=lambda m: scores[m])
        record.append({"split_seed": split, "choice": choice, "test_best": best,
                       "right": scores[choice] >= scores[best] - 1e-9, "margin": scores[choice] - scores[best]})
    return {"splits": record, "right": sum(r["right"] for r in record), "n": len(record)}


def _fmt(s: dict[str, float] | None) -> str:
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s else "-"


def print_tables(summary: dict[str, Any], printed: list[str]) -> bool:
    """Prints each data set's table; returns True when auto loses to a printed baseline at full data."""
    failed = False
    for name, per_frac in summary.items():
        for frac, cell in sorted(per_frac.items(), key=lambda kv: -float(kv[0])):
            methods = cell["methods"]
            n_pairs = next(iter(methods.values()))["n_train_pairs"]
            print(f"\n{name}, {float(frac):.0%} of the training groups ({n_pairs:.0f} pairs): test split, "
                  "mean ± std over splits (x seeds for the MLP)")
            print(f"{'method':<19}" + "".join(f"{h:>16}" for h in ("mean R@1", "t2i R@1", "i2t R@1", "zs", "FMNIST zs"))
                  + f"{'fit s':>8}")
            for m, s in sorted(methods.items(), key=lambda kv: -kv[1]["mean_recall@1"]["mean"]):
                print(f"{m:<19}" + "".join(f"{_fmt(s.get(k)):>16}" for k in METRICS) + f"{s['fit_seconds']:>8.1f}")
            auto = cell["auto"]
            if auto["n"]:
                print(f"auto's choice was the test-best of its candidates on {auto['right']}/{auto['n']} splits")
            if float(frac) == 1.0 and "auto" in methods:
                base = {m: methods[m]["mean_recall@1"]["mean"] for m in printed if m in methods and m != "auto"}
                if base:
                    best = max(base, key=lambda m: base[m])
                    gain = methods["auto"]["mean_recall@1"]["mean"] - base[best]
                    print(f"auto vs the best printed baseline ({best}): {gain:+.3f} mean R@1")
                    failed |= gain < 0
    if failed:
        print("FAILED: the default loses to a printed baseline on some data set")
    return failed


def plot_sweep(summary: dict[str, Any], path: Path, methods: tuple[str, ...] = (
        "auto", "bridge+kcca", "mlp", "ridge", "procrustes", "cca", "asif", "kcca", "bridge")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    markers = "os^vD<>ph"
    for ax, name in zip(axes[0], names, strict=True):
        for i, m in enumerate(methods):
            cells = sorted((c["methods"][m] for c in summary[name].values() if m in c["methods"]),
                           key=lambda s: s["n_train_pairs"])
            if not cells:
                continue
            ax.errorbar([c["n_train_pairs"] for c in cells], [c["mean_recall@1"]["mean"] for c in cells],
                        yerr=[c["mean_recall@1"]["std"] for c in cells], marker=markers[i % len(markers)], ms=4,
                        lw=2.2 if m == "auto" else 1.1, capsize=2, label=m, ls="-" if m in ("auto", "mlp") else "--")
        ax.set_xscale("log")
        ax.set_xlabel("training pairs (log scale)")
        ax.set_title(f"{name}: held-out mean R@1 (mean ± std over splits)", fontsize=9)
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("test mean recall@1")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def markdown(summary: dict[str, Any], printed: list[str]) -> str:
    """BENCHMARKS.md tables: per data set and fraction, mean ± std of each method, best first."""
    cols = [("mean_recall@1", "mean R@1"), ("image_retrieval_recall@1", "t2i R@1"),
            ("text_retrieval_recall@1", "i2t R@1"), ("zs", "zero-shot"), ("fmnist_zs", "FMNIST zero-shot")]
    out = []
    for name, per_frac in summary.items():
        for frac, cell in sorted(per_frac.items(), key=lambda kv: -float(kv[0])):
            methods = cell["methods"]
            shown = [(k, h) for k, h in cols if any(k in s for s in methods.values())]
            n_pairs = next(iter(methods.values()))["n_train_pairs"]
            out += [f"**{name}, {float(frac):.0%} of the training groups ({n_pairs:.0f} pairs)**", "",
                    "| method | runs | " + " | ".join(h for _, h in shown) + " | fit s |",
                    "|---|---|" + "---|" * len(shown) + "---|"]
            for m, s in sorted(methods.items(), key=lambda kv: -kv[1]["mean_recall@1"]["mean"]):
                label = f"**{m}**" if m == "auto" else m + (" (baseline)" if m in printed else "")
                out.append(f"| {label} | {s['mean_recall@1']['n']} | "
                           + " | ".join(_fmt(s.get(k)) for k, _ in shown) + f" | {s['fit_seconds']:.1f} |")
            auto = cell["auto"]
            if auto["n"]:
                out += ["", f"auto's choice was the test-best of its candidates on {auto['right']}/{auto['n']} splits."]
            out.append("")
    return "\n".join(out)
