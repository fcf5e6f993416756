"""Image preprocessing of the published reward models, each written once.

- ``clip_center_crop``: OpenAI CLIP's own transform (``clip.load``'s ``preprocess``): resize the
  shorter side to ``size`` (PIL bicubic), centre-crop, RGB, [0, 1], OpenAI mean/std. ImageReward
  uses exactly this (ImageReward/ImageReward.py ``_transform``), and so does the LAION aesthetic
  predictor's reference script (it calls ``clip.load``).
- ``hps_pad_square``: HPSv2's validation transform (hpsv2/src/open_clip/transform.py, ``ResizeMaxSize``
  with ``light_augmentation=True``): on the [0, 1] tensor, resize the *longer* side to ``size``
  (bicubic, torchvision's default antialiasing), zero-pad to a square with the odd pixel at the
  bottom/right, then OpenAI mean/std. The padding is black before normalisation. Unlike the
  original, RGBA is converted to RGB (the original keeps 4 channels and then fails in the model) and
  an image whose longer side is already ``size`` is still padded (the original skips the padding
  and fails on the non-square tensor).

The Hugging Face ``CLIPImageProcessor`` (PickScore, CLIP score) is not repeated here: those rewards
use the processor stored with their weights, on its PIL backend.
"""

from __future__ import annotations

from typing import Sequence

import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_center_crop(images: Sequence, size: int) -> torch.Tensor:
    """PIL images -> (N, 3, size, size), normalised as OpenAI CLIP expects."""
    from torchvision import transforms as T

    transform = T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.Lambda(lambda im: im.convert("RGB")),  # after resizing, as in the original
        T.ToTensor(),
        T.Normalize(OPENAI_MEAN, OPENAI_STD),
    ])
    return torch.stack([transform(im) for im in images])


def hps_pad_square(images: Sequence, size: int) -> torch.Tensor:
    """PIL images -> (N, 3, size, size): longer side to ``size``, black padding, OpenAI mean/std."""
    from torchvision.transforms import functional as TF

    out = []
    for im in images:
        x = TF.to_tensor(im.convert("RGB"))  # (3, H, W) in [0, 1]
        h, w = x.shape[1:]
        scale = size / max(h, w)
        if scale != 1.0:
            new_h, new_w = round(h * scale), round(w * scale)  # Python rounding, as the original
            x = TF.resize(x, [new_h, new_w], interpolation=TF.InterpolationMode.BICUBIC)
        pad_h, pad_w = size - x.shape[1], size - x.shape[2]
        x = TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
        out.append(TF.normalize(x, OPENAI_MEAN, OPENAI_STD))
    return torch.stack(out)
