"""Every Python snippet of README.md runs as written (fenced ```python blocks, in order, one namespace).

The snippets read `data/pairs.csv`, `cat.png` and `car.png`: the test lays them out in a fresh folder from
real Tux Paint stamps (30 stamps over several categories) and runs there, with HOME there too, so the
store paths of the snippets (`~/.cache/modalign/store`, `store`) start empty. A block preceded by the line
`<!-- readme-test: slow -->` runs on its own, in the slow suite (a full Tux Paint fit).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import caption_of

README = Path(__file__).resolve().parents[1] / "README.md"
SLOW_MARK = "<!-- readme-test: slow -->"
_BLOCK = re.compile(r"^(?P<mark><!-- readme-test: slow -->\n)?```python\n(?P<code>.*?)^```", re.M | re.S)


def readme_blocks() -> list[tuple[str, bool]]:
    """(code, slow) of each ```python block, in README order."""
    return [(m["code"], bool(m["mark"])) for m in _BLOCK.finditer(README.read_text(encoding="utf-8"))]


def _lay_out(tmp_path: Path, tux_root: Path) -> None:
    """data/pairs.csv (+ data/images/), cat.png, car.png: real stamps, as a user would have them."""
    images = tmp_path / "data" / "images"
    images.mkdir(parents=True)
    rows = ["image,caption"]
    for sub in ("animals/birds", "animals/mammals", "food/fruit", "vehicles/auto", "plants/flowers", "space/planets"):
        pngs = [p for p in sorted((tux_root / sub).glob("*.png")) if p.with_suffix(".txt").exists()][:5]
        for png in pngs:
            shutil.copy(png, images / png.name)
            rows.append(f'images/{png.name},"{caption_of(png).replace(chr(34), chr(39))}"')
    (tmp_path / "data" / "pairs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    shutil.copy(tux_root / "seasonal/halloween/blackcat.png", tmp_path / "cat.png")
    shutil.copy(tux_root / "vehicles/race/indycar.png", tmp_path / "car.png")


@pytest.fixture()
def user_folder(tmp_path, tux_root, monkeypatch):
    _lay_out(tmp_path, tux_root)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MODALIGN_STORE", raising=False)
    return tmp_path


def _run(code: str, namespace: dict, index: int) -> None:
    try:
        exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    except Exception as e:  # name the block in the failure
        raise AssertionError(f"README python block {index} failed: {type(e).__name__}: {e}\n{code}") from e


def test_the_readme_has_python_snippets_and_the_mark_is_well_formed():
    blocks = readme_blocks()
    assert len(blocks) >= 4 and sum(not slow for _, slow in blocks) >= 3
    text = README.read_text(encoding="utf-8")
    assert text.count(SLOW_MARK) == sum(slow for _, slow in blocks)  # every mark sits right above a block
    assert text.count("```python") == len(blocks)


def test_every_quick_readme_snippet_runs_as_written(user_folder):
    namespace: dict = {"__name__": "__readme__"}
    for i, (code, slow) in enumerate(readme_blocks()):
        if not slow:
            _run(code, namespace, i)
    # what the snippets promise
    run, img, txt = namespace["run"], namespace["img"], namespace["txt"]
    assert img.shape == txt.shape == (2, namespace["model"].embed_dim)
    assert {"auto", "mlp", "procrustes"} <= set(run.results)
    assert (user_folder / "runs" / "mine" / "config.json").is_file()
    texts = namespace["pairs"].column("text")
    assert namespace["entries"]["final"].vectors().shape == (len(texts.items), 384)


@pytest.mark.slow
def test_every_slow_readme_snippet_runs_as_written(user_folder):
    slow = [(i, code) for i, (code, is_slow) in enumerate(readme_blocks()) if is_slow]
    assert slow
    for i, code in slow:
        _run(code, {"__name__": "__readme__"}, i)


def test_the_readme_documents_every_http_route_and_request_field():
    """The HTTP API table names every route the service registers and every field of a text query."""
    src = Path(__file__).resolve().parents[1] / "src" / "modalign" / "search" / "service" / "routes.py"
    routes = re.findall(r'@app\.(get|post)\("(/[^"]*)"\)', src.read_text(encoding="utf-8"))
    api = {(m.upper(), p) for m, p in routes if p not in ("/", "/app.js", "/app.css")}  # the web page's files
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**The HTTP API**"):text.index("## Few-shot adaptation")]
    documented = set(re.findall(r"`(GET|POST) (/[^`]*)`", section))
    assert {(m, p.replace("{vid}", "{id}")) for m, p in api} == documented
    from modalign.search.service.routes import TextQuery, Texts

    for field in [*TextQuery.model_fields, *Texts.model_fields]:
        assert f'"{field}"' in section, field
    for key in ["score", "relevance", "id", "key", "modality", "path", "caption", "tower", "added", "image_url"]:
        assert f'"{key}"' in section, key


def test_readme_clip_benchmark_commands_label_their_results_as_ours():
    """Without --model, CLIP_benchmark labels the results with its default CLIP name (ViT-B-32-quickgelu)."""
    text = README.read_text(encoding="utf-8")
    commands = [line for line in text.splitlines() if "clip_benchmark eval" in line]
    assert commands and all("--model modalign" in c for c in commands)
