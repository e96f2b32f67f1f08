import pytest
import torch

from amortized.errors import ConfigError
from amortized.nn import ChunkTokens, Transformer


def test_transformer_is_permutation_equivariant_over_tokens():
    model = Transformer(width=16, depth=2, heads=4)
    tokens = torch.randn(3, 7, 16)
    order = torch.randperm(7)
    assert torch.allclose(model(tokens)[:, order], model(tokens[:, order]), atol=1e-5)


def test_tokens_after_the_shared_ones_neither_read_nor_influence_each_other():
    model = Transformer(width=8, depth=2, heads=2)
    tokens = torch.randn(1, 5, 8)
    changed = tokens.clone()
    changed[:, 4] = torch.randn(8)
    out, out_changed = model(tokens, num_shared=3), model(changed, num_shared=3)
    assert torch.allclose(out[:, :4], out_changed[:, :4], atol=1e-6)
    assert not torch.allclose(out[:, 4], out_changed[:, 4])
    assert not torch.allclose(model(tokens)[:, 0], model(changed)[:, 0])


def test_width_must_split_into_heads():
    with pytest.raises(ConfigError, match="divisible"):
        Transformer(width=10, depth=1, heads=4)


def test_chunk_tokens_cover_vectors_of_any_size():
    chunks = ChunkTokens(size=70, chunk_size=32, num_features=2, width=16)
    assert chunks.num_chunks == 3
    tokens = chunks([torch.randn(5, 70), torch.randn(5, 70)])
    assert tokens.shape == (5, 3, 16)
    assert torch.equal(chunks.decode(tokens), torch.zeros(5, 70))
