#!/usr/bin/env python3
"""Start the pipeline: ``python run.py --config configs/demo.yaml``."""
import gc
import signal
import sys

# Start-up makes only long-lived objects (modules, classes, the config): no garbage collection until they are
# all made. The command turns it back on once loaded; the pipeline's supervisor freezes them first, so its
# children never scan them (pipeline/supervisor/core.py, Supervisor._spawn).
gc.disable()

# Catch SIGINT/SIGTERM from the very first moment, before the imports below:
# a stop request during start-up must still end in a clean shutdown.
_stop_requested: list = []
signal.signal(signal.SIGINT, lambda signum, frame: _stop_requested.append(signum))
signal.signal(signal.SIGTERM, lambda signum, frame: _stop_requested.append(signum))

from pipeline.commands import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(stop_requested=_stop_requested))
