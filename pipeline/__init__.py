"""Low-latency crypto market-data pipeline and cross-exchange arbitrage detector."""
import os as _os

__version__ = "0.1.0"

# The pipeline does no linear algebra: numpy is here for the board's fixed-layout arrays. Its BLAS would
# start a thread per core when numpy is imported, each spinning a moment before it sleeps: about 0.1 s of
# CPU at every start of a process on a 2-core box, and idle threads beside a pinned process. One thread,
# unless the user's environment asks for more; set before any module here imports numpy.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
