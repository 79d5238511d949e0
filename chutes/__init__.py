"""The chutes client package: generated gRPC stubs (`chutes.<domain>.v1`) and the SDK."""
