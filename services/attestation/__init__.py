"""The attestation service: TEE evidence of a chute's instances."""
