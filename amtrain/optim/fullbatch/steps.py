"""Closed-form block updates of the full-batch auxiliary-variable methods. Rows are samples.

Taylor et al. (2016), "Training Neural Networks Without Gradients: A Scalable ADMM Approach":

* W_l <- argmin_W ||z_l - W a_{l-1}||^2 + ridge ||W||^2          (least squares)
* a_l <- argmin_a beta ||z_{l+1} - W_{l+1} a||^2 + gamma ||a - h(z_l)||^2
* z_l <- argmin_z gamma ||a_l - h(z)||^2 + beta ||z - W_l a_{l-1}||^2      (entry-wise)
* z_L <- argmin_z loss(z, y) + <z, lambda> + beta ||z - W_L a_{L-1}||^2

The later methods reuse two of them: BCD's V_l update is the a_l update above (with rho
for beta), and the ReLU coupling argmin (z_l above) is dlADMM's z_l and BCD's U_l update.
Their own closed forms are here too:

* mDLAM's z_l and a_l inside the box |a_l - ReLU(z_l)| <= eps (:func:`box_preactivations`,
  :func:`box_activations`);
* BCD's proximal least squares for (W_l, b_l) (:func:`prox_least_squares`, :func:`prox_bias`).
"""
from __future__ import annotations

import torch


def augment(a: torch.Tensor, bias: bool) -> torch.Tensor:
    return torch.cat([a, a.new_ones(a.shape[0], 1)], dim=1) if bias else a


def ridge_inverse(gram: torch.Tensor, ridge: float) -> torch.Tensor:
    """(gram + r I)^{-1} in float64 with r = ridge * mean(diag(gram)): scale-free, and enough to
    make the Gram of inputs with constant columns (MNIST's border pixels) invertible."""
    g = gram.double()
    r = ridge * float(torch.diagonal(g).mean().clamp_min(1e-12))
    eye = torch.eye(g.shape[0], dtype=g.dtype, device=g.device)
    inv, info = torch.linalg.inv_ex(g + r * eye)
    if int(info) != 0:
        from amtrain.errors import DivergenceError

        raise DivergenceError(f"the least-squares weight update is singular (ridge {ridge}): raise optim.ridge")
    return inv


