"""Pre-norm transformer blocks over sets of tokens (no positional encoding over data points)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from amortized.memory import check_parameters
from amortized.validation import check_divisible, check_positive_int


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (never builds N×N on CPU)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        check_divisible("width", width, "heads", heads)
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, tokens: Tensor, num_shared: int | None = None) -> Tensor:
        batch, length, width = tokens.shape
        qkv = self.qkv(tokens).view(batch, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if num_shared is not None:
            k, v = k[:, :, :num_shared], v[:, :, :num_shared]
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.out(attended.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )

    def forward(self, tokens: Tensor, num_shared: int | None = None) -> Tensor:
        tokens = tokens + self.attn(self.attn_norm(tokens), num_shared)
        return tokens + self.mlp(self.mlp_norm(tokens))


class Transformer(nn.Module):
    """A stack of pre-norm blocks with a final LayerNorm.

    With ``num_shared``, every token attends only to the first ``num_shared`` tokens (context and
    memory), so the rest (queries) read the context without reading or influencing each other.
    Without a mask, attention never builds the tokens × tokens matrix on CPU.
    """

    def __init__(self, width: int = 64, depth: int = 2, heads: int = 4) -> None:
        super().__init__()
        check_positive_int("width", width)
        check_positive_int("depth", depth)
        check_positive_int("heads", heads)
        # Per block: attention 4w² + 4w, MLP 8w² + 5w, two LayerNorms 4w; then the final LayerNorm.
        check_parameters(f"width={width}, depth={depth}", depth * (12 * width**2 + 13 * width) + 2 * width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: Tensor, num_shared: int | None = None) -> Tensor:
        for block in self.blocks:
            tokens = block(tokens, num_shared)
        return self.norm(tokens)
