"""Published preference-aligned checkpoints, and the numbers their papers report.

A catalogue entry says where the weights are (hub repo and the exact files), how they are laid out
(what ``bench.published`` must do to get a UNet from them), which base model and method they belong to,
and the sampler their authors used, each with the source it was read from. ``checked`` records whether
the file list was compared with the repo's published file list (model card, file tree or the official
code that loads it); ``check_note`` says how, or why it could not be.

Formats (``Checkpoint.format``):

  unet-folder   a diffusers UNet in ``unet/`` (``UNet2DConditionModel.from_pretrained(repo, subfolder="unet")``)
  unet-root     a diffusers UNet at the repo root (config.json + weights beside it)
  pipeline      a whole diffusers pipeline folder (model_index.json); only its ``unet/`` is used, so text
                encoders and VAE stay the base model's and the comparison with base stays like for like
  lora          a LoRA file; ``lora_layout`` is its key layout: diffusers (``unet.…lora.down/up`` or
                ``lora_A/B``), peft (``base_model.model.….lora_A.weight`` + adapter_config.json) or kohya
                (``lora_unet_…lora_down.weight`` + ``alpha``)
  npo-negative  weights for the UNCONDITIONAL branch of CFG (Diffusion-NPO, Self-NPO): a LoRA delta δ or a
                full UNet; the negative is θ_neg = m·θ_base + (1 − m)·θ_pos + δ with m = ``merge_weight``

Files are fetched with ``fetch_command`` into ``$BENCH_WEIGHTS/<repo>/`` (or with plain ``hf download``
into the Hugging Face cache); ``bench.published`` looks in both, never on the network.

``PAPER_NUMBERS`` holds only values read at their source; ``compare`` says whether a paper's value lies in
the harness's confidence interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bench.models import HUB_ALIASES
from metrics.core import weights as hubfiles

FORMATS = ("unet-folder", "unet-root", "pipeline", "lora", "npo-negative")
LORA_LAYOUTS = ("diffusers", "peft", "kohya")
BASES = ("sd15", "sdxl")
HARNESS_METHODS = ("dpo", "sdpo", "npo", "self_npo", "tailorpo", "contrastive")  # else "finetuned"
STATISTICS = ("win_rate_vs_base", "mean", "preference_accuracy")


class CheckpointError(KeyError):
    pass


@dataclass(frozen=True)
class Sampler:
    """The sampler the authors used with the checkpoint. CFG in the diffusers form ε_u + g(ε_c − ε_u)."""

    guidance_scale: float
    steps: int
    scheduler: str  # class name, or "pipeline default (<class>)" where the authors left it as shipped
    resolution: int
    source: str  # where these values were read
    vae: str = ""  # a replacement VAE the authors loaded ("madebyollin/sdxl-vae-fp16-fix"), "" = the base's

    def describe(self) -> str:
        vae = f", VAE {self.vae}" if self.vae else ""
        return f"g={self.guidance_scale:g}, {self.steps} steps, {self.scheduler}, {self.resolution}px{vae}"


@dataclass(frozen=True)
class Checkpoint:
    name: str  # short id: "dpo-sdxl"
    repo: str  # Hugging Face repo id
    files: tuple[str, ...]  # exact paths inside the repo (a glob only where the names could not be read)
    format: str  # one of FORMATS
    base: str  # "sd15" | "sdxl"
    method: str  # a HARNESS_METHODS id, else "finetuned"
    paper_method: str  # what the paper calls it: dpo, spo, mapo, kto, npo, self_npo
    paper: str  # arXiv id of the method's paper
    license: str  # as the repo states it ("not stated" where it does not)
    sampler: Sampler
    checked: bool
    check_note: str
    lora_layout: str | None = None  # format lora, or an npo-negative stored as a LoRA
    merge_weight: float | None = None  # npo-negative: m of the official generation script
    pairs_with: tuple[str, ...] = ()  # npo-negative: the positives the authors paired it with ("" = base)
    note: str = ""

    def __post_init__(self) -> None:
        checks = [
            (self.format in FORMATS, f"format {self.format!r}; available: {', '.join(FORMATS)}"),
            (self.base in BASES, f"base {self.base!r}; available: {', '.join(BASES)}"),
            (self.method in (*HARNESS_METHODS, "finetuned"), f"method {self.method!r}"),
            (self.lora_layout in (None, *LORA_LAYOUTS), f"lora_layout {self.lora_layout!r}"),
            ((self.format == "lora") <= (self.lora_layout is not None), "a lora needs its lora_layout"),
            (self.format == "npo-negative" or self.merge_weight is None, "merge_weight is for npo-negative only"),
            (self.format != "npo-negative" or self.merge_weight is not None or not self.checked,
             "a checked npo-negative entry states its merge_weight"),
            (bool(self.files), "no files"),
        ]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"checkpoint {self.name}: {what}")

    @property
    def base_repo(self) -> str:
        return HUB_ALIASES[self.base]

    @property
    def source(self) -> hubfiles.Source:
        """The files as the project's one weight lookup (metrics.core.weights) knows them."""
        return hubfiles.Source(self.repo, self.files)


