"""Implicit learners: a learned ``f_γ`` reads query points and data together (in-context learning).

:class:`InContext` keeps the current predictions ``ŷ`` at the query points as its state and refines
them each step from a transformer reading ``[x_q, ŷ_q]`` query tokens with the mini-batch's ``[x, y]``
tokens. One step over all the data is standard in-context learning; many steps over mini-batches is
iterative amortized inference at memory bounded by the mini-batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from amortized.errors import ConfigError
from amortized.learners.base import Learner, plain_arguments, seeded
from amortized.learners.rules import TransformerUpdate
from amortized.learners.rules.transformer import refinement_counts
from amortized.learners.state import State
from amortized.nn import ObservationTokens, ProgressEmbedding, Transformer, mlp
from amortized.validation import check_bool


class InContext(Learner):
    """A transformer that refines query predictions (logits for classification) from mini-batches.

    The update is a :class:`TransformerUpdate` reading observations (no gradient: the state is not a
    function that can be differentiated at the mini-batch's points), with its recipe: every update is
    scaled by the batch's share ``B / (seen + B)`` (``scale_by_share``), so predictions move less as
    evidence accumulates, re-reads included; ``refinements`` re-reads the batch with the refined
    predictions (``taper_refinements`` as for the other learners); memory tokens persist across steps.

    Context and memory tokens attend to each other; query tokens attend to them only, so queries
    never influence one another and memory stays linear in the number of points. With
    ``linear_head``, each query's update adds ``[x_q, 1] · W`` with weights ``W`` read from its own
    output token: a query can then express a linear function of its input exactly, the way the
    explicit decoder's skip does. Predictions are only available at the ``query_x`` given to
    ``init_state`` / ``adapt``.
    """

    regime = "implicit"
    rule_type: ClassVar[type[TransformerUpdate]] = TransformerUpdate
    legacy_defaults: ClassVar[dict[str, Any]] = {
        "linear_head": False,
        "rule": {"refinements": 1, "scale_by_share": False, "taper_refinements": False},
    }

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        task: str = "regression",
        linear_head: bool = True,
        rule: TransformerUpdate | dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        if rule is None or isinstance(rule, dict):
            rule = {"inputs": ["observations"], "refinements": 1, "momentum": False, **(rule or {})}
        spec = TransformerUpdate.from_value(rule)
        if spec.inputs != ("observations",):
            raise ConfigError(
                "InContext reads observations only (rule.inputs = ['observations']): its state, "
                "predictions at the query points, has no gradient at the mini-batch's points"
            )
        if spec.momentum:
            raise ConfigError("InContext has no momentum (it reads no gradient): set rule.momentum = false")
        super().__init__(input_dim, output_dim, task, None)
        self.spec = spec
        self.linear_head = check_bool("linear_head", linear_head)
        width = spec.width
        with seeded(seed):
            self.context = ObservationTokens(input_dim, output_dim, self.num_classes, width, False)
            self.queries = mlp(input_dim + output_dim * (1 + (spec.refinements > 1)), width)
            self.progress = ProgressEmbedding(5 + (spec.refinements > 1), width)
            self.transformer = Transformer(width, spec.depth, spec.heads)
            self.head = nn.Linear(width, output_dim)
            self.memory0 = nn.Parameter(torch.randn(spec.memory_tokens, width) * 0.02)
            self.linear = nn.Linear(width, (input_dim + 1) * output_dim) if linear_head else None
        for layer in (self.head, self.linear):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.prediction0 = nn.Parameter(torch.zeros(output_dim))
        self.config = {**config, "rule": spec.as_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Learner:
        """Rebuild from a checkpoint's config, including those that listed the rule's options flat."""
        config = dict(config)
        option_names = set(TransformerUpdate.__dataclass_fields__)
        flat = {name: config.pop(name) for name in list(config) if name in option_names}
        legacy = cls.legacy_defaults
        if "linear_head" not in config:
            config["linear_head"] = legacy["linear_head"]
            flat = {**legacy["rule"], **flat}
        if flat:
            config["rule"] = {"inputs": ["observations"], **flat, **(config.get("rule") or {})}
        return cls(**config)

    def init_state(self, num_tasks: int, query_x: Tensor | None = None) -> State:
        if query_x is None:
            raise ConfigError(
                "InContext predicts at query points fixed before adaptation: pass query_x to "
                "init_state / adapt"
            )
        prediction = self.prediction0.expand(num_tasks, query_x.shape[1], -1)
        memory = self.memory0.expand(num_tasks, -1, -1) if self.spec.memory_tokens else None
        return State.initial(prediction, memory, query_x)

    def _shown(self, prediction: Tensor) -> Tensor:
        """Predictions as query features: probabilities for logits (bounded), means as they are."""
        return prediction.softmax(-1) if self.num_classes else prediction

    def _update(self, out: Tensor, query_x: Tensor) -> Tensor:
        update = self.head(out)
        if self.linear is not None:
            weights = self.linear(out).view(*out.shape[:2], self.input_dim + 1, self.output_dim)
            features = torch.cat([query_x, torch.ones_like(query_x[..., :1])], -1)
            update = update + (features[..., None] * weights).sum(-2)
        return update

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        spec, points = self.spec, x.shape[1]
        query_x, memory = state.query_x, state.carry
        start = prediction = state.value
        shared = points + spec.memory_tokens
        step_progress = state.progress_features(points)
        scale = state.share(points)[:, None, None] if spec.scale_by_share else 1
        counts = refinement_counts(state, points, spec.refinements, spec.taper_refinements)
        context = self.context(x, y)
        for refinement in range(int(counts.max())):
            active = (counts > refinement)[:, None, None]
            features, progress = [query_x, self._shown(prediction)], step_progress
            if spec.refinements > 1:
                features.append(prediction - start)
                fraction = refinement / counts[:, None].to(prediction.dtype)
                progress = torch.cat([progress, fraction], -1)
            tokens = [context]
            if spec.memory_tokens:
                tokens.append(memory)
            tokens.append(self.queries(torch.cat(features, -1)) + self.progress(progress))
            out = self.transformer(torch.cat(tokens, 1), num_shared=shared)
            if spec.memory_tokens:
                memory = torch.where(active, out[:, points:shared], memory)
            moved = prediction + scale * self._update(out[:, shared:], query_x)
            prediction = torch.where(active, moved, prediction)
        return state.advance(prediction, points, memory)

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        if x is not None and (x.shape != state.query_x.shape or not torch.equal(x, state.query_x)):
            raise ConfigError(
                "InContext predicts only at the query points given to adapt (query_x); to predict "
                "at other points, adapt again with query_x set to them"
            )
        return state.value
