"""Store locks (issue 17): a complete entry is never locked, so reading it never waits for another
process that encodes a layer list including it; two real processes, real captions, real encoder."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import caption_of
from modalign.data.column import Column
from modalign.encoders import create_encoder
from modalign.store import EmbeddingStore
from modalign.store.lock import LOCK_FILE

SRC = Path(__file__).resolve().parents[1] / "src"

# process A: encodes ["final", "hidden.2"] ("final" is complete, "hidden.2" is new) and stays inside the
# plan (holding whatever locks it takes) until the test is done with it
WRITER = """
import json, sys, time
from pathlib import Path
from modalign.data.column import Column
from modalign.encoders import create_encoder
from modalign.store import EmbeddingStore
root, items, ready = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
col = Column("text", items["ids"], items["captions"], list(range(len(items["ids"]))))
with EmbeddingStore(root).plan_encode(col, create_encoder("minilm-l6"), ["final", "hidden.2"]) as plan:
    ready.write_text(json.dumps([str(p.folder) for p in plan.pending]))
    time.sleep(300)
"""


@pytest.fixture()
def captions(tux_images) -> Column:
    texts = [caption_of(p) for p in tux_images]
    return Column("text", [p.name for p in tux_images], texts, np.arange(len(texts)))


def _locked(folder: Path) -> bool:
    """True when another process holds the entry's lock."""
    with open(folder / LOCK_FILE, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def test_reader_of_a_complete_entry_never_waits_for_a_writer_encoding_a_list_including_it(tmp_path, captions):
    root = tmp_path / "store"
    enc = create_encoder("minilm-l6")
    store = EmbeddingStore(root)
    final = store.encode(captions, enc, "final", progress=False)["final"]
    ready = tmp_path / "ready.json"
    items = json.dumps({"ids": list(captions.ids), "captions": list(captions.items)})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), items, str(ready)], env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
            assert time.monotonic() < deadline, "the writer never started encoding"
            time.sleep(0.2)
        pending = [Path(p) for p in json.loads(ready.read_text())]
        assert [p.name for p in pending] != [final.path.name] and len(pending) == 1
        assert _locked(pending[0])  # the writer holds the entry it encodes ...
        assert not _locked(final.path)  # ... and not the complete one in its list
        # a reader asking for the complete entry plus one of its own: done while the writer still encodes
        out: dict[str, object] = {}
        reader = threading.Thread(target=lambda: out.update(store.encode(captions, enc, ["final", "hidden.3"],
                                                                         progress=False)))
        reader.start()
        reader.join(timeout=120)
        assert not reader.is_alive(), "the reader waited for the writer's locks"
        assert writer.poll() is None  # the writer was still inside its plan all along
        np.testing.assert_array_equal(out["final"].vectors(), final.vectors())  # type: ignore[attr-defined]
        assert len(out["hidden.3"].vectors()) == len(captions)  # type: ignore[attr-defined]
    finally:
        writer.kill()
        writer.wait()
