"""Seconds spent inside the models' forwards, via module hooks.

Everything else in a generation's wall time (tree building, masks, argmax, cache surgery, Python) is bookkeeping.
The benchmark harness stores the split (`target_forward_s`, `draft_forward_s`); the calibration subtracts it from
its runs' wall time and, with `log=True`, prices each forward against the cost curves (`Calibration.run_scales`).
"""
from __future__ import annotations

from .forward import clock, watch
from .kvcache import cache_len


class ForwardTimer:
    """Seconds and calls inside the target's and the draft's forwards, by role, and each role's first forward since
    the last reset (`first`: a generation's first forward of a model is its prefill of the prompt); with `log=True`
    also every forward as (role, tokens fed, cached tokens, seconds) in `forwards`.

    Give it the pair that runs (`core.loop.running_pair(pair, method)`: a draft_bits method drafts with a copy of
    the draft); a draft that is the target is timed as the target. The hooks cost a few microseconds per forward,
    far below one forward of any real model, and read the tokens and the cache before taking the clock, so only the
    forward is timed.
    """

    def __init__(self, pair, log: bool = False):
        self.models = {"target": pair.target}
        if pair.draft is not None and pair.draft is not pair.target:
            self.models["draft"] = pair.draft
        self.log = log
        self.handles = []
        self.reset()

    def reset(self):
        self.seconds = {role: 0.0 for role in self.models}
        self.calls = {role: 0 for role in self.models}
        self.first: dict[str, float] = {}
        self.forwards: list[tuple] = []
        self._start = {}

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def __enter__(self):
        for role, model in self.models.items():
            device = next(model.parameters()).device

            def pre(module, args, kwargs, role=role, device=device):
                tokens = cached = None
                if self.log:
                    ids, cache = kwargs.get("input_ids", args[0] if args else None), kwargs.get("past_key_values")
                    tokens = ids.shape[-1] if ids is not None else 0
                    cached = cache_len(cache) if cache is not None else 0
                self._start[role] = (tokens, cached, clock(device))  # the clock last: the forward alone is timed

            def post(module, args, kwargs, output, role=role, device=device):
                tokens, cached, t0 = self._start.pop(role)
                seconds = clock(device) - t0
                self.seconds[role] += seconds
                self.calls[role] += 1
                self.first.setdefault(role, seconds)
                if self.log:
                    self.forwards.append((role, tokens, cached, seconds))

            self.handles += [model.register_forward_pre_hook(pre, with_kwargs=True),
                             model.register_forward_hook(post, with_kwargs=True),
                             watch(model, pre, post)]  # the fused forwards, which bypass the module's hooks
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []
