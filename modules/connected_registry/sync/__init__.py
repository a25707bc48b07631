"""Layer-by-layer synchronisation with the parent (SPEC 6, 7), split by role: parent client, activation, feed,
reconcile, failure ledger, reporting up, downstream, upstream, on-demand fill; engine.py is the loop over them."""
