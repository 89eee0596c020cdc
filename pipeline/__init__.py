"""Low-latency crypto market-data pipeline and cross-exchange arbitrage detector."""
__version__ = "0.1.0"
