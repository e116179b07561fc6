"""CLI sub-commands of the runtime."""
