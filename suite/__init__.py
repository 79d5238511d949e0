"""Running the suite: the `chutes-suite` command, the process supervisor, code generation."""
