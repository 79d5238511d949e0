"""Rows of the attestation schema to protobuf messages (none yet: see services/README.md for the layout)."""
