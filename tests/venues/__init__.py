"""Venue folders kept in the test suite (registered with ``PIPELINE_EXTRA_VENUES``)."""
