"""Best-of-N: the compute-matched baseline every alignment method has to beat. It trains nothing.

For each prompt and seed it draws N candidates with the base model and keeps the one a chosen
reward (the verifier) scores best (inference-time scaling, Ma et al. 2025, arXiv 2501.09732).
Candidate 0 starts from the seed's own initial noise, the very image base draws; candidate k > 0
from ``candidate_seed(seed, k)``, a fixed function of the seed, so a rerun keeps the same image.

The verifier is never the tiny world's oracle (that is the truth it is measured on): by default it
is the model family's in-loop reward (tiny-pickscore on the tiny world, PickScore on real models),
and the report marks it as trained-on. Its cost is N samples plus N verifier scores per image,
counted in the run's sample time.
"""

from __future__ import annotations

from dataclasses import dataclass

from methods.core.api import Method, MethodConfig
from methods.core.diffusion import seed_for


@dataclass(frozen=True)
class BestOfNConfig(MethodConfig):
    n: int = 4  # candidates per (prompt, seed)
    verifier: str = ""  # reward id that picks the candidate; "" = the model family's in-loop reward

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.n <= 64:
            raise ValueError(f"n must be from 1 to 64, got {self.n}")
        if self.verifier == "oracle":
            raise ValueError("verifier 'oracle' is the truth best_of_n is measured on; pick a learned reward")


def candidate_seed(seed: int, k: int) -> int:
    """The initial-noise seed of candidate ``k`` of the image whose own seed is ``seed`` (k = 0: itself)."""
    return seed if k == 0 else seed_for("best_of_n", seed, k)


class BestOfN(Method):
    id = "best_of_n"
    paper = "Best-of-N sampling under a reward (inference-time scaling, arXiv 2501.09732)"
    Config = BestOfNConfig
    defaults = {
        "tiny": {"guidance_scale": 5.0},  # base's, so only the selection differs from base
        "sd15": {"guidance_scale": 7.5},
        "sdxl": {"guidance_scale": 5.0},
    }

    def candidate_seeds(self, seed: int) -> list[int]:
        return [candidate_seed(seed, k) for k in range(self.cfg.n)]

    def verifier(self, loop_reward: str) -> str | None:
        return self.cfg.verifier or loop_reward


METHOD = BestOfN
