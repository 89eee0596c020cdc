"""One run, one events file: where a live run's detector writes, and the run id on every record."""
from __future__ import annotations

import datetime
import io
import os
import re

import orjson

from pipeline.config import load_config
from pipeline.output.writers import Outputs, new_run_id, run_output_path
from pipeline.supervisor.core import resolve_run_output
from tests.conftest import demo_config, write_config

RUN_A = "20261207T063000Z-3fa2c1"
RUN_B = "20261207T071500Z-00beef"


def test_run_id_is_the_utc_time_and_six_random_hex_digits():
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    run_id = new_run_id(datetime.datetime(2026, 12, 7, 15, 30, 0, tzinfo=tokyo))
    assert re.fullmatch(r"20261207T063000Z-[0-9a-f]{6}", run_id), run_id
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", new_run_id())
    assert len({new_run_id() for _ in range(20)}) == 20          # two runs in one second still differ


def test_each_run_gets_its_own_file_and_the_configured_name_links_to_the_latest(tmp_path):
    configured = tmp_path / "out" / "opportunities.jsonl"
    first = run_output_path(str(configured), RUN_A)
    assert first == str(tmp_path / "out" / f"opportunities-{RUN_A}.jsonl")
    assert os.path.isfile(first) and os.path.getsize(first) == 0          # created: the link never dangles
    assert os.path.islink(configured) and os.readlink(configured) == f"opportunities-{RUN_A}.jsonl"   # relative
    with open(first, "ab") as f:
        f.write(b'{"event":"open","run_id":"' + RUN_A.encode() + b'"}\n')
    # the detector restarted in the same run: same file, nothing lost
    assert run_output_path(str(configured), RUN_A) == first
    assert configured.read_bytes() == b'{"event":"open","run_id":"' + RUN_A.encode() + b'"}\n'
    # the next run: a new file, the link repointed, the old run's file kept
    second = run_output_path(str(configured), RUN_B)
    assert second == str(tmp_path / "out" / f"opportunities-{RUN_B}.jsonl")
    assert os.readlink(configured) == f"opportunities-{RUN_B}.jsonl" and configured.read_bytes() == b""
    assert os.path.getsize(first) > 0
    assert sorted(os.listdir(tmp_path / "out")) == sorted([          # no temporary link left
        "opportunities.jsonl", f"opportunities-{RUN_A}.jsonl", f"opportunities-{RUN_B}.jsonl"])


