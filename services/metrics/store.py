"""Every query of the metrics service (none yet: see services/README.md for the layout)."""
