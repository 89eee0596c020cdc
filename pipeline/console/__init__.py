"""The live console (``run.py top`` and ``run.py --config FILE --console``).

Three layers, in the shape of the rest of the house:

* :mod:`.snapshot` reads the board read-only (seqlock reads, process slots,
  histograms) into a frozen :class:`~pipeline.console.snapshot.Snapshot`;
* :mod:`.events` follows the detector's JSON-lines file into the set of open
  opportunities and the last closes (it needs nothing from the detector process);
* :mod:`.render` is a pure function of (snapshot, events, now) to text;
  :mod:`.app` is the thin terminal shell around them: keys, refresh, screen.
"""
