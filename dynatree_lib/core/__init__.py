"""The exact core: token tree, tree attention mask, KV-cache bookkeeping, drafting, verification, sampling and the
decoding loop. It knows no particular method (only the interfaces of core.method: Method, Speculative,
Drafter) and needs neither pandas nor plotly."""
