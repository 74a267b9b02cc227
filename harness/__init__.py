"""fluxgate's framework: the target contract, the registry, and (later) the pytest plugin."""
