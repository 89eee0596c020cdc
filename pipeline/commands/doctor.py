"""``run.py doctor [--config FILE] [--json]``: is this box set up for low latency?

Reads only (files under /proc and /sys, ``chronyc tracking``, ``timedatectl``,
the process table); never changes anything. Each check says what it found and,
when it is not fine, what to change. Exit status: 0 all passed, 1 warnings,
2 a blocking problem (a pinned core that does not exist, no room in /dev/shm).

Two layers, as elsewhere: :func:`read_facts` gathers the raw text of every
source (from ``root``, so tests point it at sample files), the ``parse_*``
functions turn each into values, and :func:`run_checks` is a pure function of
the facts and the config.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
EXIT = {OK: 0, INFO: 0, WARN: 1, FAIL: 2}
SOCKET_BUFFER_MIN = 16 * 2 ** 20      # what we suggest for net.core.rmem_max / wmem_max
NOFILE_MIN = 4096
SYSCTLS = ("net.core.rmem_max", "net.core.wmem_max", "net.core.rmem_default", "net.core.netdev_max_backlog",
           "net.ipv4.tcp_rmem", "kernel.numa_balancing", "kernel.sched_rt_runtime_us")


@dataclass(frozen=True)
class Check:
    name: str
    status: str          # ok, info (could not tell; does not change the exit status), warn, fail
    found: str
    fix: str = ""


# ------------------------------------------------------------------ parsing
def parse_cpu_list(text: str) -> set[int]:
    """``0-3,8,10-11`` -> {0, 1, 2, 3, 8, 10, 11}; flags such as ``domain,managed_irq`` are skipped."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if re.fullmatch(r"\d+-\d+", part):
            low, high = map(int, part.split("-"))
            cpus.update(range(low, high + 1))
        elif part.isdigit():
            cpus.add(int(part))
    return cpus


def parse_cmdline(text: str) -> dict[str, str]:
    """Kernel parameters from /proc/cmdline (``key=value`` or bare ``flag`` -> ""); what follows
    ``--`` belongs to init and is ignored."""
    out = {}
    for word in text.split():
        if word == "--":
            break
        key, _, value = word.partition("=")
        out[key] = value
    return out


def parse_thp(text: str) -> str | None:
    """``always [madvise] never`` -> ``madvise``."""
    match = re.search(r"\[(\w+)\]", text)
    return match.group(1) if match else None


def parse_sysctl(text: str) -> list[int] | None:
    """A /proc/sys value (or ``sysctl`` output line) -> its integers; ``4096 131072 6291456`` -> three."""
    if "=" in text:
        text = text.split("=", 1)[1]
    try:
        return [int(v) for v in text.split()] or None
    except ValueError:
        return None


def parse_ulimit(text: str) -> int | None:
    """``ulimit -n`` output -> the limit; None for ``unlimited``."""
    text = text.strip()
    if text == "unlimited":
        return None
    return int(text)


def parse_chrony_tracking(text: str) -> dict:
    """``chronyc tracking`` -> {synchronized, offset_s, reference, leap}."""
    info = {"synchronized": False, "offset_s": None, "reference": "", "leap": ""}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Reference ID":
            info["reference"] = value
        elif key == "System time":
            match = re.match(r"([\d.]+) seconds (fast|slow)", value)
            if match:
                offset = float(match.group(1))
                info["offset_s"] = offset if match.group(2) == "fast" else -offset
        elif key == "Leap status":
            info["leap"] = value
    info["synchronized"] = bool(info["leap"]) and info["leap"] != "Not synchronised" \
        and not info["reference"].startswith("00000000")
    return info


def parse_timedatectl(text: str) -> dict:
    """``timedatectl show`` (key=value) or ``timedatectl status`` -> {synchronized, ntp}."""
    info = {"synchronized": None, "ntp": None}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("NTPSynchronized="):
            info["synchronized"] = line.split("=", 1)[1] == "yes"
        elif line.startswith("NTP="):
            info["ntp"] = line.split("=", 1)[1] == "yes"
        elif line.startswith("System clock synchronized:"):
            info["synchronized"] = line.split(":", 1)[1].strip() == "yes"
        elif line.startswith("NTP service:"):
            info["ntp"] = line.split(":", 1)[1].strip() == "active"
    return info


