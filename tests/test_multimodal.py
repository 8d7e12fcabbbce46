"""More than two modalities: pairwise retrieval, the Symile loss, progressive alignment (API and CLI)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modalign.align.losses import LossInputs, create_loss
from modalign.align.symile import symile_loss
from modalign.evaluate.retrieval import pairwise_retrieval_metrics


def test_pairwise_retrieval_metric_names_and_values():
    a = torch.eye(3)
    b = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])  # audio 1 and 2 swap their texts
    m = pairwise_retrieval_metrics(a, b, np.array([0, 1, 2]), np.array([0, 1, 2]), ("audio", "text"))
    assert m["audio_text_recall@1"] == pytest.approx(1 / 3)
    assert m["text_audio_recall@1"] == pytest.approx(1 / 3)
    assert m["audio_text_recall@5"] == 1.0 and m["n_audio"] == 3.0
    assert m["audio_text_mean_recall@1"] == pytest.approx(1 / 3)


def test_symile_loss_matches_hand_computation_and_prefers_true_triples():
    torch.manual_seed(0)
    a, b, c = (torch.randn(4, 8) for _ in range(3))
    scale = torch.tensor(math.log(5.0))
    an, bn, cn = (F.normalize(x, dim=-1) for x in (a, b, c))
    s = 5.0 * math.sqrt(8)
    torch.manual_seed(1)
    expected = 0.0
    for x, y, z in ((an, bn, cn), (bn, an, cn), (cn, an, bn)):
        sy, sz = torch.randperm(4), torch.randperm(4)  # the other two shuffled independently (paper's O(N))
        logits = torch.tensor([[s * float((x[i] * y[i] * z[i]).sum()) if i == j else
                                s * float((x[i] * y[sy[j]] * z[sz[j]]).sum()) for j in range(4)] for i in range(4)])
        expected += F.cross_entropy(logits, torch.arange(4)).item() / 3
    torch.manual_seed(1)
    assert symile_loss(a, b, c, scale).item() == pytest.approx(expected, rel=1e-5)
    x1, x2, x3 = (torch.randn(32, 16) for _ in range(3))
    loss_fn = create_loss("symile", pairwise_weight=0.5)
    batch = LossInputs({"image": x1, "text": x2, "audio": x3}, {}, {})
    loss_fn(batch, scale)
    assert set(batch.parts) == {"symile", "pairwise"}
    with pytest.raises(ValueError, match="exactly three"):
        create_loss("symile")(LossInputs({"image": x1, "text": x2}, {}, {}), scale)


def _xor_triples(n: int, bits: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Triples (a, b, c = a XOR b) of noisy +-1 bit vectors: every pair is independent, only the triple is not."""
    a, b = (torch.randint(0, 2, (n, bits), generator=g) for _ in range(2))
    c = a ^ b
    code = (c * 2 ** torch.arange(bits)).sum(dim=1)  # (n,) c's value: items with equal c are positives
    return *(1 - 2 * x.float() + 0.1 * torch.randn(n, bits, generator=g) for x in (a, b, c)), code


def test_symile_learns_a_triple_dependence_that_pairwise_infonce_cannot():
    """The Symile paper's point: c = a XOR b is invisible to every pair, so only the MIP of the triple finds c."""
    from modalign.align.losses import clip_loss
    from modalign.align.symile import symile_retrieval_metrics

    g = torch.Generator().manual_seed(0)
    train, test = _xor_triples(1024, 4, g), _xor_triples(256, 4, g)
    recall = {}
    for name in ("symile", "pairwise"):
        torch.manual_seed(0)
        heads = [torch.nn.Linear(4, 16) for _ in range(3)]
        scale = torch.tensor(math.log(1 / 0.07))
        opt = torch.optim.Adam([p for h in heads for p in h.parameters()], lr=1e-2)
        for _ in range(150):
            rows = torch.randint(0, 1024, (128,), generator=g)
            ea, eb, ec = (h(x[rows]) for h, x in zip(heads, train[:3], strict=True))
            loss = symile_loss(ea, eb, ec, scale) if name == "symile" else \
                (clip_loss(ea, eb, scale) + clip_loss(ea, ec, scale) + clip_loss(eb, ec, scale)) / 3
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            ea, eb, ec = (h(x) for h, x in zip(heads, test[:3], strict=True))
            recall[name] = symile_retrieval_metrics(ec, (ea, eb), test[3].numpy(), ("c", "a", "b"))
    assert recall["symile"]["c_given_a+b_recall@1"] > 0.9  # chance: 1/16 values of c
    assert recall["pairwise"]["c_given_a+b_recall@1"] < 0.25


