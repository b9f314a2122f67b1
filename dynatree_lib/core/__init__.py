"""The exact core: token tree, tree attention mask, KV-cache bookkeeping, drafting, verification, sampling and the
decoding loop. It knows no particular method (methods register with `loop.decode`) and needs neither pandas nor
plotly."""
