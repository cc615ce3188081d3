"""Co-activation memories and their least-squares weight fit (AM-mem, eq. 7).

For one layer, sum_i ||c_i - W a_i||^2 = Tr(W^T W A) - 2 Tr(W^T B) + const with
A = sum_i a_i a_i^T and B = sum_i c_i a_i^T (Mairal et al., 2009). A bias is
handled by appending a constant 1 to a, so W = [W | b].
"""
from __future__ import annotations

import functools

import torch


BLOCK = 256  # column-block width of the symmetric products below


def _blocks(n: int, size: int = BLOCK):
    return [(s, min(s + size, n)) for s in range(0, n, size)]


class CoActivationMemory:
    """A_l and B_l of one layer, updated as in Alg. 2.3 (updateMemory).

    A is symmetric and BCD reads only its lower triangle, so only the lower block
    triangle is accumulated (``A_low``: the blocks on and below the diagonal, zeros above;
    about 2/3 of the products of a full ``a^T a`` for n = 785). ``A`` is the full matrix.

    ``seeds=S`` keeps S independent memories, one per copy of a seed axis: A (S, n, n),
    B (S, n_out, n), updated from a and c of shape (S, N, ...).
    """

    def __init__(self, n_in: int, n_out: int, bias: bool, forget: float = 1.0,
                 device=None, dtype=torch.float32, seeds=None):
        n = n_in + int(bias)
        self.bias = bias
        self.forget = float(forget)
        lead = () if seeds is None else (int(seeds),)
        self.A_low = torch.zeros(*lead, n, n, device=device, dtype=dtype)
        self.B = torch.zeros(*lead, n_out, n, device=device, dtype=dtype)

    @property
    def A(self) -> torch.Tensor:
        """The full symmetric A = sum_i a_i a_i^T (a new tensor)."""
        return symmetric_from_lower(self.A_low)

    def _augment(self, a: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, a.new_ones(*a.shape[:-1], 1)], dim=-1) if self.bias else a

    def update(self, a: torch.Tensor, c: torch.Tensor) -> None:
        """A <- forget*A + sum_i a_i a_i^T,  B <- forget*B + sum_i c_i a_i^T (batch rows are samples)."""
        a = self._augment(a)
        if self.forget != 1.0:  # (the paper's plain sums skip two full passes over A and B)
            self.A_low.mul_(self.forget)
            self.B.mul_(self.forget)
        for s, e in _blocks(a.shape[-1]):  # column block s:e, rows s: (the lower block triangle)
            _add_product(self.A_low[..., s:, s:e], a[..., s:].mT, a[..., s:e])
        _add_product(self.B, c.mT, a)


