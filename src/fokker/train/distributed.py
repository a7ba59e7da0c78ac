"""Data-parallel training under ``torchrun`` (torch.distributed, gloo on CPU, nccl on CUDA).

Each rank evaluates the loss on its slice ``idx[rank::world]`` of the same
global batch and the gradients are averaged with one ``all_reduce`` over a
flattened buffer, so ``world`` processes with global batch ``B`` follow the
same trajectory as one process with batch ``B`` (up to float summation order).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def world_info() -> tuple[int, int]:
    """``(rank, world_size)``; initialises the default process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("FOKKER_DIST_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def broadcast_parameters(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """Average ``.grad`` across ranks with a single flattened all-reduce."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        chunk = flat[offset : offset + n].view_as(g)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n


def broadcast_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (e.g. the seed of the shared batch order)."""
    t = torch.tensor([value], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return int(t.item())
