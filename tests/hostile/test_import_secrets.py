"""Captures we import hold what the client sent, logins included, and what exchanges echoed back: no
credential may reach a recording, a log line or the terminal; and the import never reads or writes through
a symbolic link.

Each capture below plants secrets where real ones sit: an OKX ``login`` (and OKX 60012 echoing it in its
``msg``), a Coinbase signed subscribe, a Bybit ``auth`` (positional key and signature), Kraken's
``subscriptionStatus`` repeating the token, a Binance ``listenKey`` in the URL and a ``?token=`` query.
After the import, the recording file's bytes (decompressed), what ``recording info`` prints and every
stdout/stderr are searched for each planted string.
"""
from __future__ import annotations

import os

import orjson

from pipeline.recording.format import EVENT, read_recording, recording_files
from tests.conftest import REPO, run_cli

SECRETS = {
    "okx_key": "OKXKEY-6f1d2c", "okx_pass": "OKXPASS-93ab", "okx_sign": "OKXSIGN+q8Zr/Tw==",
    "cb_key": "CBKEY-77e0a1", "cb_pass": "CBPASS-5d1f", "cb_sig": "CBSIG/kR2x+Yq=",
    "bybit_key": "BYBITKEY-aa01", "bybit_sig": "BYBITSIG-9c9c9c",
    "kraken_token": "KRAKENTOKEN-0b1c2d",
    "listen_key": "pqCLICQ28wsfTDxTpSxLbqSm1DkKfLKqg2pPANmdbcefPVtv1bwVyHz5Lfcd",
    "url_token": "URLTOKEN-4e4e",
}


def okx_capture(path):
    login = orjson.dumps({"op": "login", "args": [{"apiKey": SECRETS["okx_key"], "passphrase": SECRETS["okx_pass"],
                                                   "timestamp": "1700000000", "sign": SECRETS["okx_sign"]}]}).decode()
    echo = orjson.dumps({"event": "error", "code": "60012", "msg": f"Invalid request: {login}",
                         "connId": "a4d3ae55"}).decode()
    path.write_text(
        f"wss://ws.okx.com:8443/ws/v5/private?token={SECRETS['url_token']} <-> 1700000000.0\n"
        f"wss://ws.okx.com:8443/ws/v5/private <- 1700000000.1: {login}\n"
        f"1700000000.2: {echo}\n"
        '1700000000.3: {"event":"login","code":"0","msg":"","connId":"a4d3ae55"}\n'
        'wss://ws.okx.com:8443/ws/v5/private <- 1700000000.4: {"op":"subscribe","args":[{"channel":"tickers",'
        '"instId":"BTC-USDT"}]}\n'
        '1700000000.5: {"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT",'
        '"instId":"BTC-USDT","last":"100.1","askPx":"100.2","askSz":"1","bidPx":"100.0","bidSz":"2",'
        '"ts":"1700000000500"}]}\n')
    return login, echo


def other_captures(tmp_path):
    coinbase = tmp_path / "COINBASE.ws.1.0"
    coinbase.write_text(
        "wss://ws-feed.exchange.coinbase.com <-> 1700000000.0\n"
        "wss://ws-feed.exchange.coinbase.com <- 1700000000.1: " + orjson.dumps(
            {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full"], "signature": SECRETS["cb_sig"],
             "key": SECRETS["cb_key"], "passphrase": SECRETS["cb_pass"], "timestamp": "1700000000"}).decode() + "\n"
        '1700000000.2: {"type":"subscriptions","channels":[{"name":"full","product_ids":["BTC-USD"]}]}\n')
    bybit = tmp_path / "BYBIT.ws.2.0"
    bybit.write_text(
        "wss://stream.bybit.com/v5/private <-> 1700000000.0\n"
        "wss://stream.bybit.com/v5/private <- 1700000000.1: " + orjson.dumps(
            {"op": "auth", "args": [SECRETS["bybit_key"], 1700000001000, SECRETS["bybit_sig"]]}).decode() + "\n"
        '1700000000.2: {"success":true,"ret_msg":"","op":"auth","conn_id":"cejreaspqfh3sjdnldmg-p"}\n')
    kraken = tmp_path / "KRAKEN.ws.3.0"
    kraken.write_text(
        "wss://ws-auth.kraken.com <-> 1700000000.0\n"
        "wss://ws-auth.kraken.com <- 1700000000.1: " + orjson.dumps(
            {"event": "subscribe", "subscription": {"name": "ownTrades", "token": SECRETS["kraken_token"]}}).decode()
        + "\n1700000000.2: " + orjson.dumps(
            {"channelName": "ownTrades", "event": "subscriptionStatus", "status": "subscribed",
             "subscription": {"name": "ownTrades", "token": SECRETS["kraken_token"]}}).decode() + "\n")
    binance = tmp_path / "BINANCE.ws.4.0"
    binance.write_text(
        f"wss://stream.binance.com:9443/ws/{SECRETS['listen_key']} <-> 1700000000.0\n"
        '1700000000.2: {"e":"outboundAccountPosition","E":1700000000200,"u":1700000000199,"B":[]}\n')
    return [coinbase, bybit, kraken, binance]


