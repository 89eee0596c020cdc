"""doctor: each source parsed from sample files, the checks on two sample machines
(tests/data/doctor/tuned and untuned), and a real run on this machine."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from pipeline.commands import doctor
from pipeline.config import (
    BoardConfig,
    Config,
    DetectorConfig,
    HealthConfig,
    SupervisorConfig,
    VenueConfig,
    parse_config,
)
from pipeline.errors import ConfigError
from tests.conftest import run_cli

DATA = Path(__file__).resolve().parents[1] / "data" / "doctor"
TUNED, UNTUNED = DATA / "tuned", DATA / "untuned"


def config(detector_cores=(2,), feed_cores=(3,), wait="doorbell"):
    return Config(board=BoardConfig(name="b", depth=5),
                  venues=(VenueConfig("binance", ("BTC/USDT", "ETH/USDT"), cores=feed_cores),
                          VenueConfig("bybit", ("BTC/USDT",), cores=feed_cores)),
                  detector=DetectorConfig(cores=detector_cores, wait=wait), health=HealthConfig(cores=(0,)),
                  supervisor=SupervisorConfig())


def test_parse_cmdline_stops_at_init_arguments():
    params = doctor.parse_cmdline((TUNED / "proc/cmdline").read_text())
    assert params["isolcpus"] == "managed_irq,domain,2-3" and params["nohz_full"] == "2-3"
    assert "splash" not in params and params["ro"] == ""
    assert doctor.parse_cpu_list(params["isolcpus"]) == {2, 3}
    assert doctor.parse_cpu_list("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}


def test_parse_thp_sysctl_ulimit_df():
    assert doctor.parse_thp((TUNED / "sys/kernel/mm/transparent_hugepage/enabled").read_text()) == "madvise"
    assert doctor.parse_thp((UNTUNED / "sys/kernel/mm/transparent_hugepage/enabled").read_text()) == "always"
    assert doctor.parse_sysctl((TUNED / "proc/sys/net/core/rmem_max").read_text()) == [33554432]
    assert doctor.parse_sysctl((DATA / "sysctl_tcp_rmem.txt").read_text()) == [4096, 131072, 6291456]
    assert doctor.parse_ulimit((UNTUNED / "commands/ulimit_n").read_text()) == 1024
    assert doctor.parse_ulimit((DATA / "ulimit_unlimited.txt").read_text()) is None
    assert doctor.parse_df((TUNED / "commands/df_dev_shm").read_text()) == 8589836288
    assert doctor.parse_df((UNTUNED / "commands/df_dev_shm").read_text()) == 8192


def test_parse_clock_sources():
    synced = doctor.parse_chrony_tracking((TUNED / "commands/chronyc_tracking").read_text())
    assert synced == {"synchronized": True, "offset_s": -0.000012345, "reference": "A9FEA97B (169.254.169.123)",
                      "leap": "Normal"}
    unsynced = doctor.parse_chrony_tracking((DATA / "chronyc_tracking_unsynced.txt").read_text())
    assert unsynced["synchronized"] is False and unsynced["leap"] == "Not synchronised"
    assert doctor.parse_timedatectl((UNTUNED / "commands/timedatectl_show").read_text()) == \
        {"synchronized": False, "ntp": True}
    assert doctor.parse_timedatectl((DATA / "timedatectl_status.txt").read_text()) == \
        {"synchronized": True, "ntp": True}


def test_read_facts_from_a_sample_tree():
    facts = doctor.read_facts(str(UNTUNED))
    assert facts.cpus == {0, 1}
    assert facts.governors == {0: "powersave", 1: "performance"}
    assert facts.idle_states == {0: [("POLL", False), ("C6", False)], 1: [("POLL", False), ("C6", False)]}
    assert facts.sysctls["net.core.rmem_max"] == "212992" and facts.shm_free_bytes == 8192
    assert "irqbalance" in facts.processes and facts.chrony is None
    assert facts.busy == [(4242, 97.5, "0-1", "stress-ng --cpu 2"), (4243, 40.0, "0", "sshd: backup")]


def statuses(checks):
    return {c.name: c.status for c in checks}


def test_a_tuned_box_passes():
    checks = doctor.run_checks(doctor.read_facts(str(TUNED)), config())
    assert statuses(checks) == {
        "pinned cores exist": "ok", "system core": "ok", "core isolation": "ok",
        "busy processes on separate cores": "ok", "other busy processes on hot cores": "ok",
        "cpu frequency governor": "ok", "cpu idle states": "ok", "irqbalance": "ok", "transparent huge pages": "ok",
        "socket buffers": "ok", "open files limit": "ok", "clock synchronisation": "ok", "/dev/shm free space": "ok"}
    assert doctor.exit_status(checks) == 0
    clock = next(c for c in checks if c.name == "clock synchronisation")
    assert clock.found == "chrony synchronised to A9FEA97B (169.254.169.123), offset -12.3 µs"


def test_an_untuned_box_warns_with_fixes_and_blocks_on_shm_and_missing_cores():
    facts = doctor.read_facts(str(UNTUNED))
    checks = doctor.run_checks(facts, config(detector_cores=(1,), feed_cores=(1, 5), wait="spin"))
    assert statuses(checks) == {
        "pinned cores exist": "fail", "system core": "ok", "core isolation": "warn",
        "busy processes on separate cores": "fail", "other busy processes on hot cores": "warn",
        "cpu frequency governor": "warn", "cpu idle states": "warn", "irqbalance": "warn",
        "transparent huge pages": "warn", "socket buffers": "warn", "open files limit": "warn",
        "clock synchronisation": "warn",
        "/dev/shm free space": "fail"}
    assert doctor.exit_status(checks) == 2
    by_name = {c.name: c for c in checks}
    assert by_name["pinned cores exist"].found == "feed binance: [5]; feed bybit: [5] (online: 0,1)"
    assert by_name["cpu frequency governor"].found == "cpu0 powersave"
    assert by_name["cpu frequency governor"].fix == "cpupower frequency-set -g performance"
    assert by_name["socket buffers"].fix.startswith("sysctl -w net.core.rmem_max=16777216 net.core.wmem_max=16777216")
    assert by_name["busy processes on separate cores"].found == \
        "detector and feed binance on 1; detector and feed bybit on 1"
    assert all(c.fix for c in checks if c.status in ("warn", "fail"))
    # without the config only the box is judged: warnings, and the board's default size still fits nowhere
    assert doctor.exit_status(doctor.run_checks(facts)) == 2
    text = doctor.render(checks)
    assert text.splitlines()[-1] == "doctor: 3 blocking, 9 warnings (exit 2)"
    assert by_name["other busy processes on hot cores"].found == "stress-ng --cpu 2 (pid 4242) 98% allowed on 0-1"


def test_doctor_on_this_machine(tmp_path):
    result = run_cli("doctor", "--json", timeout=60)
    assert result.returncode in (0, 1, 2), result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == result.returncode
    names = [c["name"] for c in report["checks"]]
    assert {"core isolation", "transparent huge pages", "socket buffers", "open files limit",
            "clock synchronisation", "/dev/shm free space"} <= set(names)
    for check in report["checks"]:
        assert check["status"] in ("ok", "info", "warn", "fail") and check["found"]
        if check["status"] in ("warn", "fail"):
            assert check["fix"]
    pinned = tmp_path / "pinned.yaml"        # core 0 exists on every machine
    pinned.write_text("venues: {binance: {instruments: [BTC/USDT], url: 'wss://x', cores: [0]}}\n"
                      "detector: {cores: [0]}\n")
    text = run_cli("doctor", "--config", str(pinned), timeout=60)
    assert text.returncode in (0, 1, 2) and text.stdout.splitlines()[-1].startswith("doctor: ")
    assert "pinned cores exist" in text.stdout


def test_doctor_config_error_exits_2(tmp_path):
    result = run_cli("doctor", "--config", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr


def layout_statuses(checks):
    return {c.name: c.status for c in checks
            if c.name in ("pinned cores exist", "system core", "core isolation", "busy processes on separate cores")}


def test_a_2_core_box_keeps_core_0_for_the_system_and_the_feeds_and_isolates_the_detector_core():
    facts = doctor.Facts(cpus={0, 1})
    checks = {c.name: c for c in doctor.run_checks(facts, config(detector_cores=(1,), feed_cores=(0,)))}
    assert (checks["system core"].status, checks["system core"].found) == (
        "ok", "feed binance, feed bybit share core 0 with the system: no other core is free on this box")
    assert checks["core isolation"].status == "warn"
    assert checks["core isolation"].fix == ("boot with isolcpus=1 nohz_full=1 rcu_nocbs=1 (kernel command line) "
                                            "for the hot cores")
    tuned = doctor.Facts(cpus={0, 1}, cmdline="isolcpus=1 nohz_full=1 rcu_nocbs=1")
    assert layout_statuses(doctor.run_checks(tuned, config(detector_cores=(1,), feed_cores=(0,)))) == {
        "pinned cores exist": "ok", "system core": "ok", "core isolation": "ok",
        "busy processes on separate cores": "ok"}
    everything = doctor.Facts(cpus={0, 1}, cmdline="isolcpus=0-1 nohz_full=0-1")
    isolation = next(c for c in doctor.run_checks(everything, config(detector_cores=(1,), feed_cores=(0,)))
                     if c.name == "core isolation")
    assert (isolation.status, isolation.found) == (
        "warn", ("isolcpus=0,1 isolates core 0, the system's: interrupts and the kernel's own work have nowhere "
                 "else to go"))


def test_a_larger_box_moves_the_feeds_off_the_system_core():
    facts = doctor.Facts(cpus={0, 1, 2, 3})
    checks = {c.name: c for c in doctor.run_checks(facts, config(detector_cores=(1,), feed_cores=(0,)))}
    assert (checks["system core"].status, checks["system core"].found, checks["system core"].fix) == (
        "warn", "feed binance, feed bybit on core 0, the system's",
        "pin feed binance, feed bybit to core 2 (venues.NAME.cores, detector.cores), and keep core 0 for the system")
    assert checks["core isolation"].fix.startswith("boot with isolcpus=1,2 nohz_full=1,2 rcu_nocbs=1,2 ")
    assert doctor.layout_advice({0, 1, 2, 3}, {"detector": (0,), "feed binance": (0,)}) == doctor.Layout(
        system=0, moves={"detector": 1, "feed binance": 2}, isolate=(1, 2))
    # an unpinned detector keeps the first free core: on 2 cores the feeds stay with the system
    assert doctor.layout_advice({0, 1}, {"feed binance": (0,), "health": (0,)}) == doctor.Layout(0, {}, ())
    assert doctor.layout_advice({0, 1, 2}, {"feed binance": (0,)}) == doctor.Layout(0, {"feed binance": 2}, (2,))
    # the detector on the system core of a full box trades places with the feeds
    assert doctor.layout_advice({0, 1}, {"detector": (0,), "feed binance": (1,), "feed okx": (1,)}) == doctor.Layout(
        0, {"detector": 1, "feed binance": 0, "feed okx": 0}, (1,))


SHIPPED = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _moved(config, moves):
    """``config`` with the doctor's moves applied (its pins as the doctor would set them)."""
    venues = tuple(dataclasses.replace(v, cores=(moves[f"feed {v.name}"],)) if f"feed {v.name}" in moves else v
                   for v in config.venues)
    detector = config.detector
    if "detector" in moves:
        detector = dataclasses.replace(detector, cores=(moves["detector"],))
    return dataclasses.replace(config, venues=venues, detector=detector)


