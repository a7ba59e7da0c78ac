"""Helper script for test_fit.py: train a small model with fit(), save the parameters.

Run either plainly (one process) or under ``torchrun --nproc_per_node=2``; with
the same seed and global batch both must end at the same parameters.
"""

import sys

import torch
from torch import nn

from fokker.train import fit


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    def loss(self, batch):
        x, y = batch
        return ((self.net(x).squeeze(-1) - y) ** 2).mean()


if __name__ == "__main__":
    out = sys.argv[1]
    torch.manual_seed(123)
    x = torch.randn(512, 3, dtype=torch.float64)
    y = torch.sin(x).sum(-1)
    torch.manual_seed(7)
    model = Regressor().double()
    fit(model, (x, y), steps=25, batch_size=64, lr=1e-2, seed=3, progress=False)
    from fokker.train.distributed import world_info

    rank, world = world_info()
    if rank == 0:
        torch.save({"state": model.state_dict(), "world": world}, out)
