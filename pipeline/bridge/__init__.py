"""Join boxes over NATS: publish this box's rows, mirror other boxes' rows into the local board.

* :mod:`pipeline.bridge.codec`: the wire format (subjects, row messages, heartbeats); pure.
* :mod:`pipeline.bridge.rows`: which local row mirrors which remote one, box liveness, clocks; pure.
* :mod:`pipeline.bridge.process`: the ``pipeline: bridge`` child process (asyncio + nats-py).
* :mod:`pipeline.commands.two_box_demo`: two boxes and a NATS server on one machine (``run.py two-box-demo``).
"""
