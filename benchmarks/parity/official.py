"""Official side of the reward parity check; runs in the parity venv (see run_parity.sh), never in the
project's environment, and imports nothing of the project.

1. Writes the shared inputs under WORK: images/*.png (non-square sizes included), prompts.json (one
   longer than ImageReward's 35 tokens and CLIP's 77), and a BERT vocab.txt (bert-base-uncased's
   special-token ids; the words of the prompts; filler up to 30522 entries; the real vocab cannot be
   fetched offline, and both sides tokenise with the same transformers class, so any vocab checks
   the model code equally).
2. Builds each official model with random weights, saves them in the official file formats under
   WORK/weights/<repo>/ (the layout the project reads with an explicit weights folder), reloads them
   with the official loader and scores every (image, prompt) pair with the official function:
   - HPS v2.1: hpsv2x 1.2.0 ``hpsv2.img_score.score(images, prompt, cp=..., hps_version="v2.1")``
     on the full ViT-H-14 (its only architecture). Patched: the LAION base download in
     ``initialize_model`` (``pretrained=None``: random weights, overwritten by ``cp`` anyway).
   - ImageReward v1.0: image-reward 1.5 ``ImageReward.load(path, med_config=...)`` and
     ``model.score(prompt, image)`` on the full BLIP ViT-L/16 + BERT-base. Patched for transformers 5
     (research/stack.md): three helpers gone from ``transformers.modeling_utils``, two from
     ``ModuleUtilsMixin``, ``init_weights``; the tokenizer download (a local vocab instead); and the
     training module ``ImageReward.ReFL`` (imports diffusers/accelerate/datasets) is stubbed.
     The random head is re-drawn wider than the official init, else every score is ≈ −mean/std.
3. Writes WORK/official.json: {reward: {"pairs": [[image, prompt], ...], "scores": [...]}}.
"""

from __future__ import annotations

import json
import re
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PROMPTS = [
    "a photo of a red fox sitting in the snow",
    "an oil painting of a lighthouse at dusk, dramatic clouds",
    "a cute robot holding a sign that says hello world, digital art, trending on artstation, highly detailed, "
    "sharp focus, octane render, volumetric lighting, studio ghibli style, wide angle lens, golden hour, "
    "bokeh background, cinematic composition, ultra realistic, 8k resolution, masterpiece, intricate details, "
    "soft pastel colours, concept art by a famous illustrator, award winning photograph, depth of field, "
    "symmetrical face, unreal engine, matte painting, smooth gradients",
]
SIZES = [(512, 512), (640, 480), (300, 500)]  # (width, height)


def make_inputs(work: Path) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    (work / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i, (w, h) in enumerate(SIZES):
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)  # smooth colour fields plus noise: resizing matters
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(4 * (xx + yy))], -1) * 0.4 + 0.5
        img = np.clip(base + rng.normal(0, 0.08, base.shape), 0, 1)
        name = f"img{i}_{w}x{h}.png"
        Image.fromarray((img * 255).astype(np.uint8)).save(work / "images" / name)
        names.append(name)
    pairs = [(n, p) for n in names for p in PROMPTS]
    (work / "prompts.json").write_text(json.dumps(pairs, indent=1))

    words = sorted({t for p in PROMPTS for t in re.findall(r"\w+|[^\w\s]", p.lower())})
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    vocab += [f"filler{i}" for i in range(30522 - len(vocab))]
    bert = work / "weights" / "google-bert" / "bert-base-uncased"
    bert.mkdir(parents=True, exist_ok=True)
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return pairs


def hps(work: Path, pairs: list[tuple[str, str]]) -> list[float]:
    import hpsv2.img_score as scr
    from hpsv2.src.open_clip import create_model_and_transforms

    def no_base_download(name, pretrained=None, **kwargs):
        return create_model_and_transforms(name, None, **kwargs)

    scr.create_model_and_transforms = no_base_download
    torch.manual_seed(0)
    scr.initialize_model()  # the official ViT-H-14, random
    ckpt = work / "weights" / "xswu" / "HPSv2" / "HPS_v2.1_compressed.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "state_dict": scr.model_dict["model"].state_dict()}, ckpt)
    scores = {}
    for prompt in PROMPTS:  # the official score() takes one prompt and a list of images (and reloads cp)
        names = [n for n, p in pairs if p == prompt]
        values = scr.score([Image.open(work / "images" / n) for n in names], prompt, cp=str(ckpt), hps_version="v2.1")
        scores.update({(n, prompt): float(v) for n, v in zip(names, values)})
    del scr.model_dict["model"]
    return [scores[pair] for pair in pairs]


