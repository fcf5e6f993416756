"""HPS v2.1 — Wu et al., "Human Preference Score v2: A Solid Benchmark for Evaluating Human Preferences
of Text-to-Image Synthesis", arXiv:2306.09341; v2.1 is the authors' re-training on higher-quality data
(HPSv2 README, 2024), released as ``xswu/HPSv2`` ``HPS_v2.1_compressed.pt``.

Same architecture, preprocessing and scale (raw cosine) as HPS v2: everything but the checkpoint
comes from metrics/hpsv2.py. v2.1 scores are not comparable with v2 scores. Note that the
``hpsv2`` package's ``score()`` defaults to v2.0 while its ``evaluate()`` defaults to v2.1.
"""

from __future__ import annotations

from metrics.core.weights import Source
from metrics.hpsv2 import REPO, HPSv2


class HPSv21(HPSv2):
    id = "hpsv21"
    base_version = "hpsv21-v1"
    display = "HPS v2.1 (cosine)"
    description = "Human Preference Score v2.1: open_clip ViT-H/14 cosine, about 0.25-0.35"
    checkpoint = "HPS_v2.1_compressed.pt"
    sources = (Source(REPO, (checkpoint,)),)


REWARD = HPSv21
