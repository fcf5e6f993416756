"""Data parallelism for the training loops: one global batch, its rows split over processes.

A training step on N processes must be the single-process step: the same pairs, the same noise and
timestep for every sample, the same loss, the same update. The loops (``train_pairs``, Self-NPO,
TailorPO) ask ``ctx.dist`` four things; on one process (``DataParallel``) each is the identity, so
the single-process loop runs exactly as it always did.

- ``rows(n)``: this process's contiguous rows of a global (micro-)batch of n rows. Each process
  runs the UNet on its rows only: N processes × n/N rows (× accumulation) = the single-process batch.
- ``draws(gen, n)``: inside it, a draw from ``gen`` (randn, rand, randint) whose first dimension is
  this process's row count is made for all n rows and sliced to this process's rows. Every process
  keeps consuming ``gen`` exactly as one process would, so sample i gets the noise and timestep it
  gets on one process, whatever the layout, without the losses' own code knowing about processes.
- ``gather(x, n)``: the rows of every process, in order; differentiable for this process's rows.
  Losses and logs are computed on the gathered whole batch, identically on every process, so a loss
  that pools over its batch (SDPO's λ) stays exact; its backward reaches only the local rows.
- ``sum_grads(params)``: sum the partial gradients over processes once per optimizer step (DDP's
  bucketed all-reduce after gradient accumulation). Clipping and the optimizer then see the
  single-process gradient on every process, and the replicas stay identical.

Why not wrap the UNet in ``DistributedDataParallel``: the loops use their network in ways DDP's
reducer does not expect — the same LoRA module as its own reference with adapters switched off, an
EMA teacher, sampling rollouts, gradients of a reward with respect to latents (TailorPO-G), several
forwards per backward. One explicit all-reduce per optimizer step is what DDP does under
``no_sync`` with gradient accumulation, and leaves every loop calling the plain module.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch
from torch.overrides import TorchFunctionMode

BUCKET_BYTES = 64 << 20  # gradients are summed in flat buckets of about this size (DDP uses 25 MiB)


class DataParallel:
    """One process: every hook is the identity."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """The process that saves artifacts (every process holds the same weights)."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def check_split(self, sizes: Iterable[int], what: str) -> None:
        """Refuse a layout in which some process would get no rows of a (micro-)batch."""
        small = [s for s in sizes if 0 < s < self.world]
        if small:
            raise ValueError(f"{what}: a batch of {min(small)} cannot be split over {self.world} processes "
                             f"(each needs at least one row); use at least {self.world} or fewer processes")

    def draws(self, gen: torch.Generator, n: int) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def gather(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x

    def sum_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        return None


ONE_PROCESS = DataParallel()


class TorchDataParallel(DataParallel):
    """``rank`` of ``world`` processes of an initialised ``torch.distributed`` process group."""

    def __init__(self, rank: int, world: int, group: Any = None):
        self.rank, self.world, self.group = rank, world, group

    def draws(self, gen: torch.Generator, n: int) -> contextlib.AbstractContextManager:
        return _RowDraws(gen, self.rows(n), n, self.world)

    def gather(self, x: torch.Tensor, n: int) -> torch.Tensor:
        if x.ndim == 0:
            raise ValueError("gather takes per-row tensors (rows first), got a scalar")
        if x.requires_grad:
            return _GatherRows.apply(x, self, n)
        return self._all_gather(x, n)

    def _all_gather(self, x: torch.Tensor, n: int) -> torch.Tensor:
        import torch.distributed as dist

        sizes = [(r + 1) * n // self.world - r * n // self.world for r in range(self.world)]
        if x.shape[0] != sizes[self.rank]:
            raise ValueError(f"gather: this process holds {x.shape[0]} rows of {n}, expected {sizes[self.rank]}")
        pad = max(sizes) - x.shape[0]  # all_gather needs equal shapes
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x, group=self.group)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def sum_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        # A parameter without a gradient here must lack it everywhere, or the buckets would not line up.
        count = torch.tensor([len(grads), -len(grads)], dtype=torch.int64, device=_device(grads))
        dist.all_reduce(count, op=dist.ReduceOp.MAX, group=self.group)
        if count[0] != -count[1]:
            raise RuntimeError(f"processes disagree on which parameters have gradients ({int(-count[1])} vs "
                               f"{int(count[0])}): every process must run the same modules")
        for bucket in _buckets(grads):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat, group=self.group)
            offset = 0
            for g in bucket:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()


def _device(grads: list[torch.Tensor]) -> torch.device:
    return grads[0].device if grads else torch.device("cpu")


def _buckets(grads: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Consecutive gradients of one dtype and device, about BUCKET_BYTES each."""
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        if bucket and (g.dtype != bucket[0].dtype or g.device != bucket[0].device or size >= BUCKET_BYTES):
            yield bucket
            bucket, size = [], 0
        bucket.append(g)
        size += g.numel() * g.element_size()
    if bucket:
        yield bucket


class _GatherRows(torch.autograd.Function):
    """All rows forward; backward keeps this process's rows (every process holds the same loss of
    all rows, so its gradient for the local rows is the single-process one)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dp: TorchDataParallel, n: int) -> torch.Tensor:
        ctx.rows = dp.rows(n)
        return dp._all_gather(x.detach(), n)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad[ctx.rows], None, None


_SLICEABLE = {torch.randn: "randn", torch.rand: "rand", torch.randint: "randint"}


class _RowDraws(TorchFunctionMode):
    """Draws from ``gen`` of the local row count are made for all ``n`` rows and sliced to ``rows``."""

    def __init__(self, gen: torch.Generator, rows: slice, n: int, world: int):
        super().__init__()
        self.gen, self.rows, self.n, self.world = gen, rows, n, world
        self.local = rows.stop - rows.start

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if kwargs.get("generator") is not self.gen:
            return func(*args, **kwargs)
        name = _SLICEABLE.get(func)
        if name is None:
            raise RuntimeError(f"{getattr(func, '__name__', func)} from the training generator inside a step split "
                               f"over {self.world} processes: only per-row randn, rand and randint can be split")
        kwargs = dict(kwargs)
        if "size" in kwargs:
            size = tuple(kwargs.pop("size"))
        elif name == "randint":
            size, args = tuple(args[-1]), args[:-1]
        else:
            size = tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else tuple(args)
            args = ()
        if not size or size[0] != self.local:
            raise RuntimeError(f"a draw of shape {size} from the training generator inside a step split over "
                               f"{self.world} processes: every draw there must have this process's rows "
                               f"({self.local}) first")
        full = (self.n, *size[1:])
        return func(*args, full, **kwargs)[self.rows]
