r"""Networks for diffusion models and flow matching: ``net(x, t[, y]) -> same shape as x``.

* :class:`ResidualTimeMLP` for vector data ``(batch, d)`` (residual blocks with the time embedding
  added to every block's input; not to be confused with the plain :class:`fokker.nets.MLP`);
* :class:`UNet` for images ``(batch, C, H, W)`` (8x8 digits, 28x28 MNIST-like):
  residual blocks with GroupNorm and SiLU, the time embedding added inside every
  block, optional self-attention at the lowest resolution (Ho et al. 2020).

Time enters through :class:`TimeEmbedding`: sinusoidal features
:math:`[\sin(\omega_k t), \cos(\omega_k t)]` with geometric frequencies
(Vaswani et al. 2017) or random Fourier features :math:`\omega_k \sim N(0, s^2)`
(Tancik et al. 2020; Song et al. 2021), followed by an MLP.  Both networks take
optional class labels ``y`` (``num_classes`` set): label ``num_classes`` is the
"null" label used for classifier-free guidance (label dropout in training).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._args import check_int
from ..errors import ParameterError, ShapeError

__all__ = ["TimeEmbedding", "ResidualTimeMLP", "UNet"]


class TimeEmbedding(nn.Module):
    """``t (batch,) -> (batch, dim)``: sinusoidal or Fourier features followed by a 2-layer MLP.

    Sinusoidal: the transformer position encoding of Vaswani et al. (2017, sec. 3.5) as used for
    diffusion time by Ho et al. (2020, appendix B); Fourier: random Fourier features (Tancik et al.
    2020) as in Song et al. (2021, appendix H.1).
    """

    def __init__(self, dim: int, kind: str = "sinusoidal", scale: float = 16.0, max_period: float = 1e4) -> None:
        super().__init__()
        check_int(dim, "dim", minimum=2)
        if kind not in ("sinusoidal", "fourier"):
            raise ParameterError(f"kind must be 'sinusoidal' or 'fourier'; got {kind!r}")
        half = dim // 2
        if kind == "sinusoidal":
            # t in [0, 1] is scaled by 1000 as in DDPM's integer steps.
            freqs = 1000.0 * torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
        else:
            freqs = 2 * math.pi * scale * torch.randn(half, dtype=torch.float64)
        self.register_buffer("freqs", freqs.float())
        self.mlp = nn.Sequential(nn.Linear(2 * half, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.to(self.freqs.dtype)[:, None] * self.freqs[None]
        return self.mlp(torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1))


def _check_io(x: torch.Tensor, t: torch.Tensor) -> None:
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ShapeError(f"t must have shape (batch,) = ({x.shape[0]},); got shape {tuple(t.shape)}")


class _LabelEmbedding(nn.Module):
    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        return self.table(y)


class ResidualTimeMLP(nn.Module):
    """Residual MLP score/velocity network for vectors: ``(batch, dim), (batch,) -> (batch, dim)``.

    ``h_0 = W_in x``, ``h_{l+1} = h_l + B_l(h_l + e(t, y))`` with ``B_l`` = SiLU-Linear-SiLU-Linear and
    ``e`` the time (plus label) embedding, output ``W_out SiLU(h_L)``: the pre-activation residual
    block of He et al. (2016, *Identity mappings in deep residual networks*, eq. 2) with the
    embedding added as in the DDPM U-Net blocks (Ho et al. 2020, appendix B).

    Args:
        dim: data dimension.
        hidden: width; ``depth``: number of residual blocks.
        embedding: ``"sinusoidal"`` or ``"fourier"`` time features.
        num_classes: enables label conditioning (``net(x, t, y)``; ``y=None`` is the null label).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        depth: int = 3,
        embedding: str = "sinusoidal",
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check_int(dim, "dim")
        check_int(hidden, "hidden")
        check_int(depth, "depth")
        self.dim = dim
        self.temb = TimeEmbedding(hidden, embedding)
        self.label = _LabelEmbedding(num_classes, hidden) if num_classes else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        _check_io(x, t)
        emb = self.temb(t).to(x.dtype)
        if self.label is not None:
            emb = emb + self.label(y, x.shape[0], x.device).to(x.dtype)
        h = self.inp(x)
        for blk in self.blocks:
            h = h + blk(h + emb)
        return self.out(h)


def _groups(c: int) -> int:
    for g in (8, 4, 2, 1):
        if c % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n1 = nn.GroupNorm(_groups(cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout)
        self.n2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.c1(nn.functional.silu(self.n1(x)))
        h = h + self.t(emb)[:, :, None, None]
        h = self.c2(self.drop(nn.functional.silu(self.n2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    def __init__(self, c: int, heads: int = 1) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(c), c)
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        z = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        out, _ = self.attn(z, z, z, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """A small U-Net: ``(batch, C, H, W), (batch,) -> (batch, C, H, W)``.

    The U-Net of Ronneberger, Fischer & Brox (2015) in the form of the DDPM denoiser (Ho, Jain &
    Abbeel 2020, appendix B): residual blocks with GroupNorm (Wu & He 2018) and the time embedding
    added in every block, self-attention in the middle block.

    ``channel_mult`` gives one resolution level per entry (``H`` and ``W`` halve between
    levels, so they must be divisible by ``2**(len(channel_mult) - 1)``), ``num_res_blocks``
    residual blocks per level, self-attention in the middle block when ``attention``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        attention: bool = True,
        num_classes: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_int(in_channels, "in_channels")
        check_int(channels, "channels")
        if len(channel_mult) < 1:
            raise ParameterError("channel_mult must have at least one level")
        self.in_channels, self.levels = in_channels, len(channel_mult)
        temb = 4 * channels
        self.temb = TimeEmbedding(temb)
        self.label = _LabelEmbedding(num_classes, temb) if num_classes else None
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        chans = [channels]
        c = channels
        for i, m in enumerate(channel_mult):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(c, channels * m, temb, dropout))
                c = channels * m
                chans.append(c)
            self.down.append(blocks)
            last = i == len(channel_mult) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
            if not last:
                chans.append(c)
        self.mid1 = _ResBlock(c, c, temb, dropout)
        self.attn = _Attention(c) if attention else nn.Identity()
        self.mid2 = _ResBlock(c, c, temb, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, m in reversed(list(enumerate(channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(_ResBlock(c + chans.pop(), channels * m, temb, dropout))
                c = channels * m
            self.up.append(blocks)
            self.upsample.append(
                nn.Identity() if i == 0 else nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1))
            )
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        _check_io(x, t)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"x must have shape (batch, {self.in_channels}, H, W); got shape {tuple(x.shape)}")
        f = 2 ** (self.levels - 1)
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ShapeError(f"x's height and width must be divisible by {f}; got shape {tuple(x.shape)}")
        emb = self.temb(t).to(x.dtype)
        if self.label is not None:
            emb = emb + self.label(y, x.shape[0], x.device).to(x.dtype)
        h = self.inp(x)
        hs = [h]
        for blocks, ds in zip(self.down, self.downsample):
            for blk in blocks:
                h = blk(h, emb)
                hs.append(h)
            if not isinstance(ds, nn.Identity):
                h = ds(h)
                hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for blocks, us in zip(self.up, self.upsample):
            for blk in blocks:
                h = blk(torch.cat([h, hs.pop()], dim=1), emb)
            h = us(h)
        return self.out(h)
