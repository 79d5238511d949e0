"""The identity service: users, API keys and hotkeys: the one authority on who is calling."""
