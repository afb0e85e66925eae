"""ml-init-config's generator: it sits above config, data and search, which it combines."""
