"""`modalign quickstart` on a small real Tux Paint tree: the default first, every baseline under it, a plain
verdict, a held-out count equal to what is scored, and printed `modalign eval` commands that reproduce it."""

from __future__ import annotations

import json
import shlex
import shutil

import pytest

from modalign.cli.main import main

SUBFOLDERS = ["animals/birds", "food/fruit", "vehicles/auto", "plants/flowers", "space/planets", "animals/mammals"]
PER_FOLDER = 7


@pytest.fixture()
def small_tux(tmp_path, tux_root):
    """42 captioned stamps in 5 categories, laid out as the Debian package lays them out."""
    root = tmp_path / "stamps"
    for sub in SUBFOLDERS:
        (root / sub).mkdir(parents=True)
        pngs = [p for p in sorted((tux_root / sub).glob("*.png")) if p.with_suffix(".txt").exists()][:PER_FOLDER]
        for png in pngs:
            shutil.copy(png, root / sub / png.name)
            shutil.copy(png.with_suffix(".txt"), root / sub / png.with_suffix(".txt").name)
    return root


def test_quickstart_order_verdict_count_and_reproducing_commands(tmp_path, small_tux, capsys):
    out, store = tmp_path / "qs", tmp_path / "store"
    assert main(["quickstart", "--out", str(out), "--tux-root", str(small_tux), "--fashion-per-class", "3",
                 "--epochs", "3", "--store", str(store), "-q"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    table = {r["method"]: r for r in saved["table"]}
    assert list(table) == ["auto", "mlp", "ridge", "procrustes", "cca", "asif"]  # the default first
    lines = printed.splitlines()
    rows = [next(i for i, line in enumerate(lines) if f" {m} " in line) for m in [*table, "chance"]]
    assert rows == sorted(rows)  # printed in that order, chance last

    # the verdict names the winner and the margin, from the same figures
    best = max(table, key=lambda m: table[m]["mean R@1"])
    others = max((m for m in table if m != "auto"), key=lambda m: table[m]["mean R@1"])
    gap = abs(table["auto"]["mean R@1"] - table[others]["mean R@1"])
    verdict = saved["verdict"]
    assert verdict in " ".join(printed.split())
    who = "the default, auto" if best == "auto" else f"the baseline {best}"
    assert f"Winner on this run: {who}, by +{gap:.3f} held-out mean R@1" in verdict

    # the count printed is the count scored
    scored = saved["held_out"]["scored"]
    assert scored == saved["retrieval"]["auto"]["n_images"] == round(1 / saved["chance"]["t2i R@1"])
    assert f"retrieval on {scored} held-out" in printed and f"{scored} held-out stamps scored" in \
        (out / "report.md").read_text()

    commands = [line.strip() for line in lines if line.strip().startswith("modalign eval ")]
    assert len(commands) == 3
    figures = []
    for i, command in enumerate(commands):
        js = tmp_path / f"reproduced-{i}.json"
        assert main([*shlex.split(command)[1:], "--json", str(js), "-q"]) == 0, command
        figures.append(json.loads(js.read_text()))
    retrieval, tux_zs, fmnist_zs = figures
    assert retrieval["n_images"] == scored and retrieval["split"] == "test"
    for m, row in table.items():
        prefix = "" if m == "auto" else f"{m}/"
        assert retrieval[f"{prefix}image_retrieval_recall@1"] == pytest.approx(row["t2i R@1"], abs=1e-6)
        assert retrieval[f"{prefix}text_retrieval_recall@5"] == pytest.approx(row["i2t R@5"], abs=1e-6)
        assert tux_zs[f"{prefix}acc1"] == pytest.approx(row["Tux zs"], abs=1e-6)
        assert fmnist_zs[f"{prefix}acc1"] == pytest.approx(row["FMNIST zs"], abs=1e-6)
