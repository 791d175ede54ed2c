"""lrr_optax: learning rates that learn themselves, to any order, as optax transformations.

References:
  Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018,
  https://arxiv.org/abs/1703.04782.
  Chandra et al., "Gradient Descent: The Ultimate Optimizer", NeurIPS 2022,
  https://arxiv.org/abs/1909.13371.
"""

from ._alias import lrr_adam as lrr_adam
from ._alias import lrr_adamw as lrr_adamw
from ._alias import lrr_sgd as lrr_sgd
from ._granularity import GRANULARITIES as GRANULARITIES
from ._granularity import Granularity as Granularity
from ._inspect import learning_rates as learning_rates
from ._inspect import summarize as summarize
from ._inspect import update_with_hypergradients as update_with_hypergradients
from ._options import DEFAULT_RATES as DEFAULT_RATES
from ._options import SCHEDULES as SCHEDULES
from ._options import Schedule as Schedule
from ._rules import RULES as RULES
from ._rules import PooledMoment as PooledMoment
from ._rules import Rule as Rule
from ._state import Hypergradients as Hypergradients
from ._state import LearningRateRatesState as LearningRateRatesState
from ._transform import learning_rate_rates as learning_rate_rates

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RATES",
    "GRANULARITIES",
    "Granularity",
    "RULES",
    "Rule",
    "SCHEDULES",
    "Schedule",
    "Hypergradients",
    "LearningRateRatesState",
    "PooledMoment",
    "learning_rate_rates",
    "learning_rates",
    "lrr_adam",
    "lrr_adamw",
    "lrr_sgd",
    "summarize",
    "update_with_hypergradients",
]