def parse_df(text: str) -> int | None:
    """``df -B1 /dev/shm`` -> available bytes."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    return int(fields[3]) if len(fields) >= 4 and fields[3].isdigit() else None


# ------------------------------------------------------------------ reading
@dataclass
class Facts:
    """The raw text of every source (None: not there), read once."""

    cpus: set[int] = field(default_factory=set)
    cmdline: str = ""
    governors: dict[int, str] = field(default_factory=dict)
    idle_states: dict[int, list[tuple[str, bool]]] = field(default_factory=dict)   # cpu -> [(name, disabled)]
    thp: str | None = None
    sysctls: dict[str, str] = field(default_factory=dict)
    nofile: str | None = None            # as ``ulimit -n`` prints it
    chrony: str | None = None            # ``chronyc tracking``
    timedatectl: str | None = None       # ``timedatectl show``
    ptp_devices: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)   # names of running processes
    busy: list[tuple[int, float, str, str]] = field(default_factory=list)   # (pid, cpu %, allowed cores, title)
    shm_free_bytes: int | None = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _command(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def read_facts(root: str = "/") -> Facts:
    """Gather the facts from ``root`` (``/`` on a real box). Under another root the command
    outputs come from files ``commands/chronyc_tracking``, ``commands/timedatectl_show``,
    ``commands/ulimit_n``, ``commands/df_dev_shm``, ``commands/processes`` (one name a line)."""
    base = Path(root)
    real = base == Path("/")
    facts = Facts()
    cpu_dir = base / "sys/devices/system/cpu"
    online = _read(cpu_dir / "online")
    facts.cpus = parse_cpu_list(online) if online else set(os.sched_getaffinity(0) if real else ())
    facts.cmdline = _read(base / "proc/cmdline") or ""
    for cpu in sorted(facts.cpus):
        governor = _read(cpu_dir / f"cpu{cpu}/cpufreq/scaling_governor")
        if governor:
            facts.governors[cpu] = governor.strip()
        states = []
        for state in sorted((cpu_dir / f"cpu{cpu}/cpuidle").glob("state*")):
            name = (_read(state / "name") or state.name).strip()
            states.append((name, (_read(state / "disable") or "0").strip() == "1"))
        if states:
            facts.idle_states[cpu] = states
    thp = _read(base / "sys/kernel/mm/transparent_hugepage/enabled")
    facts.thp = thp.strip() if thp else None
    for name in SYSCTLS:
        value = _read(base / "proc/sys" / name.replace(".", "/"))
        if value is not None:
            facts.sysctls[name] = value.strip()
    facts.ptp_devices = sorted(p.name for p in (base / "dev").glob("ptp*")) if (base / "dev").is_dir() else []
    if real:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        facts.nofile = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
        facts.chrony = _command(["chronyc", "tracking"])
        facts.timedatectl = _command(["timedatectl", "show"])
        try:
            stat = os.statvfs("/dev/shm")
            facts.shm_free_bytes = stat.f_bavail * stat.f_frsize
        except OSError:
            facts.shm_free_bytes = None
        facts.processes, facts.busy = _processes()
    else:
        commands = base / "commands"
        facts.nofile = _read(commands / "ulimit_n")
        facts.chrony = _read(commands / "chronyc_tracking")
        facts.timedatectl = _read(commands / "timedatectl_show")
        df = _read(commands / "df_dev_shm")
        facts.shm_free_bytes = parse_df(df) if df else None
        facts.processes = (_read(commands / "processes") or "").split()
        facts.busy = [parse_busy_line(line) for line in (_read(commands / "busy_processes") or "").splitlines()
                      if line.strip()]
    return facts


BUSY_PERCENT = 20.0


def parse_busy_line(line: str) -> tuple[int, float, str, str]:
    """``4242 97.5 0-1 stress-ng --cpu 2`` -> (pid, cpu %, allowed cores, title)."""
    pid, cpu, cores, title = line.split(None, 3)
    return int(pid), float(cpu), cores, title


def _processes(sample_s: float = 0.3) -> tuple[list[str], list[tuple[int, float, str, str]]]:
    """Names of every process, and those using at least BUSY_PERCENT of a core over ``sample_s``."""
    import time

    import psutil
    procs = []
    for proc in psutil.process_iter(["name"]):
        try:
            proc.cpu_percent(None)
        except psutil.Error:
            continue
        procs.append(proc)
    time.sleep(sample_s)
    names, busy = [], []
    for proc in procs:
        names.append(proc.info["name"] or "")
        try:
            cpu = proc.cpu_percent(None)
            if cpu >= BUSY_PERCENT and proc.pid != os.getpid():
                cores = _cpus(proc.cpu_affinity())
                title = " ".join(proc.cmdline())[:60] or proc.name()
                busy.append((proc.pid, cpu, _cpu_ranges(cores), title))
        except psutil.Error:
            continue
    return names, busy


def _cpu_ranges(cores: str) -> str:
    """``0,1,2,5`` -> ``0-2,5``."""
    values = sorted(int(c) for c in cores.split(",") if c)
    out, start = [], None
    for i, c in enumerate(values):
        if start is None:
            start = c
        if i + 1 == len(values) or values[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(out)


# ------------------------------------------------------------------ checks
def pinned_cores(config, cpus=None) -> dict[str, tuple[int, ...]]:
    """Process name -> the cores the config pins it to (unpinned processes left out). Given the online
    ``cpus`` and a config whose cores are a preference (``supervisor.cores_preferred``), the pins the
    supervisor will actually set: the listed cores that are online."""
    if cpus is not None and config.supervisor.cores_preferred:
        pins = {name: tuple(c for c in cores if c in cpus) for name, cores in pinned_cores(config).items()}
        return {name: cores for name, cores in pins.items() if cores}
    out = {}
    for venue in config.venues:
        if venue.cores:
            out[f"feed {venue.name}"] = venue.cores
    for name, section in (("detector", config.detector), ("health", config.health), ("simulator", config.simulator)):
        if section is not None and getattr(section, "cores", ()):
            out[name] = section.cores
    return out


def board_bytes(config) -> int:
    from pipeline.board import BoardPlan
    return BoardPlan.from_config(config).geometry(config.board.depth).size     # rows, slots and decision ring


def _is_hot(name: str) -> bool:
    """The detector and the feeds are the latency path; health and the simulator are not."""
    return name == "detector" or name.startswith("feed")


@dataclass(frozen=True)
class Layout:
    """Where the doctor would put the hot processes on this box.

    ``system``: the core left to the kernel, interrupts and everything else (the lowest online one);
    ``moves``: process name -> the core it should move to, for hot processes pinned to the system core while
    another core is free; ``isolate``: the hot cores once moved (never the system core), for ``isolcpus``.
    On a 2-core box the feeds share the system core and only the detector's core is isolated: that is the
    layout of the shipped configs. A larger box gives the feeds a core of their own. The detector has the
    first claim on a free core (one is kept for it when the config does not pin it).
    """

    system: int
    moves: dict[str, int]
    isolate: tuple[int, ...]


def layout_advice(cpus: set[int], pins: dict[str, tuple[int, ...]]) -> Layout:
    """The advised layout for ``pins`` (:func:`pinned_cores`) on a box with ``cpus`` online (pure)."""
    system = min(cpus) if cpus else 0
    hot = {name: cores for name, cores in pins.items() if _is_hot(name)}
    taken = {c for cores in pins.values() for c in cores}
    spare = sorted(set(cpus) - taken - {system})
    moves: dict[str, int] = {}
    on_system = [name for name, cores in hot.items() if system in cores]
    if "detector" not in hot and spare:
        spare.pop(0)                  # kept for the detector, which the config leaves unpinned
    # the detector first, to a core of its own; then the feeds, together (they share a core in the shipped layout)
    for group in ([n for n in on_system if n == "detector"], [n for n in on_system if n != "detector"]):
        if group and spare:
            target = spare.pop(0)
            moves.update({name: target for name in group})
    if "detector" in on_system and "detector" not in moves:
        # no core free: the detector swaps with feeds that have one (they share the system's, it gets theirs)
        theirs = sorted({c for name, cores in hot.items() if name != "detector" for c in cores} - {system})
        if theirs:
            moves["detector"] = theirs[0]
            moves.update({name: system for name, cores in hot.items() if name != "detector" and theirs[0] in cores})
    placed = {c for name, cores in hot.items() for c in ((moves[name],) if name in moves else cores)}
    return Layout(system, moves, tuple(sorted(placed - {system})))


def _intruder_fix(plan: Layout, hot: list[int]) -> str:
    """Busy processes off the cores meant to be exclusive; on the system core, which the feeds may share, the
    most one can do is lower their priority."""
    exclusive = [c for c in hot if c != plan.system]
    fix = (f"move them off cores {_cpus(exclusive)} (taskset -cp), or isolate those cores (isolcpus)"
           if exclusive else "")
    if plan.system in hot:
        fix += ("; " if fix else "") + (f"on core {plan.system}, which the feeds share with the system, lower their "
                                        "priority (renice) or stop them")
    return fix


def _system_core_check(plan: Layout, pins: dict[str, tuple[int, ...]]) -> Check:
    on_system = sorted(name for name, cores in pins.items() if _is_hot(name) and plan.system in cores)
    if plan.moves:
        targets = {}
        for name, core in plan.moves.items():
            targets.setdefault(core, []).append(name)
        fix = "; ".join(f"pin {', '.join(sorted(names))} to core {core}" for core, names in sorted(targets.items()))
        return Check("system core", WARN, f"{', '.join(on_system)} on core {plan.system}, the system's", fix
                     + f" (venues.NAME.cores, detector.cores), and keep core {plan.system} for the system")
    if on_system:
        return Check("system core", OK, f"{', '.join(on_system)} share core {plan.system} with the system: no other "
                     "core is free on this box")
    return Check("system core", OK, f"no feed or detector on core {plan.system}, the system's")


def run_checks(facts: Facts, config=None) -> list[Check]:
    checks = []
    params = parse_cmdline(facts.cmdline)
    isolated = parse_cpu_list(params.get("isolcpus", ""))
    nohz = parse_cpu_list(params.get("nohz_full", ""))
    rcu = parse_cpu_list(params.get("rcu_nocbs", ""))
    pins = pinned_cores(config) if config is not None else {}

    # cores exist
    missing = {name: [c for c in cores if c not in facts.cpus] for name, cores in pins.items()}
    missing = {k: v for k, v in missing.items() if v}
    if missing and config is not None and config.supervisor.cores_preferred:
        # cores as a preference: the supervisor pins only to those that exist here (and says so)
        checks.append(Check("pinned cores exist", INFO, "; ".join(f"{k}: {v}" for k, v in missing.items())
                            + f" not online ({_cpus(facts.cpus)}): left out, as supervisor.cores_preferred allows"))
        pins = pinned_cores(config, facts.cpus)
    elif missing:
        checks.append(Check("pinned cores exist", FAIL, "; ".join(f"{k}: {v}" for k, v in missing.items())
                            + f" (online: {_cpus(facts.cpus)})", "pin to cores that exist"))
    elif pins:
        checks.append(Check("pinned cores exist", OK, f"all pinned cores are online ({_cpus(facts.cpus)})"))

    # the system core and the isolation of the hot cores (the detector's and the feeds')
    hot = sorted({c for name, cores in pins.items() if _is_hot(name) for c in cores})
    plan = layout_advice(facts.cpus, pins)
    if pins:
        checks.append(_system_core_check(plan, pins))
    cores = _cpus(plan.isolate) or "N"
    fix = f"boot with isolcpus={cores} nohz_full={cores} rcu_nocbs={cores} (kernel command line) for the hot cores"
    if plan.system in isolated and len(facts.cpus) > 1:
        checks.append(Check("core isolation", WARN, f"isolcpus={_cpus(isolated)} isolates core {plan.system}, the "
                            "system's: interrupts and the kernel's own work have nowhere else to go",
                            fix if plan.isolate else f"leave core {plan.system} out of isolcpus"))
    elif config is not None and not hot:
        checks.append(Check("core isolation", INFO, "the config pins no feed or detector: nothing to isolate"))
    elif config is not None and not plan.isolate:
        checks.append(Check("core isolation", INFO, f"every hot process shares core {plan.system} with the system "
                            f"(a {len(facts.cpus)}-core box): nothing to isolate"))
    elif not isolated and not nohz:
        target = f" (config pins hot processes to {_cpus(hot)})" if hot else ""
        checks.append(Check("core isolation", WARN, f"no isolcpus / nohz_full / rcu_nocbs on the kernel command "
                            f"line{target}", fix))
    else:
        found = f"isolcpus={_cpus(isolated) or '-'} nohz_full={_cpus(nohz) or '-'} rcu_nocbs={_cpus(rcu) or '-'}"
        outside = [c for c in plan.isolate if c not in isolated]
        if outside:
            checks.append(Check("core isolation", WARN, f"{found}; hot cores {_cpus(outside)} are not isolated",
                                fix))
        else:
            checks.append(Check("core isolation", OK, found))

    # no two busy processes on one core
    if pins:
        busy = {name: set(cores) for name, cores in pins.items() if name == "detector" or name.startswith("feed")}
        shared = []
        names = sorted(busy)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                common = busy[a] & busy[b]
                if common and ("detector" in (a, b)):
                    shared.append(f"{a} and {b} on {_cpus(common)}")
        spin = config is not None and config.detector.wait == "spin"
        if shared:
            checks.append(Check("busy processes on separate cores", FAIL if spin else WARN, "; ".join(shared),
                                "give the detector a core of its own" + (" (it spins)" if spin else "")))
        else:
            checks.append(Check("busy processes on separate cores", OK, "the detector has its own core(s)"
                                if "detector" in busy else "no pinned detector"))

    # other busy processes allowed on the hot cores
    if hot:
        intruders = [(pid, cpu, cores, title) for pid, cpu, cores, title in facts.busy
                     if not title.startswith("pipeline:") and parse_cpu_list(cores) & set(hot)]
        if intruders:
            checks.append(Check("other busy processes on hot cores", WARN, "; ".join(
                f"{title} (pid {pid}) {cpu:.0f}% allowed on {cores}" for pid, cpu, cores, title in intruders[:5])
                + (f"; and {len(intruders) - 5} more" if len(intruders) > 5 else ""),
                _intruder_fix(plan, hot)))
        else:
            checks.append(Check("other busy processes on hot cores", OK,
                                f"nothing else above {BUSY_PERCENT:.0f}% of a core may run on {_cpus(hot)}"))

    # frequency governor
    if facts.governors:
        slow = {c: g for c, g in facts.governors.items() if g != "performance"}
        if slow:
            governors = ", ".join(f"cpu{c} {g}" for c, g in sorted(slow.items()))
            checks.append(Check("cpu frequency governor", WARN, governors,
                                "cpupower frequency-set -g performance"))
        else:
            checks.append(Check("cpu frequency governor", OK, "performance on every core"))
    else:
        checks.append(Check("cpu frequency governor", INFO, "no cpufreq in /sys (a VM, or fixed frequency)"))

    # idle states
    if facts.idle_states:
        deep = sorted({name for states in facts.idle_states.values() for name, disabled in states
                       if not disabled and name.upper() not in ("POLL", "C1", "C1E")})
        if deep:
            checks.append(Check("cpu idle states", WARN, "deep idle states enabled: " + ", ".join(deep),
                                "cpupower idle-set -D 2, or boot with intel_idle.max_cstate=1 processor.max_cstate=1"))
        else:
            checks.append(Check("cpu idle states", OK, "only shallow idle states enabled"))
    else:
        checks.append(Check("cpu idle states", INFO, "no cpuidle in /sys"
                            + (f" (idle={params['idle']})" if "idle" in params else "")))

    # irqbalance
    if "irqbalance" in facts.processes:
        checks.append(Check("irqbalance", WARN, "irqbalance is running: it may move interrupts onto the hot cores",
                            "stop irqbalance and pin IRQs (/proc/irq/*/smp_affinity) to the system core"
                            + (f", or set IRQBALANCE_BANNED_CPULIST={_cpus(plan.isolate)}" if plan.isolate else "")))
    else:
        checks.append(Check("irqbalance", OK, "not running"))

    # transparent huge pages
    thp = parse_thp(facts.thp or "")
    if thp is None:
        checks.append(Check("transparent huge pages", INFO, "not available"))
    elif thp == "always":
        checks.append(Check("transparent huge pages", WARN, "always: khugepaged compaction can stall a process",
                            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled"))
    else:
        checks.append(Check("transparent huge pages", OK, thp))

    # socket buffers
    small = []
    found = []
    for name in ("net.core.rmem_max", "net.core.wmem_max"):
        values = parse_sysctl(facts.sysctls.get(name, ""))
        if values is None:
            continue
        found.append(f"{name}={values[0]}")
        if values[0] < SOCKET_BUFFER_MIN:
            small.append(name)
    if not found:
        checks.append(Check("socket buffers", INFO, "net.core sysctls not readable"))
    elif small:
        checks.append(Check("socket buffers", WARN, ", ".join(found), "sysctl -w " + " ".join(
            f"{n}={SOCKET_BUFFER_MIN}" for n in small) + " (and in /etc/sysctl.d/ to keep it)"))
    else:
        checks.append(Check("socket buffers", OK, ", ".join(found)))

    # open files
    if facts.nofile is None:
        checks.append(Check("open files limit", INFO, "unknown"))
    else:
        limit = parse_ulimit(facts.nofile)
        if limit is not None and limit < NOFILE_MIN:
            checks.append(Check("open files limit", WARN, f"ulimit -n {limit}",
                                f"raise nofile to at least {NOFILE_MIN} (ulimit -n, limits.conf or LimitNOFILE=)"))
        else:
            checks.append(Check("open files limit", OK, f"ulimit -n {limit if limit is not None else 'unlimited'}"))

    checks.append(_clock_check(facts))

    # room for the board
    needed = board_bytes(config) if config is not None else 1 << 20
    if facts.shm_free_bytes is None:
        checks.append(Check("/dev/shm free space", FAIL, "/dev/shm is not available",
                            "mount a tmpfs on /dev/shm (the board lives there)"))
    elif facts.shm_free_bytes < needed:
        checks.append(Check("/dev/shm free space", FAIL, f"{_bytes(facts.shm_free_bytes)} free, the board needs "
                            f"{_bytes(needed)}", "free space in /dev/shm or enlarge it (mount -o remount,size=...)"))
    else:
        checks.append(Check("/dev/shm free space", OK, f"{_bytes(facts.shm_free_bytes)} free, the board needs "
                            f"{_bytes(needed)}"))
    return checks


def _clock_check(facts: Facts) -> Check:
    fix = "run chrony (or systemd-timesyncd; PTP with a NIC that supports it for sub-µs offsets)"
    if facts.chrony:
        info = parse_chrony_tracking(facts.chrony)
        offset = f", offset {info['offset_s'] * 1e6:+.1f} µs" if info["offset_s"] is not None else ""
        if info["synchronized"]:
            if info["offset_s"] is not None and abs(info["offset_s"]) > 1e-3:
                return Check("clock synchronisation", WARN, f"chrony synchronised{offset} (over 1 ms)",
                             "check chrony's sources (chronyc sources -v)")
            return Check("clock synchronisation", OK, f"chrony synchronised to {info['reference']}{offset}")
        return Check("clock synchronisation", WARN, f"chrony not synchronised ({info['leap'] or 'no leap status'})",
                     "check chrony's sources (chronyc sources -v)")
    if facts.timedatectl:
        info = parse_timedatectl(facts.timedatectl)
        if info["synchronized"]:
            return Check("clock synchronisation", OK, "system clock synchronised (timedatectl)"
                         + (f"; PTP devices {', '.join(facts.ptp_devices)}" if facts.ptp_devices else ""))
        return Check("clock synchronisation", WARN, "system clock not synchronised (timedatectl)", fix)
    if "ptp4l" in facts.processes or "phc2sys" in facts.processes:
        return Check("clock synchronisation", OK, "PTP (ptp4l/phc2sys) running")
    return Check("clock synchronisation", WARN, "no chrony, timesyncd or PTP status found", fix)


def _cpus(cpus) -> str:
    return ",".join(map(str, sorted(cpus)))


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def exit_status(checks: list[Check]) -> int:
    return max((EXIT[c.status] for c in checks), default=0)


def render(checks: list[Check]) -> str:
    mark = {OK: "ok  ", INFO: "--  ", WARN: "WARN", FAIL: "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"{mark[c.status]} {c.name:34} {c.found}")
        if c.fix and c.status in (WARN, FAIL):
            lines.append(f"     {'':34} fix: {c.fix}")
    status = exit_status(checks)
    counts = {s: sum(1 for c in checks if c.status == s) for s in (WARN, FAIL)}
    lines.append(f"doctor: {counts[FAIL]} blocking, {counts[WARN]} warnings (exit {status})")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run.py doctor",
                                     description="Check that this box is set up for low latency (reads only).")
    parser.add_argument("--config", help="also check what this config pins and needs")
    parser.add_argument("--json", action="store_true", help="one JSON object: checks and exit status")
    parser.add_argument("--root", default="/", help=argparse.SUPPRESS)    # sample trees in tests
    args = parser.parse_args(argv)
    config = None
    if args.config:
        from pipeline.config import load_config
        from pipeline.errors import ConfigError
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            sys.stderr.write(f"run.py doctor: {exc}\n")
            return 2
    checks = run_checks(read_facts(args.root), config)
    status = exit_status(checks)
    if args.json:
        sys.stdout.write(json.dumps({"status": status, "checks": [asdict(c) for c in checks]}, indent=1) + "\n")
    else:
        sys.stdout.write(render(checks) + "\n")
    return status
