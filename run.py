#!/usr/bin/env python3
"""Start the pipeline: ``python run.py --config configs/demo.yaml``."""
import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
