"""Cross-exchange opportunity detection: pure rules, lifecycle, and the polling process."""