def fetch_command(entry: Checkpoint, root: Path | None = None) -> str:
    """``hf download <repo> <files> --local-dir <root>/<repo>``: where ``bench.published`` looks first.
    ``root`` defaults to ``$BENCH_WEIGHTS`` (~/.cache/diffusion-pref-bench/weights)."""
    return entry.source.fetch_command(Path(root) if root is not None else hubfiles.local_root(), local=True)


# ---------------------------------------------------------------------------------------------------
# The catalogue. Sizes quoted in the notes are the hub's file listing; "LoRA rank r" is inferred from
# them by counting the parameters of the attention projections (to_q/k/v/out.0) of the SD1.5/SDXL UNet.

_HF = "https://huggingface.co"
_DPO_NB = ("SalesforceAIResearch/DiffusionDPO quick_samples.ipynb (commit dff8e10): gs = 5 for SDXL, 7.5 "
           "otherwise; steps, scheduler and size left at the pipeline's defaults. The paper does not state "
           "the sampler of its evaluations")
_SPO_INF = "RockeyCoss/SPO spo_training_and_inference/inference_scripts/inference_spo_{}.py (commit 27a8642)"
_NPO_GEN = "G-U-N/Diffusion-NPO {} (commit a14f1db)"
_SD15_PNDM = "pipeline default (PNDMScheduler)"
_SDXL_EULER = "pipeline default (EulerDiscreteScheduler)"
_FP16_FIX = "madebyollin/sdxl-vae-fp16-fix"

