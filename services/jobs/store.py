"""Every query of the jobs service (none yet: see services/README.md for the layout)."""
