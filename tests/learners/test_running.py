"""Running statistics: any split of the points into batches gives the statistics of all of them."""

import torch

from amortized.learners.running import RunningAttention, RunningMoments


def _read_in_batches(scores, values, sizes):
    statistics, seen, start = RunningAttention.empty(values[:, :, : scores.shape[2]]), 0, 0
    for size in sizes:
        share = torch.full((scores.shape[0],), size / (seen + size))
        part = slice(start, start + size)
        statistics = statistics.update(scores[..., part], values[:, :, part], share)
        seen, start = seen + size, start + size
    return statistics


def test_running_attention_equals_softmax_attention_over_all_points():
    generator = torch.Generator().manual_seed(0)
    # Scores far apart (up to ±80): exponentiating them without the offset would overflow.
    scores = 40 * torch.randn(3, 2, 5, 60, generator=generator)
    values = torch.randn(3, 2, 60, 4, generator=generator)
    expected = scores.softmax(-1) @ values
    for sizes in ([60], [20, 20, 20], [1, 7, 30, 22]):
        read = _read_in_batches(scores, values, sizes).read()
        torch.testing.assert_close(read, expected, atol=1e-5, rtol=1e-5)


def test_running_attention_weighs_a_reread_like_a_second_copy():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(2, 1, 3, 10, generator=generator)
    values = torch.randn(2, 1, 10, 4, generator=generator)
    twice = _read_in_batches(scores.repeat(1, 1, 1, 2), values.repeat(1, 1, 2, 1), [5, 5, 5, 5])
    torch.testing.assert_close(twice.read(), scores.softmax(-1) @ values)


def test_running_moments_match_the_moments_of_all_points():
    values = torch.randn(2, 30, 3, generator=torch.Generator().manual_seed(2))
    moments, seen = RunningMoments(torch.zeros(2, 3), torch.zeros(2, 3)), 0
    for part in values.split([4, 16, 10], 1):
        share = torch.full((2,), part.shape[1] / (seen + part.shape[1]))
        moments, seen = moments.update(part, share), seen + part.shape[1]
    torch.testing.assert_close(moments.mean, values.mean(1))
    torch.testing.assert_close(moments.scale, values.std(1, correction=0))
