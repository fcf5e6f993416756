"""The control: the base model, no training, plain classifier-free guidance.

Every report compares each method with this one on the same prompts, seeds and initial noise.
"""

from methods.core.api import Method, MethodConfig


class Base(Method):
    id = "base"
    paper = "(control)"
    Config = MethodConfig
    defaults = {
        "tiny": {"guidance_scale": 5.0},  # tiny world: chosen on tiny-train captions (bench/tiny)
        "sd15": {"guidance_scale": 7.5},  # Diffusion-DPO quick_samples.ipynb, SD1.5
        "sdxl": {"guidance_scale": 5.0},  # Diffusion-DPO quick_samples.ipynb, SDXL
    }


METHOD = Base
