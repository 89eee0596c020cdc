"""What an exchange says back is kept short and without our credentials.

OKX answers a malformed login with error 60012 quoting the whole request (api key, passphrase, signature);
that text went into the log and the recording as it came. Server error and notice text is now redacted
and trimmed where the feed session takes it in, so every log line and recording gets the kept version.
"""
from __future__ import annotations

import asyncio

import pytest

from pipeline.feed.session import SERVER_TEXT_CHARS, FeedSession, MemorySink, server_text
from pipeline.recording import read_recording, recording_files
from pipeline.recording.recorder import Recorder
from pipeline.venues import load_venue
from tests.integration.harness import FeedHarness

LOGIN_ECHO = ('{"event":"error","code":"60012","msg":"Invalid request: {\\"op\\": \\"login\\", \\"args\\":[{'
              '\\"apiKey\\":\\"985d5b66-57ce-40fb-b714-afc0b9787083\\",\\"passphrase\\":\\"hunter2hunter2\\",'
              '\\"timestamp\\":\\"1538054050\\",\\"sign\\":\\"7L+zFQ+85FjUaEKj9mZVgb4s8lcjHhTrAM5Q=\\"}]}"}')
SECRETS = ("985d5b66-57ce-40fb-b714-afc0b9787083", "hunter2hunter2", "7L+zFQ+85FjUaEKj9mZVgb4s8lcjHhTrAM5Q=")


def test_credentials_an_exchange_echoes_never_reach_the_journal():
    journal = []
    session = FeedSession(load_venue("okx"), {"BTC-USDT": 0}, 5, 5_000_000_000, MemorySink(5),
                          journal=lambda kind, now, fields: journal.append((kind, fields)))
    conn = session.connection_opened(["BTC-USDT"], 0)
    session.receive(LOGIN_ECHO, 1, conn)
    assert journal, "the error was journaled"
    text = repr(journal)
    assert not any(secret in text for secret in SECRETS), text
    assert "<redacted>" in text


def test_server_text_is_redacted_in_json_and_key_value_forms_and_trimmed():
    assert server_text('apiKey="abc" passphrase=\'p\' token: "t"') == \
        'apiKey="<redacted>" passphrase=\'<redacted>\' token: "<redacted>"'
    long = server_text("x" * 5000)
    assert len(long) < SERVER_TEXT_CHARS + 40 and long.endswith("(4700 more characters)")
    assert server_text("subscription refused: unknown symbol ZZZ-USDT") == \
        "subscription refused: unknown symbol ZZZ-USDT"



@pytest.mark.integration
def test_a_live_recording_keeps_the_frame_that_echoed_a_login_only_with_its_credentials_replaced(tmp_path):
    """The journal took the redacted text; the raw frame went to the recording as received. A frame whose
    server text the session journaled is recorded redacted; every other frame stays byte for byte."""
    async def scenario():
        async with FeedHarness("okx") as h:
            await h.all_live()
            h.feed.recorder = Recorder(str(tmp_path), "okx", {})
            await h.server.drop_connections("close")           # the next connection records
            await h.all_live()
            await h.until(lambda: h.feed.recorder.recorded + len(h.feed.recorder._buffer) > 20, 10, "frames")
            h.server.faults.inject_next.append(LOGIN_ECHO)
            await h.until(lambda: h.stat("messages") > 0 and any(
                "60012" in str(r[0]) for r in h.feed.recorder._buffer) or h.feed.recorder.recorded > 400, 10,
                "the echo recorded")
            await asyncio.sleep(0.3)
            h.feed.recorder.close()
    asyncio.run(asyncio.wait_for(scenario(), 60))
    frames = [r.frame for path in recording_files(tmp_path) for r in read_recording(path)[1] if r.frame is not None]
    text = "".join(f if isinstance(f, str) else f.decode("utf-8", "replace") for f in frames)
    assert "60012" in text and "<redacted>" in text                 # the echo was recorded, redacted
    assert not any(secret in text for secret in SECRETS)
    assert sum("bbo-tbt" in f or "books" in f for f in frames if isinstance(f, str)) >= 20   # market frames too
