"""Layer-by-layer synchronisation with the parent (SPEC 6, 7): parent client, downstream, upstream, engine."""
