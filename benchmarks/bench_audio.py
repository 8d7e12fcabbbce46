"""Audio as a third modality on the Tux Paint triples (image, caption, sound): progressive vs joint.

    OMP_NUM_THREADS=1 python benchmarks/bench_audio.py --base runs/tux --store /tmp/modalign-store

`--base` is an image-text run folder trained on `tuxpaint` (split seed 0; trained here when missing).
The held-out set is the sound stamps in the base run's test split (split by stamp, seed 0), so no
test stamp is seen by the base model or by any audio projector. Reported per audio encoder (the
learning-free `logmel` baseline and the pretrained `whisper-tiny` when installed) and method:
  progressive-{text,image,both}   base towers frozen, a new audio projector trained via those anchors (InfoNCE)
  progressive-both-symile         the same, Symile's loss on (audio, frozen image, frozen text)
  joint-infonce                   three fresh towers trained together on the triples, pairwise InfoNCE
  joint-symile / joint-symile+pw  three fresh towers with the Symile loss (pairwise weight 0 / 1)
Metrics: audio<->text and audio<->image recall@1/5 (both directions; query_target names) and zero-shot
audio classification into the 15 stamp categories (default templates through the model's text tower),
mean and standard deviation over training seeds, beside chance. ~100 sounds in all, ~20 held out:
the numbers are noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, machine_info  # noqa: E402

from modalign.align.trainer import TrainConfig, evaluate_features  # noqa: E402
from modalign.data import load_tuxpaint  # noqa: E402
from modalign.encoders import create_encoder  # noqa: E402
from modalign.evaluate.zeroshot import load_templates, zeroshot_metrics  # noqa: E402
from modalign.features.pipeline import encode_dataset, feature_set  # noqa: E402
from modalign.model import AlignedModel  # noqa: E402
from modalign.store import EmbeddingStore  # noqa: E402
from modalign.workflows.extend import ExtendConfig, align_new_modality, split_by_names  # noqa: E402
from modalign.workflows.fit import FitConfig, _tower, fit  # noqa: E402
from modalign.workflows.methods import fit_method  # noqa: E402

PROGRESSIVE = {"progressive-text": (["text"], "infonce", {}), "progressive-image": (["image"], "infonce", {}),
               "progressive-both": (["text", "image"], "infonce", {}),
               "progressive-both-symile": (["text", "image"], "symile", {})}
JOINT = {"joint-infonce": ("infonce", {}), "joint-symile": ("symile", {}),
         "joint-symile+pw": ("symile", {"pairwise_weight": 1.0})}
KEYS = ["audio_text_recall@1", "text_audio_recall@1", "audio_text_recall@5", "text_audio_recall@5",
        "audio_image_recall@1", "image_audio_recall@1", "audio_image_recall@5", "image_audio_recall@5", "zs_acc1"]


def class_prompt_features(ds, text_enc) -> tuple[np.ndarray, int]:
    templates = load_templates("default")
    prompts = [t.replace("{c}", c) for c in ds.classnames for t in templates]
    return text_enc.encode(prompts, batch_size=64), len(templates)


def zeroshot(model, audio_feats, labels, prompt_feats, n_templates) -> float:
    with torch.no_grad():
        cls = model.project("text", prompt_feats).view(-1, n_templates, model.embed_dim).mean(1)
        cls = torch.nn.functional.normalize(cls, dim=-1)
        return zeroshot_metrics(model.project("audio", audio_feats), labels, cls)["acc1"]


def evaluate(model, test_fs, labels, prompts) -> dict[str, float]:
    m = evaluate_features(model, test_fs, [("audio", "text"), ("audio", "image")])
    m["zs_acc1"] = zeroshot(model, test_fs.features["audio"], labels, *prompts)
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, default=Path("/tmp/audio-bench/base"))
    ap.add_argument("--store", type=Path, default=Path("/tmp/modalign-store"))
    ap.add_argument("--encoders", default="logmel,whisper-tiny")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "audio.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    store = EmbeddingStore(args.store)
    if not (args.base / "config.json").is_file():
        fit(load_tuxpaint(), FitConfig(baselines=[]), args.base, store, progress=False, plots=False, overwrite=True)
    base = AlignedModel.from_pretrained(args.base)
    ds = load_tuxpaint(with_sounds=True)
    audio_groups = ds.column("audio").groups
    split = split_by_names(ds, json.loads((args.base / "split.json").read_text()))
    split = {k: np.intersect1d(v, audio_groups) for k, v in split.items()}
    text_enc, image_enc = base.encoder("text"), base.encoder("image")
    prompts = class_prompt_features(ds, text_enc)
    n_test = len(split["test"])
    results: dict[str, dict] = {"chance": {"recall@1": 1 / n_test, "recall@5": min(1.0, 5 / n_test),
                                           "zs_acc1": 1 / len(ds.classnames)},
                                "n": {k: int(len(v)) for k, v in split.items()}}
    for spec in args.encoders.split(","):
        try:
            audio_enc = create_encoder(spec)
        except Exception as e:  # an optional extra that is not installed
            print(f"skipping {spec}: {e}")
            continue
        stored = encode_dataset(ds, {"image": image_enc, "text": text_enc, "audio": audio_enc}, store,
                                progress=False)
        parts = {k: feature_set(ds, stored, v) for k, v in split.items()}
        labels = ds.group_labels[parts["test"].groups["audio"].numpy()]
        towers = {"image": base.towers["image"], "text": base.towers["text"],
                  "audio": _tower("audio", audio_enc, "final", "concat")}
        rows: dict[str, list[dict[str, float]]] = {}
        for seed in range(args.seeds):
            train_cfg = TrainConfig(epochs=200, batch_size=64, patience=30, seed=seed)
            for name, (anchors, loss, opts) in PROGRESSIVE.items():
                cfg = ExtendConfig(train=replace(train_cfg, loss=loss, loss_options=opts))
                model = align_new_modality(base, ds, store, "audio", audio_enc, anchors, cfg, split=split,
                                           progress=False)
                rows.setdefault(name, []).append(evaluate(model, parts["test"], labels, prompts))
            for name, (loss, opts) in JOINT.items():
                cfg = replace(train_cfg, loss=loss, loss_options=opts, eval_pairs=[["audio", "text"], ["audio", "image"]])
                model, _ = fit_method("mlp", towers, parts["train"], parts["val"], cfg, progress=False)
                rows.setdefault(name, []).append(evaluate(model, parts["test"], labels, prompts))
        table = {}
        for name, runs in rows.items():
            table[name] = {k: {"mean": statistics.mean(r[k] for r in runs),
                               "std": statistics.pstdev(r[k] for r in runs)} for k in KEYS}
        results[spec] = table
        print(f"\n{spec}  (n_test={n_test} sounds; chance R@1 {1 / n_test:.3f}, R@5 {min(1, 5 / n_test):.3f}, "
              f"zs {1 / len(ds.classnames):.3f})")
        print("method".ljust(26) + "".join(k.replace("_recall", "").ljust(13) for k in KEYS))
        for name, t in table.items():
            print(name.ljust(26) + "".join(f"{t[k]['mean']:.3f}±{t[k]['std']:.3f}".ljust(13) for k in KEYS))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(), "seeds": args.seeds, "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
