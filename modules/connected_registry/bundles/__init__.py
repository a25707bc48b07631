"""Signed offline bundles (issue 17): an instance's content carried where no link reaches, as an OCI image layout
(a directory or one tar) with a bundle manifest signed by the exporting instance's ES256 key. Importing one applies
it exactly as a sync from that parent would (the sync's downstream walks a bundle as it walks a parent)."""
