"""Zero-shot classification and cross-modal retrieval metrics, with CLIP_benchmark's metric names."""

from modalign.evaluate.retrieval import retrieval_metrics
from modalign.evaluate.zeroshot import load_templates, zeroshot_metrics

__all__ = ["load_templates", "retrieval_metrics", "zeroshot_metrics"]