@pytest.mark.parametrize("cores", [1, 2, 4, 8])
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_doctors_advice_and_each_shipped_config_agree(path, cores):
    """On the 2-core box the shipped configs are laid out for, the doctor asks for no other pins; on any box its
    advice leaves the system a core, and once followed (pins and isolcpus) the doctor finds nothing to change."""
    raw = yaml.safe_load(path.read_text())
    for venue in (raw.get("venues") or {}).values():
        venue.pop("transport", None)            # the layout does not depend on it (picows may not be installed)
    try:
        config = parse_config(raw, source=str(path), available_cores=frozenset(range(cores)))
    except ConfigError as exc:
        assert cores == 1 and "does not exist on this machine" in str(exc), str(exc)
        pytest.skip(f"{path.name} pins core 1: it is laid out for 2 cores or more")
    cpus = set(range(cores))
    plan = doctor.layout_advice(cpus, doctor.pinned_cores(config, cpus))
    assert plan.system == 0 and 0 not in plan.isolate and (cores == 1 or set(plan.isolate) < cpus)
    if cores <= 2:
        assert plan.moves == {}, f"{path.name} pins hot processes where the doctor would not"
    first = {c.name: c for c in doctor.run_checks(doctor.Facts(cpus=cpus), config)}
    if plan.isolate:
        listed = doctor._cpus(plan.isolate)
        assert first["core isolation"].fix.startswith(f"boot with isolcpus={listed} nohz_full={listed} ")
    followed = _moved(config, plan.moves)
    cmdline = f"isolcpus={doctor._cpus(plan.isolate)} nohz_full={doctor._cpus(plan.isolate)}" if plan.isolate else ""
    after = doctor.run_checks(doctor.Facts(cpus=cpus, cmdline=cmdline), followed)
    assert set(layout_statuses(after).values()) <= {"ok", "info"}, layout_statuses(after)


def test_the_board_size_doctor_checks_is_the_size_of_the_board_the_supervisor_creates(board_name):
    """/dev/shm must hold the whole board: rows, slots and the decision ring (the bulk of it by default)."""
    import os

    from pipeline.board import BoardPlan
    from pipeline.config import load_config
    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"))
    board = BoardPlan.from_config(cfg).create_board(board_name, cfg.board.depth)
    try:
        assert doctor.board_bytes(cfg) == os.stat(f"/dev/shm/{board_name}").st_size
        assert board.geometry.decision_entries == cfg.detector.decision_ring > 0
    finally:
        board.destroy()
