"""Several processes through accelerate: who does what, and how rows reach the one writer.

``accelerate launch -m bench run ...`` (any accelerate config: GPUs, nodes) or ``bench run
--processes N`` (which calls accelerate's launcher on this machine) starts N copies of ``bench
run``. Each builds the same plan, then:

- only the main process opens the DuckDB store and writes rows, artifact folders and shared caches;
  what the main process alone does (``on_main``) is broadcast to the others with its outcome;
- shared files built on first use (the tiny world, encoded data, reward weights) are built by the
  main process while the others wait, then read by all (``main_first``);
- training: every process holds the model; each step's rows are split over them and gradients
  summed (``data_parallel()``, methods/core/parallel.py);
- sampling and scoring: the main process lists the missing (prompt, seed) keys or unscored images
  and broadcasts them; process r takes every N-th; each round, every process writes its PNG files
  (content-addressed, atomic rename) and hands its rows over (``exchange``); the main process then
  commits one transaction. A killed launch resumes exactly as a killed single process does.

On one process (no launcher) every method here is the plain call: the single-process run is the
code path it always was. Multi-node runs need the results folder on a shared file system.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence

from methods.core.parallel import ONE_PROCESS, DataParallel

# Main-only work (building the tiny world) can keep the others waiting this long.
WAIT = timedelta(hours=2)
# Processes meet to compare failures right after each phase; a process that failed alone (out of
# memory on one GPU) stops the launch after this long instead of hanging.
STATUS_WAIT = timedelta(minutes=10)
WORLD_ENV = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]


class ProcessFailed(RuntimeError):
    """Another process failed; its own error is the one recorded."""


def launched_world() -> int:
    """Processes in this launch, from the launcher's environment (1 when not launched)."""
    for name in WORLD_ENV:
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


class Processes:
    """This process's place in a launch. ``Processes()`` is a single process."""

    rank, world, local_rank = 0, 1, 0

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._depth = 0

    @classmethod
    def from_env(cls, device: str) -> "Processes":
        """Join the launch this process belongs to (through accelerate), or stay a single process."""
        if launched_world() <= 1:
            return cls(device)
        import torch.distributed as dist
        from accelerate import PartialState

        cpu = not device.startswith("cuda")
        state = PartialState(cpu=cpu)
        procs = cls("cpu" if cpu else str(state.device))
        procs.rank, procs.world, procs.local_rank = state.process_index, state.num_processes, state.local_process_index
        # Python objects travel over gloo (CPU), apart from the tensors of training (NCCL on GPUs).
        procs._objects = dist.new_group(backend="gloo", timeout=WAIT)
        procs._status = dist.new_group(backend="gloo", timeout=STATUS_WAIT)
        atexit.register(dist.destroy_process_group)
        return procs

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def data_parallel(self) -> DataParallel:
        if self.world == 1:
            return ONE_PROCESS
        from methods.core.parallel import TorchDataParallel

        return TorchDataParallel(self.rank, self.world)

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This process's share of a list: every N-th item, from its rank."""
        return list(items[self.rank::self.world])

    # -- collectives over the object groups (plain calls on one process) ----------------------------

    def broadcast(self, obj: Any = None) -> Any:
        """The main process's ``obj`` on every process."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._objects)
        return box[0]

    def all_gather(self, obj: Any, status: bool = False) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self._status if status else self._objects)
        return out

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the main process only; its result (or its failure) reaches every process."""
        if self.world == 1:
            return fn()
        if self.is_main:
            try:
                result = fn()
            except Exception as e:
                self.broadcast(("error", f"{type(e).__name__}: {e}"))
                raise
            self.broadcast(("ok", result))
            return result
        status, value = self.broadcast()
        if status == "error":
            raise ProcessFailed(f"the main process failed: {value}")
        return value

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the body first (it builds shared files), then the others do (they
        find them built). Nested uses are part of the outer one."""
        if self.world == 1 or self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth += 1
        try:
            if self.is_main:
                try:
                    yield
                except Exception as e:
                    self.broadcast(("error", f"{type(e).__name__}: {e}"))
                    raise
                self.broadcast(("ok", None))
            else:
                status, value = self.broadcast()
                if status == "error":
                    raise ProcessFailed(f"the main process failed: {value}")
                yield
        finally:
            self._depth -= 1

    def exchange(self, make: Callable[[], list[Any]]) -> list[Any]:
        """Every process's ``make()`` rows, concatenated in rank order, on every process. A failure on
        any process is raised on all (the original on its own process)."""
        if self.world == 1:
            return make()
        try:
            payload = ("ok", make())
        except Exception as e:
            self.all_gather(("error", f"{type(e).__name__}: {e}"))
            raise
        parts = self.all_gather(payload)
        for rank, (status, value) in enumerate(parts):
            if status == "error":
                raise ProcessFailed(f"process {rank} failed: {value}")
        return [row for _, rows in parts for row in rows]


ONE = Processes()


def launch(processes: int, bench_args: list[str], device: str) -> int:
    """``accelerate launch`` of ``bench run <bench_args>`` on this machine; returns its exit code.

    Equivalent to ``accelerate launch --multi_gpu --num_processes N -m bench run ...``: accelerate's
    torchrun launcher starts the processes. On CPU they share the cores: each gets 1/N of them as
    threads, unless OMP_NUM_THREADS says otherwise.
    """
    from accelerate.commands.launch import launch_command, launch_command_parser

    threads = os.environ.get("OMP_NUM_THREADS") or (
        max(1, (os.cpu_count() or 1) // processes) if not device.startswith("cuda") else 1)
    argv = ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--main_process_port", "0", "--num_cpu_threads_per_process", str(threads),
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "bench", "run", *bench_args]
    try:
        launch_command(launch_command_parser().parse_args(argv))
    except Exception as e:  # torchrun's ChildFailedError: the exit codes of the failed processes
        codes = [getattr(f, "exitcode", 1) for f in getattr(e, "failures", {}).values()]
        return max([c for c in codes if c > 0], default=1)
    return 0
