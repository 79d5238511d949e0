"""SDK and CLI helpers: request signing (auth), schemas and execution context."""
