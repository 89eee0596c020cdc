"""Recordings: every frame a feed receives, exactly as received, with the session's events.

:mod:`~pipeline.recording.format` (the documented file format and its reader),
:mod:`~pipeline.recording.recorder` (the feed's non-blocking recorder),
:mod:`~pipeline.commands.recording` (``run.py recording info|import``). Replay is
:mod:`pipeline.commands.replay`.
"""
from pipeline.recording.format import Damage, Record, RecordingError, read_recording, recording_files

__all__ = ["Damage", "Record", "RecordingError", "read_recording", "recording_files"]
