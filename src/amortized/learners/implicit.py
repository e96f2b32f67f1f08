"""Implicit learners: a learned ``f_γ`` reads query points and data together (in-context learning).

:class:`InContext` keeps a state per query point, by default the current predictions ``ŷ`` there,
and refines it each step from a transformer reading ``[x_q, ŷ_q]`` query tokens with the
mini-batch's ``[x, y]`` tokens. One step over all the data is standard in-context learning; many
steps over mini-batches is iterative amortized inference at memory bounded by the mini-batch. What
attention read is gone at the next step, so by default the learner also keeps a running ridge
regression of the targets on key features of the inputs (:mod:`~amortized.learners.rules.ridge`, a
mesa layer run over mini-batches): evidence from every batch, combined exactly, at fixed memory.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from amortized.errors import ConfigError
from amortized.learners.base import Learner, plain_arguments, seeded
from amortized.learners.rules import TransformerUpdate
from amortized.learners.rules.curvature import MAX_SIZE
from amortized.learners.rules.logistic import RunningLogistic, with_intercept
from amortized.learners.rules.ridge import MAX_KEYS, RunningRidge
from amortized.learners.rules.transformer import (
    NEWTON_DEFAULT_SIZE,
    InContextCarry,
    history_flags,
    pushed,
    refinement_counts,
)
from amortized.learners.state import State
from amortized.nn import ObservationTokens, ProgressEmbedding, Transformer, mlp
from amortized.validation import check_bool, check_choice, check_positive_int

STATES = {"classification": ("logits", "probabilities", "latent"), "regression": ("predictions", "latent")}
"""What :class:`InContext` refines per query point, by kind of output; the first is the default."""
LEARNED_KEY_PENALTY = 100.0
"""The ridge readout's initial prior precision on its learned keys (1 on ``[x, 1]``): they start nearly
unused, so an untrained readout is ridge regression on the inputs, and training lowers it where they help."""
PROBABILITY_FLOOR = 1e-4
"""The least probability a ``state="probabilities"`` state gives a class (``0.5 / classes`` if that is
less): its log, the prediction, stays finite and a query's loss at most ``-log(1e-4) ≈ 9.2``."""


