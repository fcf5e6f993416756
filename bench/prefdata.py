"""Pick-a-Pic v2 preference data: read and write the official parquet layout, encode and cache it.

A shard has ``caption``, ``jpg_0``, ``jpg_1`` (encoded image bytes), ``label_0``, ``label_1`` ∈ {0, 0.5, 1}
and ids (``ranking_id``, ``image_0_uid``, ``image_1_uid``, ...). As in the official Diffusion-DPO
code, a pair is put winner-first (flipped when ``label_0 == 0``) and ties (``label_0 == 0.5``) are
dropped unless kept (methods.md §0.4). Malformed rows are counted by reason, never silently dropped.

``encode_pairs`` / ``encode_images_data`` turn the data into cached VAE latents and text embeddings:
for pairs, the posterior mean and standard deviation of each image and of its horizontal flip (so
that training draws latents as the official Diffusion-DPO code does, methods/core/pairs.py
``draw_latents``); for captioned images, the posterior mean. The cache is keyed by the content of the
data, the encoders' weights and the resolution, so that a second call touches neither the VAE nor the text encoder. Each cache entry has its sha256
beside it (``<entry>.sha256``, bench/integrity.py) and is checked before it is read: a damaged one,
or one without a recorded sha256, is said to be so (a warning) and computed again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from bench import integrity
from methods.core.api import Cond, ImageData, PairData
from methods.core.types import POSTERIOR_FIELDS

REQUIRED = ("caption", "jpg_0", "jpg_1", "label_0", "label_1")
ID_COLUMNS = ("ranking_id", "image_0_uid", "image_1_uid")
CACHE_VERSION = "2"  # bump when the encoding below changes what is cached (2: pairs' posterior std, flips)


@dataclass
class CaptionedImages:
    """Captions with encoded image bytes (decoded only when asked)."""

    captions: list[str]
    images: list[bytes]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.captions)

    def image(self, i: int):
        return decode_image(self.images[i])

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for c, b, i in zip(self.captions, self.images, self.ids):
            h.update(json.dumps([c, i, hashlib.sha256(b).hexdigest()]).encode())
        return h.hexdigest()


@dataclass
class PickapicPairs:
    """Pairs, winner first. ``label`` is 1.0, or 0.5 for a kept tie. ``skipped``: reason -> count."""

    captions: list[str]
    images_w: list[bytes]
    images_l: list[bytes]
    label: list[float]
    ids: list[str]  # ranking_id (or file:row when the shard has none)
    flipped: int = 0  # pairs whose image_1 was preferred and were swapped
    ties_dropped: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)

    def image_w(self, i: int):
        return decode_image(self.images_w[i])

    def image_l(self, i: int):
        return decode_image(self.images_l[i])

    def subset(self, idx: Sequence[int]) -> "PickapicPairs":
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return PickapicPairs(pick(self.captions), pick(self.images_w), pick(self.images_l), pick(self.label),
                             pick(self.ids), self.flipped, self.ties_dropped, dict(self.skipped))

    def winners(self) -> CaptionedImages:
        """The preferred image of each pair, for methods that train on images without labels."""
        return CaptionedImages(list(self.captions), list(self.images_w), [f"{i}:w" for i in self.ids])

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for row in zip(self.captions, self.images_w, self.images_l, self.label, self.ids):
            c, w, l, y, i = row
            h.update(json.dumps([c, i, y, hashlib.sha256(w).hexdigest(), hashlib.sha256(l).hexdigest()]).encode())
        return h.hexdigest()


def decode_image(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


def _decodable(data: Any) -> bool:
    from PIL import Image

    if not isinstance(data, (bytes, bytearray)) or not data:
        return False
    try:
        Image.open(io.BytesIO(data)).verify()  # header and structure, no full pixel decode
        return True
    except Exception:
        return False


def _shards(paths: Sequence[Path] | Path) -> list[Path]:
    if isinstance(paths, (str, Path)):
        folder = Path(paths)
        files = sorted(folder.glob("*.parquet")) if folder.is_dir() else [folder]
    else:
        files = [Path(p) for p in paths]
    if not files:
        raise ValueError(f"no parquet shards in {paths}")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"Pick-a-Pic shard not found: {f}")
    return files


def read_pickapic(paths: Sequence[Path] | Path, keep_ties: bool = False) -> PickapicPairs:
    """Read Pick-a-Pic v2 parquet shards (a list of files, or a folder of ``*.parquet``)."""
    import pyarrow.parquet as pq

    out = PickapicPairs([], [], [], [], [])
    skipped: Counter[str] = Counter()
    for path in _shards(paths):
        names = pq.read_schema(path).names
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; a Pick-a-Pic v2 shard has {', '.join(REQUIRED)}")
        cols = pq.read_table(path, columns=list(REQUIRED) + [c for c in ID_COLUMNS if c in names]).to_pydict()
        for r in range(len(cols["caption"])):
            caption, y0, y1 = cols["caption"][r], cols["label_0"][r], cols["label_1"][r]
            jpg = (cols["jpg_0"][r], cols["jpg_1"][r])
            if caption is None:
                skipped["missing caption"] += 1
            elif y0 not in (0, 0.5, 1) or y1 not in (0, 0.5, 1):  # also None and NaN
                skipped["label outside {0, 0.5, 1}"] += 1
            elif y0 + y1 != 1:
                skipped["label_0 + label_1 != 1"] += 1
            elif not (_decodable(jpg[0]) and _decodable(jpg[1])):
                skipped["undecodable image"] += 1
            elif y0 == 0.5 and not keep_ties:
                out.ties_dropped += 1
            else:
                if y0 == 0:  # the official dataset flips the tuple so the first image is preferred
                    jpg, out.flipped = jpg[::-1], out.flipped + 1
                rid = cols["ranking_id"][r] if "ranking_id" in cols else None
                out.captions.append(caption)
                out.images_w.append(jpg[0])
                out.images_l.append(jpg[1])
                out.label.append(1.0 if y0 != 0.5 else 0.5)
                out.ids.append(str(rid) if rid is not None else f"{path.name}:{r}")
    out.skipped = dict(skipped)
    return out


def _to_bytes(image: Any, fmt: str) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def write_pickapic(path: Path, rows: Sequence[dict[str, Any]], image_format: str = "PNG") -> Path:
    """Write rows (caption, jpg_0, jpg_1 as bytes or PIL images, label_0, label_1, optional ids) as a shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, pa.Array] = {
        "caption": pa.array([r["caption"] for r in rows], pa.string()),
        "jpg_0": pa.array([_to_bytes(r["jpg_0"], image_format) for r in rows], pa.binary()),
        "jpg_1": pa.array([_to_bytes(r["jpg_1"], image_format) for r in rows], pa.binary()),
        "label_0": pa.array([r["label_0"] for r in rows], pa.float64()),
        "label_1": pa.array([r["label_1"] for r in rows], pa.float64()),
        "ranking_id": pa.array([r.get("ranking_id", i) for i, r in enumerate(rows)], pa.int64()),
        "image_0_uid": pa.array([str(r.get("image_0_uid", f"{i}_0")) for i, r in enumerate(rows)], pa.string()),
        "image_1_uid": pa.array([str(r.get("image_1_uid", f"{i}_1")) for i, r in enumerate(rows)], pa.string()),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)
    return path


