"""Diversity of a set of images in an embedding space: mean pairwise distance and the Vendi score.

Vendi score — Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine
Learning", TMLR 2023, arXiv:2210.02410. For n samples and a similarity kernel K (n × n, K_ii = 1),
VS = exp(−Σ_i λ_i log λ_i) with λ the eigenvalues of K/n (0 log 0 = 0): the exponential of the
Shannon entropy of the spectrum, read as the effective number of distinct samples. It is 1 when all
samples are identical and n when they are mutually orthogonal. Here K is the cosine kernel of the
embeddings (K = X̂ X̂ᵀ over L2-normalised rows), the choice the paper makes for embedding spaces.
The mean pairwise distance is the mean of 1 − cos over the n(n−1)/2 pairs, in [0, 2].

The maintained package (``vendi-score`` 0.0.3, PyPI, 2022) is not used: it is an sdist only, and it
pulls in scipy and scikit-learn for one symmetric eigendecomposition that numpy does as well.

An ``Embedder`` turns PIL images into (n, d) vectors. The two here reuse a reward model that the
runner loads anyway, so nothing new is loaded or downloaded: the tiny world's fidelity classifier
(its 64-d penultimate features, metrics/fidelity.py) and the CLIP score backbone (the 768-d projected
image embedding of OpenAI CLIP ViT-L/14, metrics/clip.py). They take the loaded reward as an argument
(duck-typed), so this file imports no reward module.
"""

from __future__ import annotations

from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

_MAX_VALUES_PER_CHUNK = 1 << 22  # float64 values gathered at once by ``diversity_by_group``: ~32 MB


# -- the two measures ------------------------------------------------------------------------------
def unit_rows(emb: np.ndarray) -> np.ndarray:
    """(n, d) float64 rows scaled to unit L2 norm; refuses NaN, inf and all-zero rows (no direction)."""
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n, d), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or inf")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an embedding is all zeros: it has no direction, so no cosine")
    return x / norms


def mean_pairwise_distance(emb: np.ndarray) -> float:
    """Mean of 1 − cos(x_i, x_j) over all pairs i < j of the (n, d) rows; 0.0 for fewer than 2 rows.

    O(n·d): with unit rows, Σ_{i≠j} x̂_i·x̂_j = |Σ_i x̂_i|² − Σ_i |x̂_i|², so no n × n matrix is built.
    """
    x = unit_rows(emb)
    n = x.shape[0]
    if n < 2:
        return 0.0
    s = x.sum(axis=0)
    mean_cos = (s @ s - np.einsum("ij,ij->", x, x)) / (n * (n - 1))
    return float(np.clip(1.0 - mean_cos, 0.0, 2.0))


def _entropy_exp(eig: np.ndarray) -> np.ndarray:
    """exp(Shannon entropy) of each row of (..., k) eigenvalues, normalised to sum 1; 0 log 0 = 0.

    Tiny negative eigenvalues are rounding (K is a Gram matrix, so positive semi-definite): clipped.
    Dividing by the trace rather than n is the same for unit rows and exact when they are off by ulps.
    """
    lam = np.clip(eig, 0.0, None)
    lam = lam / lam.sum(axis=-1, keepdims=True)
    terms = np.where(lam > 0, lam * np.log(np.where(lam > 0, lam, 1.0)), 0.0)
    return np.exp(-terms.sum(axis=-1))


def vendi_score(emb: np.ndarray) -> float:
    """Vendi score of the (n, d) rows with the cosine kernel: 1.0 for identical rows, n for orthogonal.

    K/n = X̂X̂ᵀ/n (n × n) and X̂ᵀX̂/n (d × d) share their nonzero eigenvalues, so the smaller one is
    decomposed: a whole run's 10^4 images in a 768-d space cost one 768 × 768 eigendecomposition.
    """
    x = unit_rows(emb)
    n, d = x.shape
    if n == 0:
        raise ValueError("the Vendi score of an empty set is undefined")
    gram = x @ x.T if n <= d else x.T @ x
    return float(_entropy_exp(np.linalg.eigvalsh(gram)))


