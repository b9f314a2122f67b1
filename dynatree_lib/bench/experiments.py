"""The book's experiments: what each one runs (plans: methods, prompts, lengths, presets) and how it is run,
resumed and read back (sweep). One import for notebooks and scripts: `from dynatree_lib.bench import experiments`."""
from .plans import *  # noqa: F401,F403
from .plans import __all__ as _plans
from .sweep import *  # noqa: F401,F403
from .sweep import __all__ as _sweep

__all__ = [*_plans, *_sweep]
