#!/usr/bin/env python3
"""Start the pipeline: ``python run.py --config configs/demo.yaml``."""
import signal
import sys

# Catch SIGINT/SIGTERM from the very first moment, before the imports below:
# a stop request during start-up must still end in a clean shutdown.
_stop_requested: list = []
signal.signal(signal.SIGINT, lambda signum, frame: _stop_requested.append(signum))
signal.signal(signal.SIGTERM, lambda signum, frame: _stop_requested.append(signum))

from pipeline.commands import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(stop_requested=_stop_requested))