class InContext(Learner):
    """A transformer that refines a state per query point (by default its predictions) from mini-batches.

    The update is a :class:`TransformerUpdate` reading observations (no gradient: the state is not a
    function that can be differentiated at the mini-batch's points), with its recipe: every update is
    scaled by the batch's share ``B / (seen + B)`` (``scale_by_share``), so the state moves less as
    evidence accumulates, re-reads included; ``refinements`` re-reads the batch with the refined
    state (``taper_refinements`` as for the other learners); memory tokens persist across steps;
    ``history`` adds the states of the last ``h`` steps to each query's token (zeros until they exist,
    told apart by one progress flag each).

    Context and memory tokens attend to each other; query tokens attend to them only, so queries
    never influence one another and memory stays linear in the number of points. With
    ``linear_head``, each query's output adds ``[x_q, 1] · W`` with weights ``W`` read from its own
    output token: a query can then express a linear function of its input exactly, the way the
    explicit decoder's skip does. Predictions are only available at the ``query_x`` given to
    ``init_state`` / ``adapt``.

    ``ridge_features`` (``None``, or ``false`` in a preset: off) keeps the running ridge regression
    of the targets (one-hot labels for classification) on the keys ``[x, 1, tanh(g(x))]``, ``g`` a
    learned map to that many features, with a learned prior precision per key (1 on ``[x, 1]``,
    :data:`LEARNED_KEY_PENALTY` on the learned keys, so they start nearly unused). Each step reads
    the batch into it; context tokens see its prediction at their points from the batches before
    (the surprise of this batch); query tokens see its readout and leverage at the query. For the
    ``"predictions"`` state the readout is also the base: the state is the readout plus a
    correction, a share-weighted running mean of the head's outputs (with ``scale_by_share``). An
    untrained learner thus predicts ridge regression on its inputs (for a linear task with the
    prior's precision, the posterior mean); training learns the prior and the corrections. Other
    states read the readout as features.

    ``logistic_base`` does for the ``"logits"`` state what the readout does for predictions: the
    state is the logits of a running logistic regression on ``[x, 1]`` (online Newton over every
    point read, :mod:`~amortized.learners.rules.logistic`) plus a correction kept the same way, since
    a ridge fit of one-hot labels classifies poorly. The base's logits are multiplied by a learned
    temperature, a function of the progress features (1 untrained): an online fit lags behind the
    maximum-likelihood one and is under-confident, and scaling its logits calibrates it without
    moving its decisions, which an additive correction cannot do. ``None``: on for the logits state
    when the logistic model has at most
    :data:`~amortized.learners.rules.transformer.NEWTON_DEFAULT_SIZE` weights (a ``P × P``
    curvature per task), off otherwise.

    ``base_gate`` (opt-in) lets each step choose how much of its base's move (the readout's, the
    logistic logits') the predictions follow: ``value + g · Δbase`` instead of ``value + Δbase``, with
    ``g = 1 + gate(out)`` read from the query's output token (1 untrained), which also sees the move.
    Without it, the corrections, a running mean of what earlier steps read against earlier readouts,
    stay where they were while the readout moves on; with it, a step can keep part of the move in
    the correction instead. It needs a base. Off by default: on sinusoids it lowered the error
    through the first pass and a half but rose more after it, and on linear regression it was level
    (README, "Every regime, measured").

    ``state`` chooses what is refined, an ablation of the iterative state (``None``: the first):

    - ``"logits"`` (classification) / ``"predictions"`` (regression): the predictions, which a step
      moves by the head's output; query tokens read them (logits as probabilities, to bound them).
    - ``"probabilities"`` (classification only): a distribution over classes per query. A step adds
      the head's output to it in probability space, then projects the result onto the distributions
      whose entries are all at least :data:`PROBABILITY_FLOOR` (the nearest one in the geometry the
      move was made in: a move that stays inside is only kept on the simplex's plane, one that leaves
      it stops at the boundary). Clamping and renormalising would let a large move push entries
      below the floor; the projection cannot. ``predict`` returns ``log p``: logits whose softmax is
      ``p`` again, as the categorical likelihood expects. The contrast with ``"logits"`` (whose
      additive moves are multiplicative in probability space) is the geometry of the update.
    - ``"latent"``: a vector of the transformer's width per query, read by query tokens in place of
      the predictions and decoded by the head (and linear head) into them. A step moves it towards
      the query's output token by the update's scale (the batch's share with ``scale_by_share``: a
      running average of the readouts; otherwise it is replaced by the readout), so what is carried
      across steps is the transformer's own summary rather than its predictions.
    """

    regime = "implicit"
    rule_type: ClassVar[type[TransformerUpdate]] = TransformerUpdate
    legacy_defaults: ClassVar[dict[str, Any]] = {
        "linear_head": False,
        "ridge_features": None,
        "logistic_base": False,
        "rule": {"refinements": 1, "scale_by_share": False, "taper_refinements": False},
    }

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 1,
        task: str = "regression",
        linear_head: bool = True,
        ridge_features: int | bool | None = 16,
        logistic_base: bool | None = None,
        base_gate: bool = False,
        state: str | None = None,
        rule: TransformerUpdate | dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        config = plain_arguments(locals())
        if rule is None or isinstance(rule, dict):
            rule = {"inputs": ["observations"], "refinements": 1, "momentum": False, **(rule or {})}
        spec = TransformerUpdate.from_value(rule)
        if spec.inputs is None:
            spec = replace(spec, inputs=("observations",))
        if spec.inputs != ("observations",):
            raise ConfigError(
                "InContext reads observations only (rule.inputs = ['observations']): its state, "
                "predictions at the query points, has no gradient at the mini-batch's points"
            )
        if spec.momentum:
            raise ConfigError("InContext has no momentum (it reads no gradient): set rule.momentum = false")
        if spec.gradient_base:
            raise ConfigError(
                "InContext takes no gradient step (it reads no gradient): set rule.gradient_base = false"
            )
        super().__init__(input_dim, output_dim, task, None)
        self.spec = spec
        self.linear_head = check_bool("linear_head", linear_head)
        if ridge_features is False:  # how a preset (TOML has no None) turns the readout off
            ridge_features = None
        if ridge_features is not None:
            ridge_features = check_positive_int("ridge_features", ridge_features, allow_zero=True)
            if input_dim + 1 + ridge_features > MAX_KEYS:
                raise ConfigError(
                    f"the ridge readout keeps a K × K matrix per task over K = input_dim + 1 + "
                    f"ridge_features = {input_dim + 1 + ridge_features} keys, above {MAX_KEYS}: reduce "
                    "the inputs (e.g. a projection) or set ridge_features = None (false in a preset)"
                )
        self.ridge_features = ridge_features
        self.state_kind = _state_option(state, self.num_classes)
        self.logistic_base = self._logistic_option(logistic_base)
        width, refining, ridge = spec.width, spec.refinements > 1, ridge_features is not None
        self.base_gate = check_bool("base_gate", base_gate)
        if base_gate and not (self.logistic_base or (ridge and self.state_kind == "predictions")):
            raise ConfigError(
                "base_gate gates the move of a base, which this InContext lacks: the ridge readout "
                "(ridge_features) for the 'predictions' state, or logistic_base for 'logits'"
            )
        read = width if self.state_kind == "latent" else output_dim
        with seeded(seed):
            self.context = ObservationTokens(input_dim, output_dim, self.num_classes, width, ridge)
            self.queries = mlp(
                input_dim
                + read * (1 + refining + spec.history)
                + ridge * (output_dim + 1)
                + self.base_gate * output_dim,
                width,
            )
            self.progress = ProgressEmbedding(5 + spec.history + refining, width)
            self.transformer = Transformer(width, spec.depth, spec.heads)
            self.head = nn.Linear(width, output_dim)
            self.memory0 = nn.Parameter(torch.randn(spec.memory_tokens, width) * 0.02)
            self.linear = nn.Linear(width, (input_dim + 1) * output_dim) if linear_head else None
            self.key_features = mlp(input_dim, width, ridge_features) if ridge_features else None
            self.gate = nn.Linear(width, output_dim) if self.base_gate else None
        if self.logistic_base:
            self.logistic_scale = nn.Linear(5, 1)
            nn.init.zeros_(self.logistic_scale.weight)
            nn.init.zeros_(self.logistic_scale.bias)
        if ridge:
            penalty = torch.zeros(input_dim + 1 + ridge_features)
            penalty[input_dim + 1 :] = math.log(LEARNED_KEY_PENALTY)
            self.log_penalty = nn.Parameter(penalty)
        for layer in (self.head, self.linear, self.gate):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        if self.state_kind == "latent":
            self.latent0 = nn.Parameter(torch.zeros(width))
        else:
            self.prediction0 = nn.Parameter(torch.zeros(output_dim))
        self.config = {
            **config,
            "state": self.state_kind,
            "logistic_base": self.logistic_base,
            "base_gate": self.base_gate,
            "rule": spec.as_dict(),
        }

    def _logistic_option(self, logistic_base: bool | None) -> bool:
        """``logistic_base`` checked against the state and the logistic model's size, ``None`` resolved."""
        size = (self.input_dim + 1) * self.output_dim
        if logistic_base is None:
            return self.state_kind == "logits" and size <= NEWTON_DEFAULT_SIZE
        if check_bool("logistic_base", logistic_base) and self.state_kind != "logits":
            raise ConfigError(f"logistic_base is the base of the 'logits' state, not of {self.state_kind!r}")
        if logistic_base and size > MAX_SIZE:
            raise ConfigError(
                f"logistic_base keeps a {size} × {size} curvature per task ((input_dim + 1) × classes "
                f"weights), above {MAX_SIZE}: reduce the inputs or set logistic_base = false"
            )
        return logistic_base

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Learner:
        """Rebuild from a checkpoint's config, including those that listed the rule's options flat."""
        config = dict(config)
        option_names = set(TransformerUpdate.__dataclass_fields__)
        flat = {name: config.pop(name) for name in list(config) if name in option_names}
        legacy = cls.legacy_defaults
        config.setdefault("ridge_features", legacy["ridge_features"])
        config.setdefault("logistic_base", legacy["logistic_base"])
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
        shape = (num_tasks, query_x.shape[1], -1)
        if self.state_kind == "latent":
            value = self.latent0.expand(*shape)
        else:
            value = self.prediction0.expand(*shape)
            value = floored_simplex(value.softmax(-1)) if self.state_kind == "probabilities" else value
        carry = InContextCarry()
        if self.spec.memory_tokens:
            carry.tokens = self.memory0.expand(num_tasks, -1, -1)
        if self.spec.history:
            carry.history = value.new_zeros(num_tasks, self.spec.history, *value.shape[1:])
        if self.ridge_features is not None:
            num_keys = self.input_dim + 1 + self.ridge_features
            carry.ridge = RunningRidge.zeros(num_tasks, num_keys, self.output_dim, value)
            carry.readout = value.new_zeros(num_tasks, query_x.shape[1], self.output_dim)
        if self.logistic_base:
            carry.logistic = RunningLogistic.zeros(num_tasks, self.input_dim, self.output_dim, value)
            carry.base = value.new_zeros(num_tasks, query_x.shape[1], self.output_dim)
        return State.initial(value, carry, query_x)

    def _keys(self, x: Tensor) -> Tensor:
        """The ridge readout's keys ``[x, 1, tanh(features(x))]``: every linear function, and learned ones."""
        if self.key_features is None:
            return with_intercept(x)
        return torch.cat([with_intercept(x), torch.tanh(self.key_features(x))], -1)

    def _ridge(
        self, state: State, carry: InContextCarry, x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Reads the batch into the running ridge regression (in ``carry``): its readout before the batch
        at the batch's points, and after it at the queries with their leverage."""
        penalty, keys = self.log_penalty.exp(), self._keys(x)
        before, _ = carry.ridge.readout(keys, state.num_seen, penalty)
        carry.ridge = carry.ridge.update(keys, self.context.targets(y).to(x.dtype), state.share(x.shape[1]))
        after, leverage = carry.ridge.readout(self._keys(state.query_x), state.num_seen + x.shape[1], penalty)
        return before, after, leverage

    def _shown(self, value: Tensor) -> Tensor:
        """The state as query features: probabilities for logits (bounded), anything else as it is."""
        return value.softmax(-1) if self.state_kind == "logits" else value

    def _decode(self, tokens: Tensor, query_x: Tensor) -> Tensor:
        """Per-query outputs from tokens: the head, plus ``[x_q, 1] · W`` with ``linear_head``."""
        output = self.head(tokens)
        if self.linear is not None:
            weights = self.linear(tokens).view(*tokens.shape[:2], self.input_dim + 1, self.output_dim)
            output = output + (with_intercept(query_x)[..., None] * weights).sum(-2)
        return output

    def _moved(
        self, value: Tensor, out: Tensor, query_x: Tensor, scale: Tensor | int, base: Tensor | None
    ) -> Tensor:
        """The state after one transformer pass whose query output tokens are ``out``; with a ``base``
        (the readout, the logistic logits) the correction ``value - base`` is what moves."""
        if self.state_kind == "latent":
            return value + scale * (out - value)
        if base is not None:
            correction = value - base
            return value + scale * (self._decode(out, query_x) - correction)
        moved = value + scale * self._decode(out, query_x)
        return floored_simplex(moved) if self.state_kind == "probabilities" else moved

    def _step(self, state: State, x: Tensor, y: Tensor) -> State:
        spec, points = self.spec, x.shape[1]
        query_x, carry = state.query_x, replace(state.carry)
        start = value = state.value
        readout_features, batch_readout, base, base_move = [], None, None, 0
        step_progress, past = state.progress_features(points), []
        if self.ridge_features is not None:
            batch_readout, readout, leverage = self._ridge(state, carry, x, y)
            if self.state_kind == "predictions":
                base, base_move = readout, readout - carry.readout
            carry.readout = readout
            readout_features = [readout, torch.log1p(leverage)]
        if self.logistic_base:
            carry.logistic = carry.logistic.update(x, y, state.share(points), state.num_seen + points)
            temperature = self.logistic_scale(step_progress).exp()[..., None]
            base = carry.logistic.logits(query_x) * temperature
            base_move, carry.base = base - carry.base, base
        value = value + base_move
        if self.base_gate:
            readout_features = [*readout_features, base_move]
        shared = points + spec.memory_tokens
        if spec.history:
            flags = history_flags(state, spec.history)
            step_progress = torch.cat([step_progress, flags], -1)
            entries = zip(carry.history.unbind(1), flags.unbind(1), strict=True)
            past = [self._shown(entry) * flag[:, None, None] for entry, flag in entries]
        scale = state.share(points)[:, None, None] if spec.scale_by_share else 1
        counts, passes = refinement_counts(state, points, spec.refinements, spec.taper_refinements)
        context = self.context(x, y, batch_readout)
        for refinement in range(passes):
            active = (counts > refinement)[:, None, None]
            features, progress = [query_x, self._shown(value)], step_progress
            if spec.refinements > 1:
                features.append(value - start)
                fraction = refinement / counts[:, None].to(value.dtype)
                progress = torch.cat([progress, fraction], -1)
            features += past + readout_features
            tokens = [context]
            if spec.memory_tokens:
                tokens.append(carry.tokens)
            tokens.append(self.queries(torch.cat(features, -1)) + self.progress(progress))
            out = self.transformer(torch.cat(tokens, 1), num_shared=shared)
            if spec.memory_tokens:
                carry.tokens = torch.where(active, out[:, points:shared], carry.tokens)
            moved = self._moved(value, out[:, shared:], query_x, scale, base)
            if self.base_gate and refinement == 0:
                moved = moved + self.gate(out[:, shared:]) * base_move
            value = torch.where(active, moved, value)
        if spec.history:
            carry.history = pushed(carry.history, start)
        return state.advance(value, points, carry)

    def _predict(self, state: State, x: Tensor | None) -> Tensor:
        if x is not None and (x.shape != state.query_x.shape or not torch.equal(x, state.query_x)):
            raise ConfigError(
                "InContext predicts only at the query points given to adapt (query_x); to predict "
                "at other points, adapt again with query_x set to them"
            )
        if self.state_kind == "probabilities":
            return state.value.log()
        if self.state_kind == "latent":
            return self._decode(state.value, state.query_x)
        return state.value


def _state_option(state: object, num_classes: int | None) -> str:
    """The ``state`` option checked for the kind of output, ``None`` resolved to its predictions."""
    kind = "classification" if num_classes else "regression"
    if state is None:
        return STATES[kind][0]
    if kind == "regression" and state in ("logits", "probabilities"):
        raise ConfigError(
            f"state {state!r} is for classification; a regression InContext refines 'predictions' "
            "(the means) or a 'latent'"
        )
    return check_choice("state", state, STATES[kind])


def floored_simplex(values: Tensor) -> Tensor:
    """The Euclidean projection of ``values`` (last dim) onto the distributions whose entries are all
    at least the floor (:data:`PROBABILITY_FLOOR`, or ``0.5 / classes`` if that is less).

    Sort-based (Duchi et al., 2008): ``floor + max(values - floor - θ, 0)``, with the shift ``θ``
    that makes the entries sum to 1.
    """
    classes = values.shape[-1]
    floor = min(PROBABILITY_FLOOR, 0.5 / classes)
    shifted = values - floor
    ordered = shifted.sort(-1, descending=True).values
    excess = ordered.cumsum(-1) - (1 - classes * floor)
    ranks = torch.arange(1, classes + 1, dtype=values.dtype, device=values.device)
    kept = (ordered - excess / ranks > 0).sum(-1, keepdim=True).clamp(min=1)  # 0 only for NaN
    theta = excess.gather(-1, kept - 1) / kept
    return (shifted - theta).clamp(min=0) + floor
