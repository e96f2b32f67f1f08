"""Update rules: how a learned learner refines its task state from a mini-batch.

A rule is a frozen spec of options (:class:`GradientStep`, :class:`TransformerUpdate`) that builds
the module holding its weights for a target (a composed learner), and keeps its own typed carry in
the state. Learners of every regime take the same rules, so a rule's improvement reaches them all.
"""

from amortized.learners.rules.gradient import GradientStep, GradientStepRule
from amortized.learners.rules.moments import AdamMoments
from amortized.learners.rules.spec import RuleSpec, Target
from amortized.learners.rules.transformer import TransformerCarry, TransformerRule, TransformerUpdate

__all__ = [
    "AdamMoments",
    "GradientStep",
    "GradientStepRule",
    "RuleSpec",
    "Target",
    "TransformerCarry",
    "TransformerRule",
    "TransformerUpdate",
]