def _patch_transformers_for_imagereward() -> None:
    import transformers.modeling_utils as mu
    from transformers import pytorch_utils

    def find_pruneable_heads_and_indices(heads, n_heads, head_size, already_pruned_heads):
        mask = torch.ones(n_heads, head_size)
        heads = set(heads) - already_pruned_heads
        for head in heads:
            head = head - sum(1 if h < head else 0 for h in already_pruned_heads)
            mask[head] = 0
        mask = mask.view(-1).contiguous().eq(1)
        return heads, torch.arange(len(mask))[mask].long()

    mu.apply_chunking_to_forward = pytorch_utils.apply_chunking_to_forward
    mu.prune_linear_layer = pytorch_utils.prune_linear_layer
    mu.find_pruneable_heads_and_indices = find_pruneable_heads_and_indices
    sys.modules["ImageReward.ReFL"] = types.ModuleType("ImageReward.ReFL")  # training only


def imagereward(work: Path, pairs: list[tuple[str, str]]) -> list[float]:
    _patch_transformers_for_imagereward()
    import ImageReward as RM
    from ImageReward.models.BLIP import blip_pretrain, med
    from transformers import BertTokenizer

    vocab_dir = work / "weights" / "google-bert" / "bert-base-uncased"

    def init_tokenizer():  # BLIP's, reading the local vocab instead of downloading bert-base-uncased
        tokenizer = BertTokenizer.from_pretrained(str(vocab_dir))
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
        return tokenizer

    def invert_attention_mask(self, mask):  # transformers 4's ModuleUtilsMixin
        ext = mask[:, None, :, :] if mask.dim() == 3 else mask[:, None, None, :]
        ext = ext.to(dtype=self.dtype)
        return (1.0 - ext) * torch.finfo(self.dtype).min

    blip_pretrain.init_tokenizer = init_tokenizer
    med.BertModel.init_weights = lambda self: self.apply(self._init_weights)
    med.BertModel.invert_attention_mask = invert_attention_mask
    med.BertModel.get_head_mask = lambda self, head_mask, n: [None] * n if head_mask is None else head_mask

    folder = work / "weights" / "THUDM" / "ImageReward"
    folder.mkdir(parents=True, exist_ok=True)
    med_config = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
                  "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
                  "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
                  "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
                  "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True}
    (folder / "med_config.json").write_text(json.dumps(med_config, indent=2))
    torch.manual_seed(1)
    model = RM.ImageReward(med_config=str(folder / "med_config.json"), device="cpu")
    with torch.no_grad():
        for name, p in model.mlp.named_parameters():
            p.normal_(0.0, 0.05)
    torch.save(model.state_dict(), folder / "ImageReward.pt")
    del model
    model = RM.load(str(folder / "ImageReward.pt"), device="cpu", med_config=str(folder / "med_config.json"))
    return [float(model.score(p, Image.open(work / "images" / n))) for n, p in pairs]


def main() -> None:
    work = Path(sys.argv[1])
    torch.set_num_threads(2)
    pairs = make_inputs(work)
    out = {}
    for rid, fn in (("hpsv21", hps), ("imagereward", imagereward)):
        start = time.perf_counter()
        out[rid] = {"pairs": pairs, "scores": fn(work, pairs), "seconds": round(time.perf_counter() - start, 1)}
        print(f"official {rid}: {len(pairs)} pairs in {out[rid]['seconds']} s", flush=True)
    import hpsv2
    import transformers

    out["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                       "hpsv2": getattr(hpsv2, "__version__", "hpsv2x 1.2.0"), "image-reward": "1.5"}
    (work / "official.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
