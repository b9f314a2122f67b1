"""The benchmark harness: timed runs with provenance (harness), stored results (storage), methods as typed (specs:
constructor syntax read with ast), summaries (summary), the book's experiments (experiments, sweep), prompts and
quality checks. The provenance of result rows lives in models.provenance (cost calibrations, below this layer, carry
it too)."""
from .harness import (ForwardTimer, WARMUP_TOKENS, as_prompts, first_divergence, perplexity, run_benchmark,
                      with_ar)
from .specs import parse_method, parse_methods
from .storage import KEY, distinct, read_results, results_dir, results_path, stored_keys
from .summary import summarize, with_params

__all__ = ["ForwardTimer", "KEY", "WARMUP_TOKENS", "as_prompts", "distinct", "first_divergence",
           "parse_method", "parse_methods", "perplexity", "read_results", "results_dir", "results_path",
           "run_benchmark", "stored_keys", "summarize", "with_ar", "with_params"]
