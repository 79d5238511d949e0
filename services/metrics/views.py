"""Rows of the metrics schema to protobuf messages (none yet: see services/README.md for the layout)."""