def diversity_by_group(emb: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """Both measures for every group of rows at once: (N, d) embeddings, (N,) group codes 0..G−1.

    Returns (G,) arrays ``n`` (rows of the group), ``mean_pairwise_distance`` and ``vendi``, a group
    of one row scoring 0 and 1. Groups of equal size are stacked to (g, n, d) and decomposed together
    (``eigvalsh`` is batched), so the Python loop runs over distinct sizes and memory chunks, never
    over groups or images. Rows are normalised in float64 chunk by chunk: a float32 (N, d) input is
    never copied whole to float64.
    """
    emb = np.asarray(emb)
    codes = np.asarray(groups)
    if emb.ndim != 2 or codes.shape != (emb.shape[0],):
        raise ValueError(f"embeddings must be (N, d) and groups (N,): {emb.shape}, {codes.shape}")
    if codes.size and (codes.min() < 0 or not np.issubdtype(codes.dtype, np.integer)):
        raise ValueError("group codes must be non-negative integers")
    sizes = np.bincount(codes) if codes.size else np.zeros(0, dtype=np.int64)
    if np.any(sizes == 0):
        raise ValueError("group codes must be 0..G-1 with every code used")
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    mpd = np.zeros(sizes.size, dtype=np.float64)
    vendi = np.ones(sizes.size, dtype=np.float64)
    for n in np.unique(sizes[sizes >= 2]):
        for chunk in _chunks(np.flatnonzero(sizes == n), n * emb.shape[1]):
            rows = order[starts[chunk][:, None] + np.arange(n)]  # (g, n) row indices of each group
            x = unit_rows(emb[rows.ravel()]).reshape(len(chunk), n, -1)  # (g, n, d)
            k = x @ x.transpose(0, 2, 1)  # (g, n, n) cosine kernels
            diag = np.diagonal(k, axis1=1, axis2=2)  # (g, n)
            # ½|x̂_i − x̂_j|² = ½(K_ii + K_jj) − K_ij equals 1 − cos for unit rows, and is exactly 0
            # for two identical rows even where their norms are a few ulps off 1.
            half_sq = 0.5 * (diag[:, :, None] + diag[:, None, :]) - k
            mpd[chunk] = np.clip(half_sq.sum(axis=(1, 2)) / (n * (n - 1)), 0.0, 2.0)
            vendi[chunk] = _entropy_exp(np.linalg.eigvalsh(k))
    return {"n": sizes, "mean_pairwise_distance": mpd, "vendi": vendi}


def _chunks(index: np.ndarray, values_per_group: int) -> Iterator[np.ndarray]:
    step = max(1, _MAX_VALUES_PER_CHUNK // max(1, values_per_group))
    for i in range(0, index.size, step):
        yield index[i:i + step]


# -- embedders -------------------------------------------------------------------------------------
class Embedder:
    """Images -> (n, d) float32 vectors in one embedding space.

    ``id`` names the space (the store's ``space``); ``version`` changes whenever the vectors could:
    the code version plus the version of the reward whose weights compute them.
    """

    id: ClassVar[str]
    base_version: ClassVar[str]  # bump when the computation changes
    reward_id: ClassVar[str]  # the reward whose loaded model this embedder reuses

    def __init__(self, reward: Any):
        if getattr(reward, "id", None) != self.reward_id:
            raise ValueError(f"embedder {self.id!r} needs the loaded {self.reward_id!r} reward, "
                             f"got {getattr(reward, 'id', reward)!r}")
        self.reward = reward

    @property
    def version(self) -> str:
        return f"{self.base_version}+{self.reward.version}"

    def embed(self, images: Sequence[Any]) -> np.ndarray:
        """(n, d) float32 embeddings of n PIL images, independent of how they are batched."""
        if len(images) == 0:
            raise ValueError(f"embedder {self.id!r}: no images to embed")
        out = np.asarray(self._embed(list(images)), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(images) or not np.all(np.isfinite(out)):
            raise ValueError(f"embedder {self.id!r} returned {out.shape} (or non-finite values) "
                             f"for {len(images)} images")
        return out

    def _embed(self, images: list[Any]) -> np.ndarray:
        raise NotImplementedError


class FidelityFeatures(Embedder):
    """The tiny world's fidelity classifier: 64-d global-average-pooled features, the input of both
    its heads (shape and colour). Two images close here are hard for it to tell apart."""

    id = "fidelity-features"
    base_version = "fidelity-features-v1"
    reward_id = "fidelity"

    def _embed(self, images: list[Any]) -> np.ndarray:
        return self.reward.image_features(images)


class ClipImage(Embedder):
    """The CLIP score backbone (OpenAI CLIP ViT-L/14): its 768-d projected image embedding, the vector
    the CLIP score compares with the prompt, computed by the same processor and weights."""

    id = "clip-vitl14"
    base_version = "clip-vitl14-image-v1"
    reward_id = "clip"

    def _embed(self, images: list[Any]) -> np.ndarray:
        return self.reward.image_embeddings(images)


EMBEDDERS: dict[str, type[Embedder]] = {e.reward_id: e for e in (FidelityFeatures, ClipImage)}


def embedder_for(reward: Any) -> Embedder:
    """The embedder that reuses this loaded reward; refused for a reward without one."""
    rid = getattr(reward, "id", None)
    if rid not in EMBEDDERS:
        raise ValueError(f"no embedding space for reward {rid!r}; available: {', '.join(sorted(EMBEDDERS))}")
    return EMBEDDERS[rid](reward)
