"""Implicit learners: a learned ``f_γ`` reads query points and data together (in-context learning).

:class:`InContext` keeps the current predictions ``ŷ`` at the query points as its state and refines
them each step from a transformer reading ``[x_q, ŷ_q]`` query tokens with the mini-batch's ``[x, y]``
tokens. One step over all the data is standard in-context learning; many steps over mini-batches is
iterative amortized inference at memory bounded by the mini-batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from amortized.errors import ConfigError
from amortized.learners.base import Learner, plain_arguments, seeded
from amortized.learners.state import State
from amortized.nn import ObservationTokens, ProgressEmbedding, Transformer


class InContext(Learner):
    """A transformer that refines query predictions from mini-batches of context.

    Context and memory tokens attend to each other; query tokens attend to them only, so queries
    never influence one another and memory stays linear in the number of points. Predictions are only
    available at the ``query_x`` given to ``init_state`` / ``adapt``. ``scale_by_share`` multiplies each
    update of the predictions by ``B / (seen + B)``, so later steps move them less.
    """

    regime = "implicit"

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        task: str = "regression",
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        memory_tokens: int = 0,
        scale_by_share: bool = False,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        super().__init__(input_dim, output_dim, task, None)
        self.scale_by_share = bool(scale_by_share)
        with seeded(seed):
            self.context = ObservationTokens(input_dim, output_dim, self.num_classes, width, False)
            self.queries = nn.Sequential(
                nn.Linear(input_dim + output_dim, width), nn.GELU(), nn.Linear(width, width)
            )
            self.progress = ProgressEmbedding(5, width)
            self.transformer = Transformer(width, depth, heads)
            self.head = nn.Linear(width, output_dim)
            self.memory0 = nn.Parameter(torch.randn(memory_tokens, width) * 0.02)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.prediction0 = nn.Parameter(torch.zeros(output_dim))
        self.memory_tokens = memory_tokens
        self.config = config

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        if query_x is None:
            raise ConfigError(
                "InContext predicts at query points fixed before adaptation: pass query_x to "
                "init_state / adapt"
            )
        prediction = self.prediction0.expand(num_tasks, query_x.shape[1], -1)
        memory = self.memory0.expand(num_tasks, -1, -1) if self.memory_tokens else None
        return State.initial(prediction, memory, query_x)

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        prediction, query_x = state.value, state.query_x
        shown = prediction.softmax(-1) if self.num_classes else prediction
        queries = self.queries(torch.cat([query_x, shown], -1))
        queries = queries + self.progress(state.progress_features(x.shape[1]))
        tokens = [self.context(x, y)]
        if self.memory_tokens:
            tokens.append(state.carry)
        tokens.append(queries)
        out = self.transformer(torch.cat(tokens, 1), num_shared=x.shape[1] + self.memory_tokens)
        memory = out[:, x.shape[1] : x.shape[1] + self.memory_tokens] if self.memory_tokens else None
        update = self.head(out[:, -query_x.shape[1] :])
        if self.scale_by_share:
            update = update * state.share(x.shape[1])[:, None, None]
        return state.advance(prediction + update, x.shape[1], memory)

    def predict(self, state: State, x: Tensor | None = None) -> Tensor:
        if x is not None and (x.shape != state.query_x.shape or not torch.equal(x, state.query_x)):
            raise ConfigError(
                "InContext predicts only at the query points given to adapt (query_x); to predict "
                "at other points, adapt again with query_x set to them"
            )
        return state.value
