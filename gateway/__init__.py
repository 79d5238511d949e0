"""The Envoy gateway: its config renderer, Lua normaliser and the descriptor set it loads."""
