"""Command-line entry points: thin wrappers, `main(argv) -> int`."""
