"""Package hygiene: a light import, the documented top-level names."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_import_is_light_and_top_level_names_resolve():
    code = (
        "import sys, modalign\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'transformers', 'sentence_transformers', 'rich', 'timm')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "from modalign import AlignedModel, EmbeddingStore, FitConfig, fit, load_dataset, create_encoder\n"
        "print('matplotlib' in sys.modules, 'modalign.cli' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == ""  # nothing heavy on `import modalign`
    assert out[1] == "False False"  # the library does not pull plotting or the CLI


def test_unknown_attribute_is_an_attribute_error():
    import modalign

    with pytest.raises(AttributeError, match="nope"):
        modalign.nope  # noqa: B018
