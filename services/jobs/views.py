"""Rows of the jobs schema to protobuf messages (none yet: see services/README.md for the layout)."""
