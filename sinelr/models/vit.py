"""A small Vision Transformer (pre-norm, class token, learned positions) with swappable MLP layers.

timm-style: `Mlp` takes a `linear_layer`, `Block` takes an `mlp_layer`, so a low-rank or sine
low-rank MLP can be passed in; the ViT recipe instead builds the dense model and swaps the MLP
layers with `sinelr.convert(model, MLP_TARGETS, ...)`, as the paper converts the MLPs only.
Presets: `vit_small` (the paper's ViT-S for 32x32: patch 4, width 384, MLP 1536, 12 blocks, 6 heads)
and `vit_base` (768 / 3072, 12 heads, patch 16 for 224x224 inputs).
"""
from __future__ import annotations

import math
from typing import Callable, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Mlp", "Attention", "Block", "PatchEmbed", "VisionTransformer", "vit_small", "vit_base", "MLP_TARGETS"]

# The regex `sinelr.convert` uses to select the two MLP layers of every block (and nothing else).
MLP_TARGETS = r"blocks\.\d+\.mlp\.fc[12]"


class Mlp(nn.Module):
    """fc1 -> activation -> fc2; `linear_layer(in, out)` builds both linear layers."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: Type[nn.Module] = nn.GELU,
                 linear_layer: Callable[..., nn.Module] = nn.Linear, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = linear_layer(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = linear_layer(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention through F.scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, mlp_layer: Callable[..., nn.Module] = Mlp,
                 linear_layer: Callable[..., nn.Module] = nn.Linear, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp_layer(dim, mlp_dim, linear_layer=linear_layer, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> embed_dim tokens (a strided convolution)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} must be a multiple of patch_size {patch_size}")
        self.img_size = img_size
        self.in_chans = in_chans
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, {self.img_size}, {self.img_size}), got {tuple(x.shape)}"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """ViT classifier: patch embedding, class token, `depth` blocks, final norm, linear head on the class
    token (pool="cls") or on the mean of the patch tokens (pool="mean")."""

    def __init__(self, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, num_classes: int = 100,
                 embed_dim: int = 384, depth: int = 12, num_heads: int = 6, mlp_dim: int = 1536,
                 mlp_layer: Callable[..., nn.Module] = Mlp, linear_layer: Callable[..., nn.Module] = nn.Linear,
                 drop: float = 0.0, pool: str = "cls") -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.pool = pool
        for name, value in (("img_size", img_size), ("patch_size", patch_size), ("in_chans", in_chans),
                            ("num_classes", num_classes), ("embed_dim", embed_dim), ("depth", depth),
                            ("num_heads", num_heads), ("mlp_dim", mlp_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_classes = num_classes
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_dim, mlp_layer=mlp_layer, linear_layer=linear_layer, drop=drop)
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal(0.02) for positions, class token and dense linear weights (timm's ViT init)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=math.sqrt(1.0 / w[0].numel()))
        nn.init.zeros_(self.patch_embed.proj.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        # "cls": the class token; "mean": the mean of the patch tokens (timm's global_pool="avg")
        return self.head(x[:, 0] if self.pool == "cls" else x[:, 1:].mean(dim=1))


def vit_small(img_size: int = 32, in_chans: int = 3, num_classes: int = 100, patch_size: int = 4,
              **kwargs) -> VisionTransformer:
    """The paper's ViT-S for small images: width 384, MLP 1536, 12 blocks, 6 heads (patch 4 on 32x32)."""
    kw = dict(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536)
    kw.update(kwargs)
    return VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes, **kw)


def vit_base(img_size: int = 224, in_chans: int = 3, num_classes: int = 1000, patch_size: int = 16,
             **kwargs) -> VisionTransformer:
    """ViT-B for ImageNet-style inputs: width 768, MLP 3072, 12 blocks, 12 heads, patch 16."""
    kw = dict(embed_dim=768, depth=12, num_heads=12, mlp_dim=3072)
    kw.update(kwargs)
    return VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes, **kw)
