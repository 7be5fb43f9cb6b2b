"""Loss terms (chosen by registry name) and the weighted objective.

Importing this package registers every built-in term in :data:`LOSSES`:

* logits: ``kd_kl``, ``kd_soft_ce``, ``kd_mse``, ``hard_ce``
* hidden states: ``embedding_mse``, ``hidden_mse``, ``hidden_cos``, ``pkd``
* attention: ``attention_mse``, ``attention_kl``
* relations: ``minilm``, ``minilmv2``
* causal LMs (next-token distributions): ``lm_kl``, ``lm_reverse_kl``, ``lm_jsd``, ``lm_skew_kl``,
  ``lm_skew_reverse_kl``, ``lm_tvd``, ``lm_ce``

A new term is one file with a :class:`LossTerm` subclass decorated with :func:`register_term`, imported here.
"""

from textdistill.losses import attention, hidden, lm, logits, relation  # noqa: F401  (registers the terms)
from textdistill.losses.base import LOSSES, LossTerm, Param, register_term
from textdistill.losses.objective import Objective, validate_objective

__all__ = ["LOSSES", "LossTerm", "Objective", "Param", "register_term", "validate_objective"]
