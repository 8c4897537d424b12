"""Multi-process training through torchrun and PyTorch's DistributedDataParallel.

    torchrun --nproc_per_node 2 training/train.py --config CONFIG --out runs/NAME            # one host
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 8 training/train.py ...

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; `init()` opens the process group (gloo: the loop
runs on the CPU, see init) and everything else is DDP's: gradients are averaged across processes during
backward. The config's batch_size stays the GLOBAL batch: each process takes an equal contiguous
slice of every global batch, so one process and N processes see the same batches and (without
batch-coupled terms such as the PLCC loss or trainable BatchNorm) make the same update; a test
checks that. The QFM memory bank is kept identical on every process by all-gathering what each
one pushes. Rank 0 alone evaluates, checkpoints and plots.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate `t` (same shape on every process) from all processes, in rank order."""
        if not self.enabled:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)


def init() -> Context:
    """The process group from torchrun's environment; a plain single-process Context otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    if not dist.is_initialized():
        # gloo even on GPU hosts: the training loop keeps its batches and memory on the CPU, and
        # NCCL cannot gather CPU tensors (it failed at the first all_gather on any GPU machine).
        dist.init_process_group("gloo")
    ctx = Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank)
    return ctx


def shutdown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