CATALOGUE: dict[str, Checkpoint] = {c.name: c for c in [
    Checkpoint(
        "dpo-sd15", "mhdang/dpo-sd1.5-text2image-v1", ("unet/config.json", "unet/diffusion_pytorch_model.safetensors"),
        "unet-folder", "sd15", "dpo", "dpo", "2311.12908", "openrail++",
        Sampler(7.5, 50, _SD15_PNDM, 512, _DPO_NB),
        checked=True,
        check_note=f"file tree {_HF}/mhdang/dpo-sd1.5-text2image-v1/tree/main/unet (config.json 1.77 kB, "
                   "diffusion_pytorch_model.safetensors 3.44 GB, i.e. float32); licence from the model card",
    ),
    Checkpoint(
        "dpo-sdxl", "mhdang/dpo-sdxl-text2image-v1", ("unet/config.json", "unet/diffusion_pytorch_model.safetensors"),
        "unet-folder", "sdxl", "dpo", "dpo", "2311.12908", "openrail++",
        Sampler(5.0, 50, _SDXL_EULER, 1024, _DPO_NB),
        checked=True,
        check_note=f"file tree {_HF}/mhdang/dpo-sdxl-text2image-v1/tree/c78eb46/unet (config.json 1.77 kB, "
                   "diffusion_pytorch_model.safetensors 10.3 GB, float32); quick_samples.ipynb loads it with "
                   "subfolder='unet'",
    ),
    Checkpoint(
        "mapo-sdxl", "mapo-t2i/mapo-beta", ("config.json", "diffusion_pytorch_model.safetensors"),
        "unet-root", "sdxl", "finetuned", "mapo", "2406.06424", "openrail++",
        Sampler(5.0, 30, _SDXL_EULER, 1024, "mapo-t2i/mapo README 'Inference': num_inference_steps=30, guidance "
                "left at the SDXL pipeline default (5.0), fp16-fix VAE", vae=_FP16_FIX),
        checked=True,
        check_note=f"file tree {_HF}/mapo-t2i/mapo-beta/tree/7d6af58 (config.json 1.85 kB, "
                   "diffusion_pytorch_model.safetensors 10.3 GB at the root); the README loads it with "
                   "UNet2DConditionModel.from_pretrained('mapo-t2i/mapo-beta') (no subfolder)",
    ),
    Checkpoint(
        "spo-sd15", "SPO-Diffusion-Models/SPO-SD-v1-5_4k-p_10ep",
        ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"),
        "pipeline", "sd15", "finetuned", "spo", "2406.04314", "apache-2.0",
        Sampler(7.5, 50, "the checkpoint's own scheduler/ (class not read)", 512, _SPO_INF.format("sd-v1-5")),
        checked=True,
        check_note=f"file tree {_HF}/SPO-Diffusion-Models/SPO-SD-v1-5_4k-p_10ep/tree/05d238c (a full pipeline: "
                   "model_index.json, scheduler/, text_encoder/, tokenizer/, unet/, vae/, safety_checker/; "
                   "unet/diffusion_pytorch_model.safetensors 1.72 GB = float16). Only unet/ is used",
        note="SPO fine-tunes the UNet only (train_scripts/train_spo.py), so the base text encoder and VAE are used",
    ),
    Checkpoint(
        "spo-sd15-lora", "SPO-Diffusion-Models/SPO-SD-v1-5_4k-p_10ep_LoRA",
        ("spo-sd-v1-5_4k-p_10ep_lora_diffusers.safetensors",),
        "lora", "sd15", "finetuned", "spo", "2406.04314", "apache-2.0",
        Sampler(7.5, 50, _SD15_PNDM, 512, _SPO_INF.format("sd-v1-5") + " (full model; the LoRA card's usage "
                "was not read)"),
        checked=True, lora_layout="diffusers",
        check_note=f"file tree {_HF}/SPO-Diffusion-Models/SPO-SD-v1-5_4k-p_10ep_LoRA/tree/d85e1da (3.23 MB: "
                   "rank 4 in float32 on to_q/k/v/out.0); G-U-N/Diffusion-NPO gen.py loads it with "
                   "pipe.load_lora_weights. Key layout inferred from the '_diffusers' name and that loader, "
                   "not from reading the file",
    ),
    Checkpoint(
        "spo-sdxl", "SPO-Diffusion-Models/SPO-SDXL_4k-p_10ep",
        ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"),
        "pipeline", "sdxl", "finetuned", "spo", "2406.04314", "apache-2.0",
        Sampler(5.0, 50, "the checkpoint's own scheduler/ (class not read)", 1024, _SPO_INF.format("sdxl"),
                vae=_FP16_FIX),
        checked=True,
        check_note=f"file tree {_HF}/SPO-Diffusion-Models/SPO-SDXL_4k-p_10ep/tree/31b8b84 (model_index.json, "
                   "scheduler/, text_encoder(_2)/, tokenizer(_2)/, unet/, vae/; unet weights 5.14 GB = float16). "
                   "Only unet/ is used",
    ),
    Checkpoint(
        "spo-sdxl-lora", "SPO-Diffusion-Models/SPO-SDXL_4k-p_10ep_LoRA",
        ("spo_sdxl_10ep_4k-data_lora_diffusers.safetensors",),
        "lora", "sdxl", "finetuned", "spo", "2406.04314", "apache-2.0",
        Sampler(5.0, 50, _SDXL_EULER, 1024, _SPO_INF.format("sdxl") + " (full model; the LoRA card's usage "
                "was not read)", vae=_FP16_FIX),
        checked=True, lora_layout="diffusers",
        check_note=f"file tree {_HF}/SPO-Diffusion-Models/SPO-SDXL_4k-p_10ep_LoRA/tree/d544c41 (372 MB: rank 64 "
                   "in float32 on to_q/k/v/out.0, config spo_sdxl_*.py lora_rank=64); loaded with "
                   "pipe.load_lora_weights in G-U-N/Diffusion-NPO gen_xl.py and RL-SPO-NPO/train_spo_sdxl.py",
    ),
    Checkpoint(
        "npo-sd15", "wangfuyun/Diffusion-NPO", ("weights/sd15/sd15_beta500_2kiter.safetensors",),
        "npo-negative", "sd15", "npo", "npo", "2505.11245", "apache-2.0",
        Sampler(7.5, 25, "DPMSolverMultistepScheduler", 512, _NPO_GEN.format("gen.py defaults (--cfg 7.5, "
                "--num_inference_steps 25, DPMSolverMultistep, 512) and gen.sh")),
        checked=True, lora_layout="diffusers", merge_weight=0.0, pairs_with=("", "dpo-sd15"),
        check_note=f"file tree {_HF}/wangfuyun/Diffusion-NPO/tree/main/weights/sd15 (one file, 6.41 MB = rank 8 "
                   "float32 on to_q/k/v/out.0, as run_sd15.sh --rank=8). A LoRA delta: gen.py mixes base and "
                   "positive with merge_weight, then load_lora_weights + fuse_lora (scale 1); train_sd15.py saves it "
                   "with convert_state_dict_to_diffusers + save_lora_weights (diffusers keys). gen.sh: "
                   "--merge_weight=0.0",
    ),
    Checkpoint(
        "npo-sdxl", "wangfuyun/Diffusion-NPO", ("weights/sdxl/sdxl_beta2k_2kiter.safetensors",),
        "npo-negative", "sdxl", "npo", "npo", "2505.11245", "apache-2.0",
        Sampler(5.0, 25, "DPMSolverMultistepScheduler", 1024, _NPO_GEN.format("gen_xl.sh (--cfg=5) and gen_xl.py "
                "defaults (25 steps, DPMSolverMultistep, fp16-fix VAE)"), vae=_FP16_FIX),
        checked=True, lora_layout="diffusers", merge_weight=0.0, pairs_with=("", "dpo-sdxl"),
        check_note=f"file tree {_HF}/wangfuyun/Diffusion-NPO/tree/main/weights/sdxl (46.6 MB = rank 8 float32 "
                   "on to_q/k/v/out.0, exactly what train_sdxl.py's save_lora_weights writes). gen_xl.py as "
                   "published torch.load()s the path as a full UNet state dict, which a 46.6 MB file cannot be; "
                   "its commented 'original' path (mix with merge_weight, load_lora_weights, fuse_lora) fits the "
                   "file and is what is implemented. gen_xl.sh: --merge_weight=0.0",
    ),
    Checkpoint(
        "npo-spo-sdxl", "wangfuyun/Diffusion-NPO", ("weights/sdxl/spo_npo_10ep.safetensors",),
        "npo-negative", "sdxl", "npo", "npo", "2505.11245", "apache-2.0",
        Sampler(5.0, 20, "DDIMScheduler", 1024, _NPO_GEN.format("gen_xl.sh spo+npo line (--cfg=5 "
                "--num_inference_steps=20) and gen_xl.py load_spo_ours_pipeline (DDIMScheduler)")),
        checked=True, lora_layout="diffusers", merge_weight=0.0, pairs_with=("spo-sdxl-lora",),
        check_note=f"file tree {_HF}/wangfuyun/Diffusion-NPO/tree/main/weights/sdxl (170 MB). RL-SPO-NPO/"
                   "train_spo_sdxl.py trains it as a rank-64 LoRA on attn1 only, on top of base + the SPO LoRA "
                   "fused, and saves it with save_lora_weights; so θ_neg = θ_base + δ_spo + δ_npo, the positive "
                   "being spo-sdxl-lora",
    ),
    Checkpoint(
        "self-npo-sd15", "wangfuyun/Diffusion-NPO", ("weights_self_npo/*",),
        "npo-negative", "sd15", "self_npo", "self_npo", "2505.11777", "apache-2.0",
        Sampler(7.5, 25, "DPMSolverMultistepScheduler", 512, "not published: Self-NPO ships no generation script; "
                "assumed Diffusion-NPO's gen.py protocol, which the Self-NPO paper says it follows (unverified)"),
        checked=False,
        check_note=f"{_HF}/wangfuyun/Diffusion-NPO/tree/main lists a folder weights_self_npo/ ('Upload 3 files') "
                   "whose file names and sizes the search tools did not reach. Self-NPO/train.py trains the full "
                   "UNet (save_pretrained, plus a unet.ckpt state dict), so full weights are expected; the merge "
                   "weight β of θ_neg = θ_base + β·δ is not published. Pass the file explicitly once fetched",
    ),
    Checkpoint(
        "self-npo-sdxl", "wangfuyun/Diffusion-NPO", ("weights_self_npo/*",),
        "npo-negative", "sdxl", "self_npo", "self_npo", "2505.11777", "apache-2.0",
        Sampler(5.0, 25, "DPMSolverMultistepScheduler", 1024, "not published; assumed Diffusion-NPO's gen_xl.sh "
                "protocol (unverified)", vae=_FP16_FIX),
        checked=False,
        check_note="as self-npo-sd15: file names under weights_self_npo/ not seen; full UNet weights expected "
                   "from Self-NPO/train_xl.py",
    ),
    Checkpoint(
        "kto-sd15", "jacklishufan/diffusion-kto", ("unet/config.json", "unet/diffusion_pytorch_model.safetensors"),
        "unet-folder", "sd15", "finetuned", "kto", "2404.04465", "not stated",
        Sampler(7.0, 50, _SD15_PNDM, 512, "jacklishufan/diffusion-kto readme.md 'Usage' (num_inference_steps=50, "
                "guidance_scale=7.0, runwayml/stable-diffusion-v1-5 VAE and scheduler)"),
        checked=False,
        check_note=f"readme loads it with subfolder='unet'; the file names were read only in the tree of commit "
                   f"2c46cc7 ({_HF}/jacklishufan/diffusion-kto/tree/refs%2Fpr%2F1/unet: config.json, "
                   "diffusion_pytorch_model.safetensors 1.72 GB = float16). main's unet/ was changed by commit "
                   "745f04e ('update') and its listing was not reachable; no licence on the model card",
    ),
]}


