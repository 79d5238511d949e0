"""Every query of the attestation service (none yet: see services/README.md for the layout)."""
