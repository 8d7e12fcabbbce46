"""A saved AlignedModel runs through CLIP_benchmark's own zero-shot classification on a local webdataset."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import caption_of
from modalign.align.features import FeatureSet
from modalign.align.projectors import ProjectorConfig
from modalign.align.trainer import TrainConfig, train
from modalign.encoders.registry import create_encoder
from modalign.model import AlignedModel, TowerConfig

pytest.importorskip("clip_benchmark", reason='CLIP_benchmark is not installed (pip install "modalign[clip-benchmark]")')
pytest.importorskip("webdataset", reason="CLIP_benchmark's wds datasets need webdataset")


def _write_wds(root: Path, images: list[Path], labels: list[int], classnames: list[str]) -> None:
    """CLIP_benchmark's local "wds/" layout: test/{nshards.txt,0.tar}, classnames.txt, templates."""
    (root / "test").mkdir(parents=True)
    (root / "test" / "nshards.txt").write_text("1\n")
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("a picture of {c}.\n{c}\n")
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for i, (png, label) in enumerate(zip(images, labels, strict=True)):
            for name, data in ((f"s{i:04d}.png", png.read_bytes()), (f"s{i:04d}.cls", str(label).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.filterwarnings("ignore:WebDataset")
def test_clip_benchmark_zeroshot(tmp_path: Path, tux_images: list[Path]) -> None:
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification
    from clip_benchmark.models import MODEL_TYPES, TYPE2FUNC, load_clip

    from modalign.integrations.clip_benchmark import main, register

    captions = [caption_of(p) for p in tux_images]
    img_enc, txt_enc = create_encoder("effnet-lite0"), create_encoder("minilm-l6")
    fi, ft = torch.from_numpy(img_enc.encode(tux_images)), torch.from_numpy(txt_enc.encode(captions))
    proj = ProjectorConfig(type="linear", out_dim=16, dropout=0.0)
    towers = {"image": TowerConfig("image", img_enc.spec, "final", fi.shape[1], img_enc.fingerprint(), proj),
              "text": TowerConfig("text", txt_enc.spec, "final", ft.shape[1], txt_enc.fingerprint(), proj)}
    model = AlignedModel(towers)
    groups = torch.arange(len(tux_images))
    train(model, FeatureSet({"image": fi, "text": ft}, {"image": groups, "text": groups.clone()}), None,
          TrainConfig(projector=proj, epochs=20, batch_size=12, patience=0), progress=False)
    model.save_pretrained(tmp_path / "m")

    classnames = sorted({p.parent.parent.name for p in tux_images})  # animals, food, plants, space, vehicles
    labels = [classnames.index(p.parent.parent.name) for p in tux_images]
    _write_wds(tmp_path / "wds", tux_images, labels, classnames)

    register()
    register()  # idempotent
    assert TYPE2FUNC["modalign"] is not None and MODEL_TYPES.count("modalign") == 1
    clip, transform, tokenizer = load_clip("modalign", "modalign", str(tmp_path / "m"), None, device="cpu")
    ds = build_dataset("wds/tux", root=str(tmp_path / "wds"), transform=transform, split="test")
    assert ds.classes == classnames
    loader = torch.utils.data.DataLoader(ds.batched(5), batch_size=None, num_workers=0)
    metrics = zeroshot_classification.evaluate(clip, loader, tokenizer, ds.classes, ds.templates, "cpu", amp=False)
    assert {"acc1", "acc5", "mean_per_class_recall"} <= metrics.keys()
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("acc1", "acc5", "mean_per_class_recall"))
    assert metrics["acc5"] == 1.0  # 5 classes

    # the same top-1 from modalign's own embeddings: CLIP_benchmark saw exactly this model
    ref = AlignedModel.from_pretrained(tmp_path / "m", encoders={"image": img_enc, "text": txt_enc})
    templates = ["a picture of {c}.", "{c}"]
    cls = torch.stack([torch.nn.functional.normalize(ref.encode_text([t.format(c=c) for t in templates]).mean(0), dim=0)
                       for c in classnames], dim=1)  # (D, C)
    rgb = [Image.open(p).convert("RGB") for p in tux_images]  # webdataset's "pil" decoding drops alpha
    pred = (ref.encode_image(rgb) @ cls).argmax(1)  # (N,)
    assert metrics["acc1"] == pytest.approx((pred == torch.tensor(labels)).float().mean().item())

    # and CLIP_benchmark's own CLI, with "modalign" registered: flat JSON metrics
    out = tmp_path / "result.json"
    main(["eval", "--model_type", "modalign", "--model", "modalign", "--pretrained", str(tmp_path / "m"),
          "--dataset", "wds/tux", "--dataset_root", str(tmp_path / "wds"), "--task", "zeroshot_classification",
          "--no_amp", "--num_workers", "0", "--batch_size", "4", "--output", str(out), "--quiet"])
    result = json.loads(out.read_text())
    assert result["metrics"]["acc1"] == pytest.approx(metrics["acc1"])
