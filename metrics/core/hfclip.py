"""CLIP dual encoders in the Hugging Face format (``CLIPModel``), as PickScore and CLIP score use them.

Loading is ``from_pretrained(folder, local_files_only=True)`` from ``model.safetensors``. Two transformers-5
changes are handled here once: ``get_image_features`` / ``get_text_features`` return an output
object whose ``pooler_output`` is the projected embedding (a plain tensor before 5.0), and the
image processor is asked for its PIL backend, the one the published numbers were computed with
(the default backend became torchvision, which resizes slightly differently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch


def load_model(folder: Path, device: str, dtype: torch.dtype):
    """The ``CLIPModel`` in ``folder``; refused if any weight is missing or of another shape (transformers
    would otherwise initialise it at random with only a warning)."""
    from transformers import CLIPModel

    model, info = CLIPModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True, use_safetensors=True,
                                            output_loading_info=True)
    bad = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if bad:
        raise RuntimeError(f"{folder}: checkpoint does not fit CLIPModel ({len(bad)} missing or mismatched "
                           f"weights, e.g. {bad[0]})")
    return model.eval().to(device)


def load_processor(folder: Path) -> tuple[Any, Any]:
    """(image processor on the PIL backend, tokenizer) stored in ``folder``."""
    from transformers import CLIPImageProcessorPil, CLIPTokenizer

    return CLIPImageProcessorPil.from_pretrained(str(folder)), CLIPTokenizer.from_pretrained(str(folder))


def embedding(output: Any) -> torch.Tensor:
    """The projected embedding from ``get_*_features``, whichever transformers returned it."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


@torch.no_grad()
def image_embeddings(model, image_processor, images: Sequence) -> torch.Tensor:
    """(B, D) float32 projected image embeddings, not normalised: the image side of ``cosine``."""
    pixels = image_processor(images=list(images), return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
    return embedding(model.get_image_features(pixel_values=pixels)).float()


@torch.no_grad()
def cosine(model, image_processor, tokenizer, images: Sequence, prompts: Sequence[str]) -> torch.Tensor:
    """(B,) float32 cosine between each image and its prompt (prompts truncated to the text context)."""
    device = model.device
    img = image_embeddings(model, image_processor, images)
    text = tokenizer(list(prompts), padding=True, truncation=True,
                     max_length=model.config.text_config.max_position_embeddings, return_tensors="pt").to(device)
    txt = embedding(model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])).float()
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (img * txt).sum(-1)