def _sound_stamps(tux_root: Path, out: Path, n: int = 14) -> Path:
    """A small Tux-Paint-shaped folder of n stamps that have a sound, plus one stamp with a broken .ogg."""
    sounds = sorted(p for p in tux_root.rglob("*.ogg") if "_desc_" not in p.name and "symbols" not in p.parts
                    and p.with_suffix(".png").exists() and p.with_suffix(".txt").exists())
    picked = [sounds[i] for i in np.linspace(0, len(sounds) - 1, n).astype(int)]
    for ogg in picked:
        dest = out / ogg.relative_to(tux_root).parent
        dest.mkdir(parents=True, exist_ok=True)
        for suffix in (".png", ".txt", ".ogg"):
            shutil.copy(ogg.with_suffix(suffix), dest / ogg.with_suffix(suffix).name)
    broken = out / picked[0].relative_to(tux_root).parent / "zz-broken"
    shutil.copy(picked[0].with_suffix(".png"), broken.with_suffix(".png"))
    broken.with_suffix(".txt").write_text("a broken sound\n")
    broken.with_suffix(".ogg").write_bytes(b"OggS" + b"\x00" * 64)
    return out


def test_extend_adds_audio_and_leaves_image_text_bit_for_bit(tmp_path, tux_root):
    from modalign.cli.main import main
    from modalign.model import AlignedModel

    root = _sound_stamps(tux_root, tmp_path / "stamps")
    store, base, ext = tmp_path / "store", tmp_path / "base", tmp_path / "ext"
    common = ["--store", str(store), "-q"]
    # the base model is the default (auto: an ensemble of closed-form maps); extend trains an audio head into it
    assert main(["train", "--pairs", f"tuxpaint?root={root}", "--out", str(base), "--no-baselines", *common]) == 0
    assert main(["extend", str(base), "--pairs", f"tuxpaint-sounds?root={root}", "--modality", "audio",
                 "--encoder", "logmel?n_mels=16", "--anchor", "text", "--anchor", "image", "--epochs", "5",
                 "--out", str(ext), "--json", str(tmp_path / "m.json"), *common]) == 0
    before, after = AlignedModel.from_pretrained(base), AlignedModel.from_pretrained(ext)
    assert sorted(after.modalities) == ["audio", "image", "text"]
    g = torch.Generator().manual_seed(0)
    for m in ("image", "text"):
        x = torch.randn(5, before.towers[m].input_dim, generator=g)
        assert torch.equal(before.project(m, x), after.project(m, x))  # identical, bit for bit
        for k, v in before.projectors[m].state_dict().items():
            assert torch.equal(v, after.projectors[m].state_dict()[k])
    assert torch.equal(before.logit_scale, after.logit_scale)
    meta = after.metadata["extend"]
    assert meta["anchors"] == ["text", "image"] and "audio_text_recall@1" in meta["test_metrics"]
    assert "audio_image_recall@1" in meta["test_metrics"]
    ogg = next(root.rglob("*.ogg"))
    emb = after.encode("audio", [ogg, ogg])
    assert before.towers["image"].projector.type == "ensemble"
    assert emb.shape == (2, before.embed_dim) and torch.allclose(emb.norm(dim=-1), torch.ones(2))


