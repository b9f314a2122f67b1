"""The exact core: token tree, tree attention mask, KV-cache bookkeeping, drafting, verification, sampling and the
decoding loop. It knows no particular method (only the interfaces loop.Method, loop.Speculative and
loop.Drafter) and needs neither pandas nor plotly."""