def _add_product(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """out += x @ y in place (batched over a leading seed axis when there is one)."""
    if out.dim() == 2:
        out.addmm_(x, y)
    else:
        out.baddbmm_(x, y)


def _product_into(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """out = x @ y in place (batched over a leading seed axis when there is one)."""
    if out.dim() == 2:
        torch.mm(x, y, out=out)
    else:
        out.copy_(torch.bmm(x, y))


def symmetric_from_lower(A_low: torch.Tensor) -> torch.Tensor:
    return torch.tril(A_low) + torch.tril(A_low, -1).mT


@functools.lru_cache(maxsize=16)
def _strictly_lower_mask(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """1 below the diagonal, 0 on and above it (multiplying by it is faster than torch.tril)."""
    return torch.ones(size, size, device=device, dtype=dtype).tril_(-1)


def times_strictly_lower(W: torch.Tensor, A_low: torch.Tensor) -> torch.Tensor:
    """W @ tril(A, -1), reading only the lower block triangle of A (about 2/3 of a full product)."""
    out = torch.empty_like(W)
    n = A_low.shape[-1]
    for s, e in _blocks(n):
        diagonal_block = A_low[..., s:e, s:e] * _strictly_lower_mask(e - s, A_low.device, A_low.dtype)
        _product_into(out[..., s:e], W[..., s:e], diagonal_block)
        if e < n:
            _add_product(out[..., s:e], W[..., e:], A_low[..., e:, s:e])  # the blocks below it
    return out


def bcd(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, sweeps: int = 1, ridge: float = 0.0,
        eps: float = 1e-12) -> torch.Tensor:
    """Block-coordinate descent over the columns of W on Tr(W^T W (A + ridge I)) - 2 Tr(W^T B).

    One sweep updates columns j = 1..n in turn, each to its exact minimiser with the others
    fixed (Mairal et al. 2009, Alg. 2, with an optional Tikhonov term):
    ``w_j <- w_j + (b_j - W a_j - ridge w_j) / (A_jj + ridge)`` (see :func:`bcd_loop`).
    That sweep is Gauss-Seidel on W (A + ridge I) = B, so in matrix form, with A split into
    its strictly lower part L, diagonal D and strictly upper part U,
    ``W_new (D + ridge I + U) = B - W_old L``: one product and one triangular solve give the
    same iterate as the column loop, without n small steps. Columns with A_jj + ridge = 0
    (an input that never fired, no ridge) are left as they are. Returns the new W.
    """
    diagonal = torch.diagonal(A, dim1=-2, dim2=-1)  # (n,), or (S, n) with a seed axis
    d = diagonal + ridge
    # A_jj >= 0 (a sum of squares), so with a ridge no column is dead
    dead = None if ridge > eps else d <= eps
    A_jj = diagonal.clone()
    # A is symmetric, so (D + U)^T = D + L: the solve is (D + L) W_new^T = (B - W_old L)^T,
    # the solver's fast orientation. The solver reads only A's lower triangle (the memory
    # may hold just that: CoActivationMemory.A_low), and D + L is A's lower triangle with
    # the diagonal + ridge: it is written into A for the solves and A_jj put back after
    # (a copy of a 785 x 785 A cost 0.4 ms per AM-mem step, over half the solve's time).
    try:
        diagonal.copy_(d if dead is None else torch.where(dead, torch.ones_like(d), d))
        for _ in range(sweeps):
            rhs = B - times_strictly_lower(W, A)  # B - W L (L excludes the diagonal)
            if dead is not None:  # a dead column has A[:, j] = 0, b_j = 0: keep w_j (no host sync)
                rhs = torch.where(dead.unsqueeze(-2), W, rhs)
            W = torch.linalg.solve_triangular(A, rhs.mT, upper=False).mT
    finally:
        diagonal.copy_(A_jj)
    return W


def bcd_loop(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, sweeps: int = 1, ridge: float = 0.0,
             eps: float = 1e-12) -> torch.Tensor:
    """The same sweeps as :func:`bcd`, one column at a time (the reference: slow, n steps)."""
    d = torch.diagonal(A) + ridge
    inv_d = torch.where(d > eps, 1.0 / d.clamp_min(eps), torch.zeros_like(d))
    for _ in range(sweeps):
        for j in range(A.shape[0]):
            W[:, j].add_((B[:, j] - W @ A[:, j] - ridge * W[:, j]) * inv_d[j])
    return W


def exact(A: torch.Tensor, B: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """The minimiser W = B (A + ridge I)^{-1} of eq. 7 (+ ridge ||W||^2), by a Cholesky solve.

    When A is singular (a unit that never fired) a tiny jitter is added, and if even that
    fails the minimum-norm least-squares solution is returned. With a seed axis, each copy's own.
    """
    if A.dim() == 3:
        return torch.stack([exact(A_s, B_s, ridge) for A_s, B_s in zip(A, B)])
    eye = torch.eye(A.shape[0], device=A.device, dtype=A.dtype)
    jitter = 1e-6 * float(torch.diagonal(A).mean().clamp_min(1e-12))
    for extra in (0.0, jitter):
        L, info = torch.linalg.cholesky_ex(A + (ridge + extra) * eye)
        if int(info) == 0:
            return torch.cholesky_solve(B.T, L).T
    return torch.linalg.lstsq(A + ridge * eye, B.T).solution.T
