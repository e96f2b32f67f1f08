"""Adam's running moments, written once for the Adam baseline and the learned update's features."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class AdamMoments:
    """Running first and second moments of the loss gradient, ``[tasks, P]`` each."""

    first: Tensor
    second: Tensor

    @classmethod
    def zeros_like(cls, value: Tensor) -> AdamMoments:
        return cls(value.new_zeros(value.shape), value.new_zeros(value.shape))

    def update(
        self, grad: Tensor, num_steps: Tensor, betas: tuple[float, float], eps: float
    ) -> tuple[AdamMoments, Tensor]:
        """The moments after ``grad`` and Adam's bias-corrected direction ``m̂ / (sqrt(v̂) + eps)``.

        ``num_steps`` ``[tasks]`` counts the gradients already folded in, per task.
        """
        beta1, beta2 = betas
        first = beta1 * self.first + (1 - beta1) * grad
        second = beta2 * self.second + (1 - beta2) * grad.square()
        moments = AdamMoments(first, second)
        first_hat = first / (1 - beta1 ** (num_steps + 1)[:, None])
        return moments, first_hat / (moments.second_corrected(num_steps, beta2).sqrt() + eps)

    def second_corrected(self, num_steps: Tensor, beta2: float) -> Tensor:
        """The bias-corrected second moment ``v̂`` once ``num_steps + 1`` gradients are folded in."""
        return self.second / (1 - beta2 ** (num_steps + 1)[:, None])
