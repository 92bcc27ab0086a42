"""JetStream pull worker that claims commands and runs tools."""
