"""A released fine-tune that is none of the registered methods (MaPO, SPO, Diffusion-KTO, ...).

It trains nothing here: ``bench run --methods finetuned@mapo-sdxl`` samples the published UNet with
ordinary classifier-free guidance, paired with base on the same prompts, seeds and initial noise.
"""

from methods.core.api import MethodConfig
from methods.core.training import TrainedUNetMethod


class Finetuned(TrainedUNetMethod):
    id = "finetuned"
    paper = "(a published fine-tune, evaluated as it is: finetuned@WEIGHTS)"
    Config = MethodConfig
    trains = False
    in_default_run = False  # it needs weights: finetuned@WEIGHTS
    defaults = {
        "tiny": {"guidance_scale": 5.0},  # base's: only the weights differ
        "sd15": {"guidance_scale": 7.5},
        "sdxl": {"guidance_scale": 5.0},
    }


METHOD = Finetuned
