"""Building blocks shared by the learned learners: transformer and tokenizers."""

from amortized.nn.mlp import mlp
from amortized.nn.tokens import ChunkTokens, ObservationTokens, ProgressEmbedding
from amortized.nn.transformer import Attention, Block, Transformer

__all__ = [
    "Attention",
    "Block",
    "ChunkTokens",
    "ObservationTokens",
    "ProgressEmbedding",
    "Transformer",
    "mlp",
]
