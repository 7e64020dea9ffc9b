# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers shared by the benchmarks: a small QMP client, a console tailer
that timestamps guest marker lines with host time, QEMU launching, and
statistics (least-squares rates, histogram percentiles).

Only the Python standard library: bench/run runs under /usr/bin/python3."""

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("SLSVIRT_BUILD_ROOT", os.path.join(ROOT, "build"))
QEMU = os.environ.get("SLSVIRT_QEMU", os.path.join(BUILD, "qemu", "qemu-system-x86_64"))
HOSTD = os.environ.get("SLSVIRT_HOSTD", os.path.join(BUILD, "meson", "hostd", "slsvirtd"))
SLSCTL = os.environ.get("SLSVIRT_SLSCTL", os.path.join(BUILD, "meson", "hostd", "slsctl"))
GUEST_DIR = os.environ.get("SLSVIRT_GUEST_DIR", os.path.join(BUILD, "guest"))

# The machine slsctl runs (hostd/tools/slsctl.cpp, kMachine): stock-QEMU
# sides of a benchmark run the same one.
MACHINE_ARGS = ["-machine", "q35,sata=off,smbus=off,vmport=off",
                "-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off"]


class BenchError(Exception):
    """A part of a benchmark could not produce a number; the message says why."""


def now():
    return time.monotonic()


def log(msg):
    print(f"bench: {msg}", flush=True)


# ---------------------------------------------------------------- QMP


class QmpError(BenchError):
    def __init__(self, command, error):
        self.command = command
        self.error = error
        super().__init__(f"QMP {command}: {error.get('class', '?')}: {error.get('desc', error)}")


class Qmp:
    """One QMP connection. QEMU serves one client at a time on a socket, so
    a benchmark holds the connection only while it needs it."""

    def __init__(self, path, connect_timeout=30.0):
        deadline = now() + connect_timeout
        last = None
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(5.0)
                s.connect(path)
                break
            except OSError as e:
                s.close()
                last = e
                if now() > deadline:
                    raise BenchError(f"QMP socket {path} does not answer: {last}") from e
                # As fine as slsctl's own wait (1 ms): the stock side's
                # "QMP up" must not include a coarse poll ours does not.
                time.sleep(0.001)
        self.sock = s
        self.file = s.makefile("rb")
        self.events = []
        self.next_id = 0
        greeting = self._read(10.0)
        if "QMP" not in greeting:
            raise BenchError(f"QMP socket {path}: unexpected greeting {greeting}")
        self.cmd("qmp_capabilities")

    def _read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            line = self.file.readline()
        except socket.timeout as e:
            raise BenchError(f"QMP: no answer within {timeout:.0f} s") from e
        if not line:
            raise BenchError("QMP: connection closed by QEMU")
        return json.loads(line)

    def cmd(self, name, args=None, timeout=30.0):
        """Runs one command; returns its 'return' value or raises QmpError."""
        self.next_id += 1
        msg = {"execute": name, "id": self.next_id}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = now() + timeout
        while True:
            left = deadline - now()
            if left <= 0:
                raise BenchError(f"QMP {name}: no answer within {timeout:.0f} s")
            reply = self._read(left)
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != self.next_id:
                continue
            if "error" in reply:
                raise QmpError(name, reply["error"])
            return reply.get("return")

    def hmp(self, command_line, timeout=120.0):
        return self.cmd("human-monitor-command", {"command-line": command_line}, timeout)

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- console


DIRTY_RE = re.compile(rb"SLS: dirty work=(\d+) t=(\d+)(?: ticks=(\d+) late=(\d+))?")


class Console:
    """Tails a serial console file in a thread. Every 'SLS: dirty work=' line
    is stored with the host time it appeared (polled every 5 ms): the guest
    clock stops while the VMM pauses the vCPUs, so rates are computed
    against host time."""

    def __init__(self, path):
        self.path = path
        self.points = []  # (host_t, work, guest_ms, ticks, late)
        self.lines = []   # (host_t, line) for every "SLS: " line
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        f = None
        buf = b""
        while not self._stop.is_set():
            if f is None:
                try:
                    f = open(self.path, "rb")
                except OSError:
                    time.sleep(0.01)
                    continue
            data = f.read()
            if data:
                t = now()
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    i = line.find(b"SLS: ")
                    if i < 0:
                        continue
                    line = line[i:].rstrip(b"\r")
                    self.lines.append((t, line.decode(errors="replace")))
                    m = DIRTY_RE.match(line)
                    if m:
                        self.points.append((t, int(m[1]), int(m[2]),
                                            int(m[3] or 0), int(m[4] or 0)))
            else:
                time.sleep(0.005)
        if f:
            f.close()

    def wait_for(self, needle, timeout, alive=None):
        deadline = now() + timeout
        while now() < deadline:
            for t, line in list(self.lines):
                if needle in line:
                    return t
            if alive is not None and not alive():
                raise BenchError(f"QEMU exited before '{needle}' appeared on {self.path}")
            time.sleep(0.02)
        raise BenchError(f"no '{needle}' on {self.path} within {timeout:.0f} s "
                         f"(last lines: {[l for _, l in self.lines[-3:]]})")

    def rate(self, t0, t1):
        """Work units per host second in [t0, t1] (least-squares slope) and
        the dirty ticks skipped ('late') in that window."""
        pts = [p for p in self.points if t0 <= p[0] <= t1]
        if len(pts) < 5:
            raise BenchError(f"only {len(pts)} work reports in a {t1 - t0:.1f} s window")
        n = len(pts)
        mt = sum(p[0] for p in pts) / n
        mw = sum(p[1] for p in pts) / n
        sxx = sum((p[0] - mt) ** 2 for p in pts)
        sxy = sum((p[0] - mt) * (p[1] - mw) for p in pts)
        return {"work_per_s": sxy / sxx, "reports": n,
                "late_ticks": pts[-1][4] - pts[0][4], "ticks": pts[-1][3] - pts[0][3],
                "host_s": pts[-1][0] - pts[0][0], "guest_s": (pts[-1][2] - pts[0][2]) / 1000.0}

    def close(self):
        self._stop.set()
        self._thread.join(2)


# ---------------------------------------------------------------- processes


class Qemu:
    """A QEMU we started ourselves (own session); killed by its pid."""

    def __init__(self, argv, log_path):
        self.argv = argv
        self.log_path = log_path
        with open(log_path, "wb") as lf:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, n=5):
        try:
            with open(self.log_path, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-n:])
        except OSError:
            return ""

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def kill_pidfile(path):
    """SIGKILL the process named in a pidfile we caused to be written, then
    wait until it is gone (at most 5 s)."""
    try:
        pid = int(open(path).read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = now() + 5
    while now() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)


# ---------------------------------------------------------------- statistics


def histogram_diff(h1, h0):
    """Per-bucket difference of two stop-histogram snapshots
    ([{"le-us": N, "count": N}], counts per bucket, not cumulative)."""
    before = {b["le-us"]: b["count"] for b in (h0 or [])}
    return [{"le-us": b["le-us"], "count": b["count"] - before.get(b["le-us"], 0)}
            for b in sorted(h1, key=lambda b: b["le-us"])]


def histogram_quantile(hist, q, max_us=None):
    """q-quantile in microseconds of a per-bucket histogram, interpolated
    linearly inside the bucket that holds it (as Prometheus'
    histogram_quantile). The last bucket's upper bound, if unbounded or
    above max_us, is clipped to max_us."""
    total = sum(b["count"] for b in hist)
    if total <= 0:
        return None
    target = q * total
    cum = 0
    lo = 0.0
    for b in hist:
        hi = float(b["le-us"])
        if max_us is not None and hi > max_us:
            hi = max(max_us, lo)
        if b["count"] > 0 and cum + b["count"] >= target:
            return lo + (hi - lo) * (target - cum) / b["count"]
        cum += b["count"]
        lo = hi
    return lo


def median(values):
    v = sorted(values)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


class BenchBase:
    """A benchmark run: options, a work dir build/bench/<name>-<time>,
    errors collected (reported, never raised), the guest image."""

    def __init__(self, opts, name):
        self.o = opts
        self.errors = []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.work = os.path.abspath(opts.out or os.path.join(BUILD, "bench", f"{name}-{stamp}"))
        os.makedirs(self.work, exist_ok=True)
        self.kernel = os.path.join(GUEST_DIR, "vmlinuz")
        self.initrd = os.path.join(GUEST_DIR, "initramfs.cpio.gz")

    def error(self, part, exc):
        msg = f"{part}: {exc}"
        self.errors.append(msg)
        log(f"FAILED {msg}")

    def finish_run(self, out, t_start, print_table):
        """Writes result.json, prints the table and, as the last line, the
        JSON object; the exit status says whether every part measured."""
        out["errors"] = self.errors
        out["elapsed_s"] = round(now() - t_start, 1)
        with open(os.path.join(self.work, "result.json"), "w") as f:
            json.dump(out, f, indent=1)
        print_table(out)
        print(json.dumps(out, separators=(",", ":"), default=str))
        return 1 if self.errors else 0

    def check_image(self, needs):
        """Brings the guest image up to date (unless SLSVIRT_NO_IMAGE_BUILD=1)
        and checks it holds every path in @needs."""
        if not os.path.exists(QEMU):
            raise BenchError(f"prerequisite missing: QEMU (scripts/setup) at {QEMU}")
        if os.environ.get("SLSVIRT_NO_IMAGE_BUILD", "0") != "1":
            r = subprocess.run([os.path.join(ROOT, "tests", "guest", "build-image"), GUEST_DIR],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise BenchError(f"tests/guest/build-image failed: {r.stderr.strip()[-400:]}")
        for path in (self.kernel, self.initrd):
            if not os.path.exists(path):
                raise BenchError(f"prerequisite missing: guest image {path}")
        listing = subprocess.run(["sh", "-c", f"zcat '{self.initrd}' | cpio -t 2>/dev/null"],
                                 capture_output=True, text=True).stdout
        for need in needs:
            if need not in listing:
                raise BenchError(f"guest image {self.initrd} has no {need}")


def slsctl_run_detached(argv, env):
    """Runs `slsctl run ... --detach` (@argv); returns the QEMU pid it
    printed and a function telling whether that QEMU is still alive."""
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"slsctl run failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-400:]}")
    pid = int(r.stdout.strip().split()[-1])

    def alive():
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False

    return pid, alive


def judge(value, ok):
    """A target's verdict: None when the value was not measured."""
    return None if value is None else bool(ok(value))


def print_targets(out, targets):
    """The targets' verdicts (out["targets"], from judge()) under their texts."""
    print("targets:")
    for k, text in targets.items():
        v = out.get("targets", {}).get(k)
        print(f"  [{'MET' if v else 'not met' if v is False else 'unknown'}] {text}")


def print_footer(out):
    """Errors met on the way and where the raw results are: a table's last lines."""
    for e in out.get("errors", []):
        print(f"  error: {e}")
    print(f"raw results: {out['workdir']}/result.json   elapsed {out.get('elapsed_s')} s")
