"""Pure OCI format logic: digests, names, media types, manifests, error codes. No I/O."""