def test_joint_three_way_training_with_symile_beats_chance():
    from modalign.align.features import FeatureSet
    from modalign.align.trainer import TrainConfig
    from modalign.model import TowerConfig
    from modalign.workflows.methods import fit_method

    g = torch.Generator().manual_seed(0)
    n = 96
    z = torch.randn(n, 8, generator=g)
    feats = {m: z @ torch.randn(8, d, generator=g) + 0.3 * torch.randn(n, d, generator=g)
             for m, d in (("image", 20), ("text", 12), ("audio", 16))}
    groups = torch.arange(n)
    train = FeatureSet({m: x[:64] for m, x in feats.items()}, {m: groups[:64] for m in feats})
    test = FeatureSet({m: x[64:] for m, x in feats.items()}, {m: groups[64:] for m in feats})
    towers = {m: TowerConfig(m, "none", "final", x.shape[1], "") for m, x in feats.items()}
    cfg = TrainConfig(epochs=30, batch_size=32, patience=0, loss="symile", loss_options={"pairwise_weight": 1.0},
                      eval_pairs=[["audio", "text"], ["audio", "image"]])
    cfg.projector.out_dim, cfg.projector.hidden_dim = 16, 32
    model, info = fit_method("mlp", towers, train, test, cfg, progress=False)
    hist = info["result"].history
    assert hist[-1]["train_symile"] < hist[0]["train_symile"]
    from modalign.align.trainer import evaluate_features

    m = evaluate_features(model, test, [("audio", "text")])
    assert m["audio_text_recall@1"] > 3 / 32  # chance is 1/32


def _said(capsys) -> str:
    """What the command logged (stderr; rich wraps lines), as one line."""
    return " ".join(capsys.readouterr().err.split())


def test_audio_on_the_command_line_after_extend_with_symile(tmp_path, tux_root, capsys):
    """extend --loss symile (two anchors, a pairwise term added and said), then audio eval, index and search."""
    import json

    from modalign.cli.main import main
    from modalign.model import AlignedModel

    root = _sound_stamps(tux_root, tmp_path / "stamps")
    store, base, ext, index = tmp_path / "store", tmp_path / "base", tmp_path / "ext", tmp_path / "index"
    common = ["--store", str(store), "-q"]
    sounds = f"tuxpaint-sounds?root={root}"
    assert main(["train", "--pairs", f"tuxpaint?root={root}", "--out", str(base), "--epochs", "2",
                 "--no-baselines", "--out-dim", "32", "--hidden-dim", "64", *common]) == 0
    extend = ["extend", str(base), "--pairs", sounds, "--encoder", "logmel?n_mels=16", "--loss", "symile",
              "--epochs", "3", "--out", str(ext), *common]
    capsys.readouterr()
    assert main([*extend, "--anchor", "text"]) == 1  # symile scores triples: one anchor is refused
    assert "give two anchors" in _said(capsys)
    assert main([*extend, "--anchor", "text", "--anchor", "image"]) == 0
    assert "adding pairwise InfoNCE" in _said(capsys)
    meta = AlignedModel.from_pretrained(ext).metadata["extend"]
    assert meta["config"]["train"]["loss_options"] == {"pairwise_weight": 1.0}
    assert "audio_given_text+image_recall@1" in meta["test_metrics"]
    assert (ext / "split.json").read_text() == (base / "split.json").read_text()

    capsys.readouterr()
    assert main(["eval", "retrieval", str(ext), "--pairs", sounds, "--modality", "audio",
                 "--json", str(tmp_path / "a.json"), *common]) == 0
    scored = json.loads((tmp_path / "a.json").read_text())
    assert scored["split"] == "test" and 0 <= scored["audio_text_recall@1"] <= 1 and "text_audio_recall@5" in scored
    assert "a2t R@1" in capsys.readouterr().out

    assert main(["index", "build", sounds, "--model", str(ext), "--modality", "audio", "--out", str(index),
                 *common]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modality"] == "audio" and info["count"] >= 10
    ogg = next(p for p in sorted(root.rglob("*.ogg")) if p.stem != "zz-broken")
    assert main(["search", str(index), "--audio", str(ogg), "-k", "3", "--json", "-q"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["key"] == ogg.relative_to(root).as_posix() and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert main(["search", str(index), "--audio", str(ogg), "--model", str(base), "-q"]) == 1  # another space
    assert "query with that model" in _said(capsys)
    assert main(["index", "build", sounds, "--model", str(base), "--modality", "audio", "--out",
                 str(tmp_path / "no"), *common]) == 1
    assert "no audio tower" in _said(capsys)
