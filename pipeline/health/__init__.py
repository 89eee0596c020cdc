"""The health reporter process: the periodic health block and the Prometheus endpoint,
both read from the board."""
