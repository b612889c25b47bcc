"""The original NeRF: positional encoding, the 8 x 256 MLP with a skip and a view-dependent head,
stratified + hierarchical (coarse/fine) sampling and volume rendering; dense layers swappable for
(sine) low-rank layers through `sinelr.convert`.

Which layers are converted (`convert_nerf`): every dense layer of the trunk, the feature layer and
the view branch (`pts_linears.*`, `feature_linear`, `views_linears.*`) - the paper replaces every
dense layer. The two output heads, `alpha_linear` (256 -> 1) and `rgb_linear` (128 -> 3), stay dense
by default: their rank is at most 1 and 3, so a rank-k factorisation cannot compress them (it would
hold k (in + out) >= in x out parameters for k >= min(in, out)) and together they are 644 parameters
(0.1 % of the model). With `convert_heads=True` they are converted too, and then every k above
min(in, out) of any selected layer (1 for alpha, 3 for rgb; 63 for the input layer) is a ValueError
naming the layer; nothing is clipped silently.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..convert import convert
from ..kinds import DEFAULT_OMEGA_FROM_SCRATCH

__all__ = ["PositionalEncoding", "NeRFMLP", "NeRF", "convert_nerf", "render_rays", "volume_render",
           "sample_pdf", "render_image", "TRUNK_TARGETS", "HEAD_TARGETS"]

TRUNK_TARGETS = r"(pts_linears\.\d+|feature_linear|views_linears\.\d+)"
HEAD_TARGETS = r"(alpha_linear|rgb_linear)"


class PositionalEncoding(nn.Module):
    """x -> [x, sin(2^0 x), cos(2^0 x), ..., sin(2^(L-1) x), cos(2^(L-1) x)] (frequencies 2^l, no pi)."""

    def __init__(self, num_freqs: int, include_input: bool = True) -> None:
        super().__init__()
        if isinstance(num_freqs, bool) or not isinstance(num_freqs, int) or num_freqs < 0:
            raise ValueError(f"num_freqs must be a non-negative integer, got {num_freqs!r}")
        self.num_freqs = num_freqs
        self.include_input = include_input
        self.register_buffer("freqs", 2.0 ** torch.arange(num_freqs, dtype=torch.float32), persistent=False)

    def out_dim(self, in_dim: int = 3) -> int:
        return in_dim * (int(self.include_input) + 2 * self.num_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x] if self.include_input else []
        if self.num_freqs:
            xf = x[..., None, :] * self.freqs[:, None]  # (..., L, 3)
            parts += [torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)]
        return torch.cat(parts, dim=-1)


class NeRFMLP(nn.Module):
    """Density + view-dependent colour MLP: `depth` ReLU layers of `width`, the encoded input
    concatenated again after layer index `skip` (skip=4: the 5th layer's output is joined with the
    encoded input, so the 6th layer takes [h, x], as in the original), then sigma, a feature layer and
    a `width // 2` view branch that sees the encoded viewing direction."""

    def __init__(self, width: int = 256, depth: int = 8, skip: int = 4, pos_freqs: int = 10,
                 dir_freqs: int = 4) -> None:
        super().__init__()
        for name, v in (("width", width), ("depth", depth)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(skip, bool) or not isinstance(skip, int) or skip >= depth - 1:
            raise ValueError(f"skip must be an integer in [0, depth - 1) = [0, {depth - 1}) or negative (no skip), got {skip!r}")
        self.pos_enc = PositionalEncoding(pos_freqs)
        self.dir_enc = PositionalEncoding(dir_freqs)
        in_x, in_d = self.pos_enc.out_dim(3), self.dir_enc.out_dim(3)
        self.skip = skip
        layers = [nn.Linear(in_x, width)]
        for i in range(1, depth):
            layers.append(nn.Linear(width + (in_x if i - 1 == skip else 0), width))
        self.pts_linears = nn.ModuleList(layers)
        self.alpha_linear = nn.Linear(width, 1)
        self.feature_linear = nn.Linear(width, width)
        self.views_linears = nn.ModuleList([nn.Linear(width + in_d, width // 2)])
        self.rgb_linear = nn.Linear(width // 2, 3)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """x: (..., 3) points, d: (..., 3) unit view directions -> (..., 4) raw [rgb logits, sigma]."""
        ex, ed = self.pos_enc(x), self.dir_enc(d)
        h = ex
        for i, layer in enumerate(self.pts_linears):
            h = F.relu(layer(h))
            if i == self.skip:
                h = torch.cat([h, ex], dim=-1)
        sigma = self.alpha_linear(h)
        h = torch.cat([self.feature_linear(h), ed], dim=-1)
        for layer in self.views_linears:
            h = F.relu(layer(h))
        return torch.cat([self.rgb_linear(h), sigma], dim=-1)


def convert_nerf(mlp: nn.Module, method: str, rank: int, omega: float = DEFAULT_OMEGA_FROM_SCRATCH,
                 convert_heads: bool = False) -> nn.Module:
    """Swap the dense layers of a NeRFMLP (or a NeRF holding them) for rank-`rank` layers, in place.

    method: 'full' (nothing), 'lowrank' (LowRankLinear) or 'sine' (SineLowRankLinear, gain sqrt(in));
    omega defaults to the library's from-scratch value (sinelr.kinds.DEFAULT_OMEGA_FROM_SCRATCH).
    Converts the trunk, feature and view layers; the output heads only with `convert_heads`.
    """
    if method == "full":
        return mlp
    if method not in ("lowrank", "sine"):
        raise ValueError(f"method must be 'full', 'lowrank' or 'sine', got {method!r}")
    targets = TRUNK_TARGETS if not convert_heads else f"({TRUNK_TARGETS}|{HEAD_TARGETS})"
    nets = [m for m in mlp.modules() if isinstance(m, NeRFMLP)]
    if not nets:
        raise TypeError(f"convert_nerf expects a NeRFMLP or a module holding them, got {type(mlp).__name__}")
    for net in nets:
        convert(net, targets, rank, kind=method, omega=omega)
    return mlp


def volume_render(raw: torch.Tensor, z: torch.Tensor, rays_d: torch.Tensor, noise_std: float = 0.0,
                  generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha-composite raw (R, S, 4) outputs at depths z (R, S): returns rgb (R, 3), weights (R, S), depth (R,).

    sigma gets Gaussian noise of std `noise_std` during training (a regulariser of the original NeRF);
    the last interval is open (1e10), and distances are scaled by |d| to be metric along the ray.
    """
    dists = torch.cat([z[..., 1:] - z[..., :-1], torch.full_like(z[..., :1], 1e10)], dim=-1)
    dists = dists * rays_d.norm(dim=-1, keepdim=True)
    rgb = torch.sigmoid(raw[..., :3])
    sigma = raw[..., 3]
    if noise_std > 0:
        sigma = sigma + noise_std * torch.randn(sigma.shape, generator=generator, device=sigma.device, dtype=sigma.dtype)
    alpha = 1.0 - torch.exp(-F.relu(sigma) * dists)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], dim=-1), dim=-1)[..., :-1]
    weights = alpha * trans
    return (weights[..., None] * rgb).sum(-2), weights, (weights * z).sum(-1)


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, deterministic: bool,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw `n` depths per ray from the piecewise-constant pdf given by `weights` over `bins` (inverse CDF)."""
    weights = weights + 1e-5
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, -1)], dim=-1)
    shape = list(cdf.shape[:-1]) + [n]
    if deterministic:
        u = torch.linspace(0.0, 1.0, n, device=cdf.device, dtype=cdf.dtype).expand(shape).contiguous()
    else:
        u = torch.rand(shape, generator=generator, device=cdf.device, dtype=cdf.dtype)
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    lo = (idx - 1).clamp(min=0)
    hi = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = torch.gather(cdf, -1, lo), torch.gather(cdf, -1, hi)
    b_lo, b_hi = torch.gather(bins, -1, lo), torch.gather(bins, -1, hi)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    return b_lo + (u - cdf_lo) / denom * (b_hi - b_lo)


class NeRF(nn.Module):
    """Coarse and fine NeRFMLPs (the fine one only when n_fine > 0) and the renderer that uses them."""

    def __init__(self, width: int = 256, depth: int = 8, skip: int = 4, pos_freqs: int = 10, dir_freqs: int = 4,
                 n_coarse: int = 64, n_fine: int = 128) -> None:
        super().__init__()
        if n_coarse < 2:
            raise ValueError(f"n_coarse must be >= 2, got {n_coarse}")
        if n_fine < 0:
            raise ValueError(f"n_fine must be >= 0, got {n_fine}")
        self.n_coarse, self.n_fine = n_coarse, n_fine
        self.coarse = NeRFMLP(width, depth, skip, pos_freqs, dir_freqs)
        self.fine = NeRFMLP(width, depth, skip, pos_freqs, dir_freqs) if n_fine > 0 else None

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, viewdirs: torch.Tensor, perturb: bool = False,
                noise_std: float = 0.0, near: float = 0.0, far: float = 1.0,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        return render_rays(self, rays_o, rays_d, viewdirs, perturb, noise_std, near, far, generator)


def _query(mlp: NeRFMLP, rays_o, rays_d, viewdirs, z) -> torch.Tensor:
    pts = rays_o[:, None, :] + rays_d[:, None, :] * z[..., None]
    dirs = viewdirs[:, None, :].expand_as(pts)
    return mlp(pts.reshape(-1, 3), dirs.reshape(-1, 3)).reshape(*z.shape, 4)


def render_rays(model: NeRF, rays_o: torch.Tensor, rays_d: torch.Tensor, viewdirs: torch.Tensor,
                perturb: bool = False, noise_std: float = 0.0, near: float = 0.0, far: float = 1.0,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    """Render a batch of rays (R, 3): 'rgb_coarse' and, with a fine network, 'rgb_fine' (R, 3) and 'rgb'.

    Coarse depths are stratified over [near, far] (jittered within each bin when `perturb`); fine
    depths are drawn from the coarse weights and merged with the coarse ones (sorted).
    """
    n_rays = rays_o.shape[0]
    t = torch.linspace(0.0, 1.0, model.n_coarse, device=rays_o.device, dtype=rays_o.dtype)
    z = (near * (1.0 - t) + far * t).expand(n_rays, model.n_coarse)
    if perturb:
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        upper = torch.cat([mids, z[:, -1:]], -1)
        lower = torch.cat([z[:, :1], mids], -1)
        z = lower + (upper - lower) * torch.rand(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    raw = _query(model.coarse, rays_o, rays_d, viewdirs, z)
    rgb_c, w_c, depth_c = volume_render(raw, z, rays_d, noise_std, generator)
    out = {"rgb_coarse": rgb_c, "rgb": rgb_c, "depth": depth_c}
    if model.fine is not None:
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        z_f = sample_pdf(mids, w_c[:, 1:-1].detach(), model.n_fine, deterministic=not perturb, generator=generator)
        z_all, _ = torch.sort(torch.cat([z, z_f.detach()], -1), -1)
        raw_f = _query(model.fine, rays_o, rays_d, viewdirs, z_all)
        rgb_f, _, depth_f = volume_render(raw_f, z_all, rays_d, noise_std, generator)
        out.update(rgb_fine=rgb_f, rgb=rgb_f, depth=depth_f)
    return out


@torch.no_grad()
def render_image(model: NeRF, rays_o: torch.Tensor, rays_d: torch.Tensor, viewdirs: torch.Tensor,
                 chunk: int = 4096, near: float = 0.0, far: float = 1.0) -> torch.Tensor:
    """Render (H, W, 3) ray grids in chunks without perturbation or noise; returns (H, W, 3) in [0, 1]."""
    shape = rays_o.shape[:-1]
    o, d, v = (t.reshape(-1, 3) for t in (rays_o, rays_d, viewdirs))
    outs = [render_rays(model, o[i:i + chunk], d[i:i + chunk], v[i:i + chunk], near=near, far=far)["rgb"]
            for i in range(0, o.shape[0], chunk)]
    return torch.cat(outs, 0).reshape(*shape, 3).clamp(0.0, 1.0)