def leaked(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def recording_text(out_dir) -> str:
    """Every record of every recording in ``out_dir``, decompressed, as text."""
    parts = []
    for path in recording_files(str(out_dir)):
        header, records, damage = read_recording(path)
        assert damage is None, damage
        parts.append(orjson.dumps(header).decode())
        for record in records:
            payload = record.event if record.kind == EVENT else record.frame
            parts.append(payload if isinstance(payload, str) else
                         orjson.dumps(payload).decode() if isinstance(payload, dict) else repr(payload))
    return "\n".join(parts)


def test_planted_credentials_reach_no_recording_log_or_terminal(tmp_path):
    okx = tmp_path / "OKX.ws.9.0"
    okx_capture(okx)
    captures = [okx, *other_captures(tmp_path)]
    raw = "".join(p.read_text() for p in captures)
    assert len(leaked(raw)) == len(SECRETS)                  # the captures do hold every secret
    out = tmp_path / "rec"
    result = run_cli("recording", "import", "--format", "cryptofeed", "--out", str(out), *map(str, captures))
    assert result.returncode == 0, result.stderr
    assert leaked(result.stdout + result.stderr) == []
    assert result.stdout.count(" -> ") == len(captures)
    # said once per capture that held credentials, with the count of records changed
    assert f"{okx}: credentials replaced by <redacted> in 3 record(s)" in result.stderr
    assert result.stderr.count("credentials replaced by <redacted>") == len(captures)

    text = recording_text(out)
    assert leaked(text) == []
    for path in recording_files(str(out)):                   # nor in the compressed bytes as stored
        assert leaked(open(path, "rb").read().decode("latin-1")) == []
    info = run_cli("recording", "info", "--json", str(out))
    assert info.returncode == 0 and leaked(info.stdout + info.stderr) == []

    # the frames keep their shape: same JSON keys, values replaced; market data untouched
    records = {r.recv_ns: r for p in recording_files(str(out)) if "okx" in os.path.basename(p)
               for r in read_recording(p)[1]}
    sent = records[1_700_000_000_100_000_000].event
    login = orjson.loads(sent["frame"])
    assert login == {"op": "login", "args": [{"apiKey": "<redacted>", "passphrase": "<redacted>",
                                              "timestamp": "<redacted>", "sign": "<redacted>"}]}
    echo = orjson.loads(records[1_700_000_000_200_000_000].frame)
    assert echo["code"] == "60012" and '"apiKey":"<redacted>"' in echo["msg"]
    assert records[1_700_000_000_000_000_000].event["url"].endswith("?token=<redacted>")
    ticker = records[1_700_000_000_500_000_000].frame
    assert '"bidPx":"100.0"' in ticker
    assert "BTC-USDT" in info.stdout


def test_real_captures_lose_nothing_to_redaction(tmp_path):
    """The 2021 public captures hold no credentials: none of their 16 000 frames is changed."""
    captures = sorted((REPO / "tests" / "fixtures" / "cryptofeed-2021").glob("*.ws.*"))
    result = run_cli("recording", "import", "--format", "cryptofeed", "--out", str(tmp_path / "rec"),
                     *map(str, captures))
    assert result.returncode == 0, result.stderr
    assert "redacted" not in result.stderr


def test_a_symlinked_capture_is_refused_naming_it(tmp_path):
    secret = tmp_path / "elsewhere.txt"
    secret.write_text('1700000000.0: {"private": "not a capture"}\n')
    link = tmp_path / "OKX.ws.1.0"
    link.symlink_to(secret)
    out = tmp_path / "rec"
    result = run_cli("recording", "import", "--format", "cryptofeed", "--out", str(out), str(link))
    assert result.returncode == 2
    assert f"{link} is a symbolic link: refusing to follow it" in result.stderr
    assert "Traceback" not in result.stderr and "not a capture" not in result.stderr
    assert list(out.iterdir()) == []                         # nothing written for it
    result = run_cli("recording", "import", "--format", "jsonl", "--exchange", "okx", "--out", str(out), str(link))
    assert result.returncode == 2 and f"{link} is a symbolic link" in result.stderr


def test_a_fifo_is_refused_rather_than_waited_on(tmp_path):
    fifo = tmp_path / "OKX.ws.1.0"
    os.mkfifo(fifo)
    result = run_cli("recording", "import", "--format", "cryptofeed", "--out", str(tmp_path / "rec"), str(fifo),
                     timeout=20)
    assert result.returncode == 2 and f"{fifo} is not a regular file" in result.stderr


def test_a_symlinked_output_is_refused_naming_it(tmp_path):
    okx = tmp_path / "OKX.ws.9.0"
    okx_capture(okx)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    out = tmp_path / "rec"
    out.mkdir()
    planted = out / "okx-import-OKX.ws.9.0.rec"
    planted.symlink_to(victim)
    result = run_cli("recording", "import", "--format", "cryptofeed", "--out", str(out), str(okx))
    assert result.returncode == 2
    assert f"{planted} is a symbolic link: refusing to write through it" in result.stderr
    assert victim.read_text() == "keep me\n" and planted.is_symlink()

    linked_dir = tmp_path / "rec-link"
    linked_dir.symlink_to(tmp_path / "somewhere", target_is_directory=True)
    result = run_cli("recording", "import", "--format", "cryptofeed", "--out", str(linked_dir), str(okx))
    assert result.returncode == 2
    assert f"--out {linked_dir} is a symbolic link: refusing to write through it" in result.stderr
    assert not (tmp_path / "somewhere").exists()


def test_a_line_without_end_is_damage_not_memory(tmp_path, monkeypatch):
    from pipeline.commands import recording as cli
    monkeypatch.setattr(cli, "MAX_LINE_BYTES", 1024)
    capture = tmp_path / "OKX.ws.1.0"
    capture.write_text('1700000000.0: {"event":"subscribe"}\n' + "1700000000.1: " + "x" * 5000)
    out = tmp_path / "rec"
    out.mkdir()
    try:
        cli.import_cryptofeed(str(capture), str(out))
    except ValueError as exc:
        assert str(exc) == f"{capture}: the line at byte 36 is longer than 1024 bytes: not a capture, or damaged"
    else:
        raise AssertionError("a 5000-byte line passed a 1024-byte limit")
    assert list(out.iterdir()) == []                         # the half-written recording is removed
