"""The suite's gRPC services, one package each, and the kit they share."""