# ---------------------------------------------------------------------------------------------
# Encoding and caching


def to_pixels(image: Any, resolution: int) -> torch.Tensor:
    """Resize the shorter side to ``resolution`` (bilinear), center-crop, -> (3, R, R) in [-1, 1]."""
    from PIL import Image

    w, h = image.size
    scale = resolution / min(w, h)
    size = (resolution, int(resolution * h / w)) if w <= h else (int(resolution * w / h), resolution)
    if scale != 1:
        image = image.resize(size, Image.BILINEAR)
    w, h = image.size
    left, top = int(round((w - resolution) / 2)), int(round((h - resolution) / 2))
    image = image.crop((left, top, left + resolution, top + resolution))
    arr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    return arr.permute(2, 0, 1)


def model_fingerprint(pipe: Any) -> str:
    """sha256 of the pipeline class, the VAE and text encoders' configs and weights, the tokenizers' vocab."""
    h = hashlib.sha256(type(pipe).__name__.encode())
    for name in ("vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        config = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
        # where it was loaded from and with which library version do not change the weights' output
        config = {k: v for k, v in config.items() if not k.startswith("_") and not k.endswith("_version")}
        h.update(name.encode() + json.dumps(config, sort_keys=True, default=str).encode())
        for key, t in module.state_dict().items():
            h.update(f"{key}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    for name in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, name, None)
        if tok is not None:
            h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    return h.hexdigest()


def _encode_latents(pipe: Any, blobs: Sequence[bytes], device: torch.device, resolution: int,
                    batch_size: int) -> torch.Tensor:
    from methods.core.diffusion import encode_images

    out = []
    for lo in range(0, len(blobs), batch_size):
        pixels = torch.stack([to_pixels(decode_image(b), resolution) for b in blobs[lo:lo + batch_size]])
        out.append(encode_images(pipe.vae, pixels.to(device)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def _posterior(vae: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) in [-1, 1] -> the VAE posterior's mean and std, scaled as training latents are
    (official train.py:1028-1029: ``latent_dist.sample() * scaling_factor``), float32 on CPU, (B, C, h, w) each.
    The mean is exactly ``encode_images``' latent."""
    from methods.core.diffusion import _vae_shift

    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    scale = vae.config.scaling_factor
    return ((dist.mean - _vae_shift(vae)) * scale).float().cpu(), (dist.std * scale).float().cpu()


def _encode_posteriors(pipe: Any, blobs: Sequence[bytes], device: torch.device, resolution: int, batch_size: int,
                       side: str) -> dict[str, torch.Tensor]:
    """PairData's fields of one side ("w", "l"): posterior mean and std of each image and of its horizontal
    flip. The flip is of the resized, centre-cropped pixels, as the official transforms order them
    (Resize, CenterCrop, RandomHorizontalFlip: train.py:758-760)."""
    names = (f"latents_{side}", f"std_{side}", f"flipped_{side}", f"flipped_std_{side}")
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for lo in range(0, len(blobs), batch_size):
        pixels = torch.stack([to_pixels(decode_image(b), resolution) for b in blobs[lo:lo + batch_size]]).to(device)
        for (mean_name, std_name), px in ((names[:2], pixels), (names[2:], pixels.flip(-1))):
            mean, std = _posterior(pipe.vae, px)
            parts[mean_name].append(mean)
            parts[std_name].append(std)
    return {name: torch.cat(v) for name, v in parts.items()}


def _encode_captions(pipe: Any, captions: Sequence[str], device: torch.device, batch_size: int):
    """Unique captions encoded once: (Cond with one row per unique caption on CPU, (N,) row index)."""
    from methods.core.diffusion import encode_prompts

    unique = list(dict.fromkeys(captions))
    row = {c: i for i, c in enumerate(unique)}
    parts = [encode_prompts(pipe, unique[lo:lo + batch_size], device).to("cpu", torch.float32)
             for lo in range(0, len(unique), batch_size)]
    return Cond.cat(parts), torch.tensor([row[c] for c in captions], dtype=torch.long)


def _cache_file(cache_dir: Path, kind: str, *parts: object) -> Path:
    key = hashlib.sha256(json.dumps([CACHE_VERSION, kind, *parts]).encode()).hexdigest()[:24]
    return Path(cache_dir) / f"{kind}-{key}.safetensors"


def _save(path: Path, tensors: dict[str, torch.Tensor], cond: Cond, index: torch.Tensor, captions: list[str]) -> None:
    from safetensors.torch import save_file

    tensors = {**tensors, "embeds": cond.embeds, "caption_index": index,
               **{f"added.{k}": v for k, v in cond.added.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    integrity.remove_stale(path.parent.glob(f"{path.name}.*.tmp"))  # what killed runs left of this entry
    tmp = integrity.tmp_path(path)  # per process: two runs computing one entry never share a temporary
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"captions": json.dumps(captions)})
    integrity.write_sidecar(tmp, path)  # first: an entry renamed without its sha256 would not be trusted
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache entry


def _cached(path: Path) -> bool:
    """Whether an intact cache entry is at ``path``; a damaged or unverifiable one is named and recomputed."""
    if not path.exists():
        return False
    problem = integrity.sidecar_problem(path)
    if problem is not None:
        logging.getLogger(__name__).warning("cache entry %s: %s; computing it again", path, problem)
    return problem is None


def _load(path: Path) -> tuple[dict[str, torch.Tensor], Cond, list[str]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        captions = json.loads(f.metadata()["captions"])
    idx = t.pop("caption_index")
    added = {k.removeprefix("added."): t.pop(k)[idx] for k in list(t) if k.startswith("added.")}
    return t, Cond(t.pop("embeds")[idx], added), captions


def encode_pairs(pipe: Any, pairs: PickapicPairs, device: torch.device | str, resolution: int,
                 cache_dir: Path, batch_size: int = 32) -> PairData:
    """Pairs -> ``PairData`` on CPU (each image's posterior mean and std, and its flip's; captions encoded
    once each), cached."""
    if len(pairs) == 0:
        raise ValueError("no pairs to encode (all skipped or dropped as ties?)")
    path = _cache_file(cache_dir, "pairs", pairs.content_hash(), model_fingerprint(pipe), resolution)
    if not _cached(path):
        device = torch.device(device)
        cond, index = _encode_captions(pipe, pairs.captions, device, batch_size)
        tensors = {**_encode_posteriors(pipe, pairs.images_w, device, resolution, batch_size, "w"),
                   **_encode_posteriors(pipe, pairs.images_l, device, resolution, batch_size, "l"),
                   "label": torch.tensor(pairs.label, dtype=torch.float32)}
        _save(path, tensors, cond, index, list(pairs.captions))
    t, cond, captions = _load(path)
    return PairData(t["latents_w"], t["latents_l"], cond, t["label"], captions, **{k: t[k] for k in POSTERIOR_FIELDS})


def encode_images_data(pipe: Any, images: CaptionedImages, device: torch.device | str, resolution: int,
                       cache_dir: Path, batch_size: int = 32) -> ImageData:
    """Captioned images -> ``ImageData`` on CPU, cached like ``encode_pairs``."""
    if len(images) == 0:
        raise ValueError("no images to encode")
    path = _cache_file(cache_dir, "images", images.content_hash(), model_fingerprint(pipe), resolution)
    if not _cached(path):
        device = torch.device(device)
        cond, index = _encode_captions(pipe, images.captions, device, batch_size)
        latents = _encode_latents(pipe, images.images, device, resolution, batch_size)
        _save(path, {"latents": latents}, cond, index, list(images.captions))
    t, cond, captions = _load(path)
    return ImageData(t["latents"], cond, captions)


def write_captioned(path: Path, captions: Sequence[str], images: Sequence[Any], image_format: str = "PNG") -> Path:
    """A captioned-image shard: columns ``caption``, ``image`` (encoded bytes), ``id``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"caption": pa.array(list(captions), pa.string()),
                      "image": pa.array([_to_bytes(im, image_format) for im in images], pa.binary()),
                      "id": pa.array([str(i) for i in range(len(captions))], pa.string())})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_captioned(paths: Sequence[Path] | Path) -> CaptionedImages:
    """Read captioned-image shards (``caption`` + ``image`` bytes, optional ``id``); bad rows are refused."""
    import pyarrow.parquet as pq

    out = CaptionedImages([], [], [])
    for path in _shards(paths):
        names = pq.read_schema(path).names
        missing = [c for c in ("caption", "image") if c not in names]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; a captioned-image shard has caption, image")
        cols = pq.read_table(path).to_pydict()
        for r, (caption, image) in enumerate(zip(cols["caption"], cols["image"])):
            if not caption or not _decodable(image):
                raise ValueError(f"{path}, row {r}: empty caption or undecodable image")
            out.captions.append(caption)
            out.images.append(image)
            out.ids.append(str(cols["id"][r]) if "id" in cols else f"{path.name}:{r}")
    return out