def activation_matrix(W_next: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """(beta W^T W + gamma I)^{-1} for the a-update (W_next without its bias column)."""
    n = W_next.shape[1]
    eye = torch.eye(n, dtype=W_next.dtype, device=W_next.device)
    return torch.linalg.inv(beta * W_next.T @ W_next + gamma * eye)


def update_activations(z_next: torch.Tensor, W_next: torch.Tensor, b_next, h_z: torch.Tensor,
                       M: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """a = (beta W^T W + gamma I)^{-1} (beta W^T (z_{l+1} - b) + gamma h(z_l)), row-wise; M from activation_matrix."""
    target = z_next - b_next if b_next is not None else z_next
    return (beta * target @ W_next + gamma * h_z) @ M  # M is symmetric


def update_relu_preactivations(a: torch.Tensor, m: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Entry-wise argmin_z gamma (a - relu(z))^2 + beta (z - m)^2, m = W a_prev: the better of two branches."""
    z_pos = ((gamma * a + beta * m) / (gamma + beta)).clamp_min(0.0)  # z >= 0: relu(z) = z
    z_neg = m.clamp_max(0.0)  # z <= 0: relu(z) = 0
    f_pos = gamma * (a - z_pos) ** 2 + beta * (z_pos - m) ** 2
    f_neg = gamma * a**2 + beta * (z_neg - m) ** 2
    return torch.where(f_pos <= f_neg, z_pos, z_neg)


def hinge(z: torch.Tensor, y01: torch.Tensor) -> torch.Tensor:
    """Taylor's binary hinge, y in {0, 1}: max(1 - z, 0) for y = 1, max(z, 0) for y = 0."""
    return torch.where(y01 > 0.5, (1 - z).clamp_min(0), z.clamp_min(0))


def update_output_hinge(m: torch.Tensor, y01: torch.Tensor, lam: torch.Tensor, beta: float) -> torch.Tensor:
    """Entry-wise argmin_z hinge(z, y) + lambda z + beta (z - m)^2 (convex, three cases per label)."""
    flat = m - lam / (2 * beta)  # where the hinge is flat (z >= 1 for y = 1, z <= 0 for y = 0)
    # y = 1: flat part z >= 1; sloped part z < 1 with slope -1; else the kink at 1
    z1 = torch.where(flat >= 1, flat, torch.clamp(m + (1 - lam) / (2 * beta), max=1.0))
    # y = 0: flat part z <= 0; sloped part z > 0 with slope +1; else the kink at 0
    z0 = torch.where(flat <= 0, flat, torch.clamp(m - (1 + lam) / (2 * beta), min=0.0))
    return torch.where(y01 > 0.5, z1, z0)


def update_output_ce(m: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, beta: float, newton_steps: int = 8) -> torch.Tensor:
    """Row-wise argmin_z CE(softmax(z), y) + <z, lambda> + beta ||z - m||^2 by batched Newton steps."""
    z = m.clone()
    onehot = torch.nn.functional.one_hot(y, m.shape[1]).to(m.dtype)
    eye = torch.eye(m.shape[1], dtype=m.dtype, device=m.device)
    for _ in range(newton_steps):
        p = torch.softmax(z, dim=1)
        g = p - onehot + lam + 2 * beta * (z - m)
        H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :] + 2 * beta * eye
        z = z - torch.linalg.solve(H, g)
    return z


def ce_prox_objective(z, m, y, lam, beta):
    return (torch.nn.functional.cross_entropy(z, y, reduction="none") + (z * lam).sum(1)
            + beta * ((z - m) ** 2).sum(1))


# ----------------------------------------------------------------------------- mDLAM's box
def box_preactivations(m: torch.Tensor, a: torch.Tensor, eps: float) -> torch.Tensor:
    """argmin_z ||z - m||^2 subject to |a - ReLU(z)| <= eps, entry-wise (mDLAM's z_l).

    ReLU(z) <= a + eps holds exactly when z <= a + eps; ReLU(z) >= a - eps needs z >= a - eps
    only where a - eps > 0. On that interval the nearest point to m is m clipped."""
    z = torch.minimum(m, a + eps)
    return torch.where(a - eps > 0, torch.maximum(z, a - eps), z)


def box_activations(a: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """The projection of a onto the box [ReLU(z) - eps, ReLU(z) + eps] (mDLAM's a_l constraint)."""
    r = torch.relu(z)
    return torch.clamp(a, min=r - eps, max=r + eps)


# ----------------------------------------------------------------------------- BCD's (W, b)
def prox_least_squares(gram: torch.Tensor, cross: torch.Tensor, W_old: torch.Tensor, alpha: float,
                       rho: float) -> torch.Tensor:
    """argmin_W (rho/2) ||U - V W^T - b||^2 + (alpha/2) ||W - W_old||^2 with the bias fixed:
    W = (alpha W_old + rho (U - b)^T V) (alpha I + rho V^T V)^{-1}, from gram = V^T V and
    cross = (U - b)^T V (float64 sums over the samples). The matrix is symmetric positive
    definite for alpha > 0: a Cholesky solve, in float64."""
    eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
    A = alpha * eye + rho * gram.double()
    rhs = alpha * W_old.double() + rho * cross.double()
    return torch.linalg.solve(A, rhs.T).T.to(W_old.dtype)  # A symmetric: W A = rhs <=> A W^T = rhs^T


def prox_bias(sum_residual: torch.Tensor, b_old: torch.Tensor, n: int, alpha: float, rho: float) -> torch.Tensor:
    """argmin_b (rho/2) sum_i ||U_i - W V_i - b||^2 + (alpha/2) ||b - b_old||^2
    = (alpha b_old + rho sum_i (U_i - W V_i)) / (rho n + alpha)."""
    return ((alpha * b_old.double() + rho * sum_residual.double()) / (rho * n + alpha)).to(b_old.dtype)
