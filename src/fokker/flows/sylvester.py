"""Sylvester flow (van den Berg et al. 2018) with an exact inverse on arbitrary inputs.

Seed 002, eq. (9):

.. math::

    z' = z + Q R_A h(R_B Q^\\top z + b), \\qquad
    \\det \\frac{\\partial z'}{\\partial z} = \\det(I_M + \\operatorname{diag}(h') R_B R_A)

with ``Q`` (D x M) orthonormal columns, ``R_A, R_B`` (M x M) upper triangular,
``h = tanh``.  ``R_B R_A`` is upper triangular, so the determinant is
``prod_i (1 + h'_i (R_B)_{ii} (R_A)_{ii})``; invertibility needs
``(R_A)_{ii}(R_B)_{ii} > -1``, enforced by ``diag(R_B) = exp(.) > 0`` and
``diag(R_A) = (-1 + softplus(.)) / diag(R_B)``.

Inverse.  Write ``u = R_B Q^T z + b``.  Projecting ``y = z'`` on ``Q`` and
multiplying by ``R_B`` gives the triangular system ``u + C tanh(u) = R_B Q^T y + b``
with ``C = R_B R_A`` upper triangular, ``C_ii > -1``.  Back substitution turns it
into ``M`` scalar monotone equations ``u_i + C_ii tanh(u_i) = t_i - sum_{j>i} C_ij tanh(u_j)``,
each solved by the bracketed Newton of :func:`fokker.flows.planar.solve_tanh_equation`
to machine precision (tolerance: float rounding, ~1e-12 relative in float64);
then ``z = y - Q R_A tanh(u)``.  Two grad-enabled Newton steps on the full system
re-attach exact first and second derivatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._args import check_int, check_last_dim, check_tensor
from ..errors import ParameterError
from .base import Bijection
from .planar import solve_tanh_equation

__all__ = ["Sylvester"]


class Sylvester(Bijection):
    """Orthogonal Sylvester layer ``y = z + Q R_A tanh(R_B Q^T z + b)`` (noise -> data).

    van den Berg et al. (2018), Sylvester normalizing flows, sec. 2-3 (Sylvester's determinant
    identity; the orthogonal form ``A = Q R_A``, ``B = R_B Q^T``).  Log-det
    ``sum_i log(1 + tanh'(u_i) (R_B)_ii (R_A)_ii)`` exact; inverse exact up to rounding.

    Args:
        features: event size ``D``; inputs have shape ``(..., D)``.
        hidden: number of hidden units ``M`` (``1 <= M <= D``; default ``D``).

    ``Q`` is the Q factor of a free ``D x M`` matrix (``torch.linalg.qr``).
    Log-det exact; inverse exact up to rounding.

    Example:
        >>> t = Sylvester(4, hidden=2)
        >>> y = torch.randn(3, 4)
        >>> torch.allclose(t(t.inv(y)), y, atol=1e-5)
        True
    """

    def __init__(self, features: int, hidden: int | None = None) -> None:
        super().__init__(event_dim=1)
        self.features = dim = check_int(features, "features")
        m = dim if hidden is None else check_int(hidden, "hidden")
        if m > dim:
            raise ParameterError(f"hidden must be an integer <= features={dim}; got {m}")
        self.m = m
        self.q_raw = nn.Parameter(torch.empty(dim, m))
        self.ra_raw = nn.Parameter(torch.empty(m, m))
        self.rb_raw = nn.Parameter(torch.empty(m, m))
        self.diag_a_raw = nn.Parameter(torch.empty(m))
        self.diag_b_raw = nn.Parameter(torch.empty(m))
        self.bias = nn.Parameter(torch.empty(m))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.q_raw)
        bound = 1.0 / self.m**0.5
        for p in (self.ra_raw, self.rb_raw, self.bias):
            nn.init.uniform_(p, -bound, bound)
        nn.init.uniform_(self.diag_a_raw, -0.5, 0.5)
        nn.init.uniform_(self.diag_b_raw, -0.5, 0.5)

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Q, R_A, R_B)``: orthonormal ``D x M`` and two upper-triangular ``M x M``."""
        q = torch.linalg.qr(self.q_raw).Q
        diag_b = torch.exp(self.diag_b_raw)
        diag_a = (-1 + F.softplus(self.diag_a_raw)) / diag_b
        ra = torch.triu(self.ra_raw, diagonal=1) + torch.diag_embed(diag_a)
        rb = torch.triu(self.rb_raw, diagonal=1) + torch.diag_embed(diag_b)
        return q, ra, rb

    def _check(self, x: torch.Tensor, name: str) -> None:
        check_tensor(x, name)
        check_last_dim(x, self.features, name)

    @staticmethod
    def _ladj_at(u: torch.Tensor, ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
        th = torch.tanh(u)
        return torch.log1p((1 - th * th) * (torch.diagonal(ra) * torch.diagonal(rb))).sum(-1)

    def call_and_ladj(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``y = z + Q R_A tanh(u)``, ``u = R_B Q^T z + b``, and ``sum_i log(1 + tanh'(u_i) (R_B R_A)_ii)`` (exact)."""
        self._check_context(context)
        self._check(z, "z")
        q, ra, rb = self.matrices()
        u = (z @ q) @ rb.T + self.bias
        return z + torch.tanh(u) @ ra.T @ q.T, self._ladj_at(u, ra, rb)

    def inverse_and_ladj(self, y: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse by triangular back substitution of scalar monotone equations; ``-log|det|`` at the preimage."""
        self._check_context(context)
        self._check(y, "y")
        q, ra, rb = self.matrices()
        c = rb @ ra  # upper triangular, diag > -1
        t = (y @ q) @ rb.T + self.bias  # (..., M)
        # back substitution, one scalar monotone equation per coordinate (no graph)
        with torch.no_grad():
            cd = c.detach()
            zero = torch.zeros((), dtype=t.dtype, device=t.device)
            h = torch.zeros_like(t)
            u = torch.zeros_like(t)
            for i in range(self.m - 1, -1, -1):
                rhs = t[..., i].detach() - h @ cd[i]
                ui = solve_tanh_equation(rhs, cd[i, i], zero)
                u[..., i] = ui
                h[..., i] = torch.tanh(ui)
        # two Newton steps on u + C tanh(u) = t: exact 1st/2nd derivatives, value unchanged
        eye = torch.eye(self.m, dtype=t.dtype, device=t.device)
        for _ in range(2):
            th = torch.tanh(u)
            resid = u + th @ c.T - t
            jac = eye + c * (1 - th * th).unsqueeze(-2)  # (..., M, M) = I + C diag(h')
            step = torch.linalg.solve_triangular(jac, resid.unsqueeze(-1), upper=True).squeeze(-1)
            u = u - step
        return y - torch.tanh(u) @ ra.T @ q.T, -self._ladj_at(u, ra, rb)

    def extra_repr(self) -> str:
        return f"features={self.features}, hidden={self.m}"