def test_a_relative_configured_path_gets_a_relative_link(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = run_output_path("out/o.jsonl", RUN_A)
    assert path == f"out/o-{RUN_A}.jsonl" and os.readlink("out/o.jsonl") == f"o-{RUN_A}.jsonl"
    (tmp_path / "moved").mkdir()
    os.rename(tmp_path / "out", tmp_path / "moved" / "out")             # the pair still works elsewhere
    assert os.path.isfile(tmp_path / "moved" / "out" / "o.jsonl")


def test_a_file_of_earlier_runs_at_the_configured_name_is_renamed_aside_and_kept(tmp_path):
    configured = tmp_path / "opportunities.jsonl"
    old = b'{"event":"open","time_ns":1}\n{"event":"close","time_ns":2}\n'
    configured.write_bytes(old)
    stamp = datetime.datetime(2026, 12, 6, 22, 5, 9, tzinfo=datetime.UTC).timestamp()
    os.utime(configured, (stamp, stamp))
    said = []
    path = run_output_path(str(configured), RUN_A, say=said.append)
    aside = tmp_path / "opportunities-before-20261206T220509Z.jsonl"
    assert aside.read_bytes() == old and os.path.getmtime(aside) == stamp
    assert path == str(tmp_path / f"opportunities-{RUN_A}.jsonl") and os.readlink(configured) == os.path.basename(path)
    assert said == [f"{configured} was a file of earlier runs; renamed to {aside} (each run now writes its own "
                    f"file and {configured} links to the latest)"]
    # another regular file with the same mtime (say, after --append runs): a name of its own, never overwritten
    os.unlink(configured)
    configured.write_bytes(b"more\n")
    os.utime(configured, (stamp, stamp))
    run_output_path(str(configured), RUN_B, say=said.append)
    assert (tmp_path / "opportunities-before-20261206T220509Z-2.jsonl").read_bytes() == b"more\n"
    assert aside.read_bytes() == old and len(said) == 2


def test_append_writes_to_the_configured_file_itself(tmp_path):
    configured = tmp_path / "opportunities.jsonl"
    configured.write_bytes(b"earlier\n")
    assert run_output_path(str(configured), RUN_A, append=True) == str(configured)
    assert not configured.is_symlink() and configured.read_bytes() == b"earlier\n"
    assert os.listdir(tmp_path) == ["opportunities.jsonl"]
    assert run_output_path("", RUN_A) == ""                                 # no output configured: none


class CollectingSink:
    """Takes what the detector would POST."""

    def __init__(self):
        self.records = []

    def submit(self, record):
        self.records.append(dict(record))
        return True

    def close(self, timeout_s):
        pass


def test_outputs_stamp_the_run_id_on_every_record_the_file_the_line_and_the_sink_see(tmp_path):
    stdout, sink = io.StringIO(), CollectingSink()
    outputs = Outputs(str(tmp_path / "o.jsonl"), True, verbose=True, sink=sink, stdout=stdout, run_id=RUN_A)
    record = {"event": "open", "id": 1, "instrument": "BTC/USDT", "buy_exchange": "binance",
              "sell_exchange": "bybit", "base_currency": "BTC", "quote_currency": "USDT", "buy_price": 100.0,
              "sell_price": 100.5, "qty_base": 0.5, "gross_bps": 50.0, "net_bps": 30.0, "profit_quote": 0.15}
    outputs.write(record)
    outputs.write({"event": "shadow", "id": 1, "instrument": "BTC/USDT", "buy_exchange": "binance",
                   "sell_exchange": "bybit", "net_bps": 30.0, "shadow_fills": []})
    outputs.close()
    written = [orjson.loads(line) for line in (tmp_path / "o.jsonl").read_bytes().splitlines()]
    assert [r["run_id"] for r in written] == [RUN_A, RUN_A]
    assert sink.records[0]["run_id"] == RUN_A and record["run_id"] == RUN_A
    assert stdout.getvalue().startswith("OPEN   BTC/USDT")
    # without a run id (a caller not updated yet), records are written as they come
    plain = Outputs(str(tmp_path / "p.jsonl"), False)
    plain.write({"event": "open"})
    plain.close()
    assert orjson.loads((tmp_path / "p.jsonl").read_bytes()) == {"event": "open"}


def test_the_supervisor_resolves_the_output_once_for_every_child(tmp_path):
    configured = tmp_path / "opps.jsonl"
    config = load_config(write_config(tmp_path / "c.yaml", demo_config("pipeline-unused", configured)))
    assert config.run_id == ""
    said = []
    resolved = resolve_run_output(config, say=said.append, run_id=RUN_A)
    assert resolved.run_id == RUN_A and resolved.detector.output == str(tmp_path / f"opps-{RUN_A}.jsonl")
    assert os.readlink(configured) == f"opps-{RUN_A}.jsonl" and said == []
    assert resolved.detector.threshold_bps == config.detector.threshold_bps and resolved.venues == config.venues
    appended = resolve_run_output(config, append=True)
    # --append writes where the configured name leads: through our own latest-run link, that run's file
    assert appended.detector.output == resolved.detector.output
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", appended.run_id)


def test_two_box_demo_counts_the_cross_box_opens_of_the_newest_run_only(tmp_path):
    from pathlib import Path

    from pipeline.commands.two_box_demo import cross_box_opens

    def opened(run_id, buy, sell="okx", kind="open"):
        return orjson.dumps({"event": kind, "run_id": run_id, "buy_exchange": buy, "sell_exchange": sell}) + b"\n"

    configured = tmp_path / "central.jsonl"
    # an older version's file: no run ids, one cross-box open
    configured.write_bytes(opened(None, "binance@tokyo"))
    run_output_path(str(configured), RUN_A)
    with open(configured, "ab") as f:           # through the link: run A's file
        f.write(opened(RUN_A, "binance@tokyo") + opened(RUN_A, "okx", "binance@tokyo") + opened(RUN_A, "htx")
                + opened(RUN_A, "binance@tokyo", kind="close") + b"not json\n")
    assert cross_box_opens(Path(configured)) == 2
    run_output_path(str(configured), RUN_B)
    assert cross_box_opens(Path(configured)) == 0                    # the new run has found nothing yet
    with open(configured, "ab") as f:
        f.write(opened(RUN_B, "binance@tokyo"))
    assert cross_box_opens(Path(configured)) == 1
    assert cross_box_opens(Path(tmp_path / f"central-{RUN_A}.jsonl")) == 2
    # one file every run appended to (--append): the newest run's records only
    appended = tmp_path / "appended.jsonl"
    appended.write_bytes(opened(RUN_A, "binance@tokyo") * 3 + opened(RUN_B, "kraken@frankfurt", "htx"))
    assert cross_box_opens(appended) == 1 and cross_box_opens(appended, RUN_A) == 3
    assert cross_box_opens(tmp_path / "missing.jsonl") == 0