def get(name: str) -> Checkpoint:
    if name not in CATALOGUE:
        raise CheckpointError(f"unknown checkpoint {name!r}; available: {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


def rows(root: Path | None = None) -> list[dict[str, str]]:
    """The catalogue as plain rows for ``bench list checkpoints``: one dict of strings per entry."""
    return [{
        "name": c.name, "repo": c.repo, "format": c.format + (f" ({c.lora_layout})" if c.lora_layout else ""),
        "base": f"{c.base} ({c.base_repo})", "method": c.method if c.method != "finetuned"
        else f"finetuned ({c.paper_method})", "paper": f"arXiv {c.paper}", "license": c.license,
        "sampler": c.sampler.describe(), "sampler_source": c.sampler.source,
        "merge_weight": "" if c.merge_weight is None else f"{c.merge_weight:g}",
        "checked": "yes" if c.checked else "no", "check_note": c.check_note, "fetch": fetch_command(c, root),
    } for c in CATALOGUE.values()]


# ---------------------------------------------------------------------------------------------------
# Paper numbers


@dataclass(frozen=True)
class PaperNumber:
    paper: str
    table: str  # where in the paper: "Table 2", "Sec. 5.2 / Fig. 3 (top left)"
    checkpoint: str  # a CATALOGUE name
    suite: str  # the harness suite id where one matches the paper's prompts, else the paper's name for them
    reward: str  # the harness reward id where one matches, else "human:<question>" (not reproducible here)
    statistic: str  # one of STATISTICS
    value: float  # as printed
    protocol: str  # how the paper obtained it
    source: str  # where the value was read
    scale: float = 1.0  # printed value = harness value × scale (the HPS tables print the cosine ×100)

    @property
    def harness_value(self) -> float:
        """The value on the harness's scale (a win rate as a fraction, a reward as the reward returns it)."""
        return self.value / self.scale


_DPO_PAPER = "Wallace et al. 2023, Diffusion Model Alignment Using Direct Preference Optimization, arXiv 2311.12908"
_DPO_TEXT = ("the paper's text (CVPR 2024 version, as stored in a public full-text copy of arXiv 2311.12908 read "
             "through the code index); the automated win rates of its Fig. 6 / Fig. S3 are plots without printed "
             "numbers and were not entered")
_HUMAN = "Amazon Mechanical Turk, 5 labellers per comparison, majority (3+) decides; vs SDXL-1.0 base"

PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    PaperNumber(_DPO_PAPER, "Sec. 5.2 / Fig. 3 (top left)", "dpo-sdxl", "parti", "human:general-preference",
                "win_rate_vs_base", 70.0, f"PartiPrompts (1632), Q1 'Which image do you prefer given the prompt?'; "
                f"{_HUMAN}", _DPO_TEXT, scale=100.0),
    PaperNumber(_DPO_PAPER, "Sec. 5.2 / Fig. 3 (top right)", "dpo-sdxl", "hpdv2", "human:general-preference",
                "win_rate_vs_base", 64.7, f"HPSv2 benchmark prompts (3200), Q1; {_HUMAN}", _DPO_TEXT, scale=100.0),
    PaperNumber(_DPO_PAPER, "Sec. 5.2", "dpo-sdxl", "hpdv2", "hpsv2", "mean", 28.16,
                "DPO-SDXL generations for the HPSv2 benchmark prompts scored with the HPSv2 reward model "
                "(v2.0, printed ×100 as on the HPSv2 leaderboard); sampler not stated", _DPO_TEXT, scale=100.0),
    PaperNumber(_DPO_PAPER, "Table 2", "dpo-sd15", "pickapic-v2-validation", "implicit-reward",
                "preference_accuracy", 60.8, "binary preference accuracy of the model's implicit reward (Supp. "
                "S4.1, averaged over 10 random t) on the Pick-a-Pic v2 validation pairs", _DPO_TEXT, scale=100.0),
    PaperNumber(_DPO_PAPER, "Table 2", "dpo-sdxl", "pickapic-v2-validation", "implicit-reward",
                "preference_accuracy", 72.0, "as the dpo-sd15 row of Table 2", _DPO_TEXT, scale=100.0),
)


def compare(paper_value: float, ours: float, ci_low: float, ci_high: float) -> str:
    """"within CI" when the paper's value (on the harness's scale) lies in our interval [ci_low, ci_high],
    else "differs". ``ours`` is the point estimate the interval belongs to."""
    values = (paper_value, ours, ci_low, ci_high)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"compare needs finite numbers, got paper={paper_value}, ours={ours}, "
                         f"CI=[{ci_low}, {ci_high}]")
    if ci_low > ci_high:
        raise ValueError(f"confidence interval [{ci_low}, {ci_high}] has its ends swapped")
    return "within CI" if ci_low <= paper_value <= ci_high else "differs"
