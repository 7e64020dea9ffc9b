# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/run libvirt: what a libvirt user does to save a running domain and
get it back. Stock: `virsh save FILE` + `virsh restore FILE`. slsvirt:
`virsh sls-checkpoint --wait` on the running domain, then (after the QEMU is
killed with SIGKILL) `virsh sls-restore`. Same guest, same XML
(libvirt/example-domain.xml; the stock domain is it without the slsvirt
element: the engine blocks migration, so `virsh save` cannot run on a
domain slsvirt checkpoints), same private libvirtd
(tests/libvirt/with-libvirtd), in one run. See bench/README.md."""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

from benchlib import (BUILD, ROOT, SLSCTL, BenchBase, BenchError, Console, log, median, now)

VIRSH = os.environ.get("SLSVIRT_VIRSH", os.path.join(BUILD, "libvirt", "virsh"))
REPORT_S = 0.1  # sls-dirty prints a work report every 100 ms of guest time


def virsh(*args, timeout=300, check=True):
    r = subprocess.run([VIRSH, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise BenchError(f"virsh {' '.join(args)}: {(r.stderr or r.stdout).strip()[-400:]}")
    return r


def timed_virsh(*args, timeout=300):
    t0 = now()
    r = virsh(*args, timeout=timeout)
    return (now() - t0) * 1000.0, r


def qemu_pid(dom):
    with open(f"/run/libvirt/qemu/{dom}.pid") as f:
        return int(f.read().strip())


def hostd_load_ms():
    """load_ms of the newest restore in the hook's slsvirtd log: the part of
    sls-restore that reads the store into the new QEMU's staging area."""
    best = None
    for path in glob.glob("/run/slsvirt/libvirt/hostd-*/slsvirtd.log"):
        with open(path, errors="replace") as f:
            for line in f:
                m = re.search(r"restored epoch \d+: .*load_ms=([0-9.]+)", line)
                if m:
                    best = float(m[1])
    return best


def gap_ms(console, t0, t1):
    """The longest stretch in which the guest made no progress report, from
    the last report at or before t0 to the first after t1 (host time), less
    the report period: the pause the guest saw around an operation."""
    pts = [p[0] for p in console.points]
    before = [t for t in pts if t <= t0]
    after = [t for t in pts if t > t1]
    if not before or not after:
        return None
    window = [before[-1]] + [t for t in pts if before[-1] < t <= after[0]]
    longest = max(b - a for a, b in zip(window, window[1:]))
    return max(0.0, (longest - REPORT_S) * 1000.0)


def wait_reports(console, after_t, n, timeout=120):
    deadline = now() + timeout
    while now() < deadline:
        if len([p for p in console.points if p[0] > after_t]) >= n:
            return
        time.sleep(0.02)
    raise BenchError(f"guest made no progress reports after the operation within {timeout} s")


class Bench(BenchBase):
    def __init__(self, opts):
        super().__init__(opts, "libvirt")

    def domain_xml(self, name, sls):
        with open(os.path.join(ROOT, "libvirt", "example-domain.xml")) as f:
            xml = f.read()
        xml = xml.replace("/path/to/slsvirt", ROOT).replace("<name>slsdemo</name>", f"<name>{name}</name>")
        xml = xml.replace("qemu/slsdemo.console", f"qemu/{name}.console")
        xml = xml.replace("<memory unit='MiB'>256</memory>", f"<memory unit='MiB'>{self.o.mem_mib}</memory>")
        xml = xml.replace("ceiling='256'", f"ceiling='{self.o.mem_mib}'")
        xml = xml.replace("sls.run=exec sls.args=sls-counter,50",
                          f"sls.run=dirty sls.args={self.o.dirty_kib},{self.o.buffer_mib}")
        if not sls:
            xml = re.sub(r"\s*<metadata>.*?</metadata>", "", xml, flags=re.S)
        path = os.path.join(self.work, f"{name}.xml")
        with open(path, "w") as f:
            f.write(xml)
        return path

    def boot(self, name, sls, out):
        virsh("define", self.domain_xml(name, sls))
        con = Console(f"/var/log/libvirt/qemu/{name}.console")
        ms, _ = timed_virsh("start", name)
        out[("sls_" if sls else "") + "start_ms"] = ms  # libvirt + hook + QEMU process start, not the boot
        con.wait_for("SLS: dirty rate=", 300)
        t = now()
        wait_reports(con, t, 10)  # settled: a second of steady work
        return con

    def stock(self, out):
        dom = "bstock"
        con = self.boot(dom, False, out)
        save, rest, saved_bytes, gaps = [], [], [], []
        try:
            for i in range(self.o.reps):
                path = os.path.join(self.work, f"{dom}.save")
                t0 = now()
                ms, _ = timed_virsh("save", dom, path, "--bypass-cache")
                save.append(ms)
                saved_bytes.append(os.path.getsize(path))
                ms, _ = timed_virsh("restore", path, "--bypass-cache")
                rest.append(ms)
                t1 = now()
                wait_reports(con, t1, 3)
                gaps.append(gap_ms(con, t0, t1))
                os.unlink(path)
                log(f"stock {i + 1}/{self.o.reps}: save {save[-1]:.0f} ms ({saved_bytes[-1]} bytes), "
                    f"restore {rest[-1]:.0f} ms, guest saw {gaps[-1]:.0f} ms")
        finally:
            con.close()
            virsh("destroy", dom, check=False)
        out["save_ms"] = median(save)
        out["restore_ms"] = median(rest)
        out["save_bytes"] = median(saved_bytes)
        out["save_guest_pause_ms"] = median([g for g in gaps if g is not None])
        out["stock_runs"] = {"save_ms": save, "restore_ms": rest, "bytes": saved_bytes, "guest_pause_ms": gaps}

    def sls(self, out):
        dom = "bsls"
        con = self.boot(dom, True, out)
        ckpt, rest, ckpt_gaps, rest_gaps, ckpt_bytes, stops, loads = [], [], [], [], [], [], []
        try:
            time.sleep(1)  # past the FULL first epoch
            for i in range(self.o.reps):
                t0 = now()
                ms, r = timed_virsh("sls-checkpoint", dom, "--wait")
                t1 = now()
                ckpt.append(ms)
                m = re.search(r"Epoch (\d+) durable", r.stdout)
                if not m:
                    raise BenchError(f"sls-checkpoint printed no epoch: {r.stdout!r}")
                epoch = int(m[1])
                info = json.loads(virsh("qemu-monitor-command", dom, '{"execute":"query-sls"}').stdout)["return"]
                stops.append(info["last-stop-ns"] / 1e6)
                wait_reports(con, t1, 3)
                ckpt_gaps.append(gap_ms(con, t0, t1))
                ls = json.loads(subprocess.run([SLSCTL, "ls", dom, "--json", "--store-root", "/var/lib/slsvirt"],
                                               capture_output=True, text=True, check=True).stdout)
                ckpt_bytes.append(next((e["bytes"] for e in ls if e["epoch"] == epoch), None))
                if i == 0:  # continuous checkpointing as it ran until now
                    out["sls_write_bandwidth_mib_s"] = round(info["write-bandwidth"] / (1 << 20), 2)
                    out["sls_epochs_per_s"] = info["epochs-per-s"]
                    out["sls_stop_p50_ms"] = info["stop-p50-ns"] / 1e6
                    out["sls_stop_p99_ms"] = info["stop-p99-ns"] / 1e6
                # The crash a stock save cannot survive: SIGKILL, then back.
                os.kill(qemu_pid(dom), 9)
                deadline = now() + 30
                while virsh("domstate", dom).stdout.strip() != "shut off":
                    if now() > deadline:
                        raise BenchError("libvirt did not see the SIGKILL within 30 s")
                    time.sleep(0.02)
                t2 = now()
                ms, r = timed_virsh("sls-restore", dom)
                rest.append(ms)
                t3 = now()
                wait_reports(con, t3, 3)
                rest_gaps.append(gap_ms(con, t2, t3))
                loads.append(hostd_load_ms())
                log(f"sls {i + 1}/{self.o.reps}: checkpoint {ckpt[-1]:.0f} ms (epoch {epoch}, "
                    f"{ckpt_bytes[-1]} bytes, stop {stops[-1]:.2f} ms, guest saw {ckpt_gaps[-1]:.0f} ms), "
                    f"sls-restore {rest[-1]:.0f} ms ({r.stdout.strip()}; slsvirtd loaded it in {loads[-1]} ms)")
                time.sleep(2)  # past the FULL epoch a restored engine writes first
        finally:
            con.close()
            virsh("destroy", dom, check=False)
        out["sls_checkpoint_ms"] = median(ckpt)
        out["sls_restore_ms"] = median(rest)
        out["sls_checkpoint_bytes"] = median([b for b in ckpt_bytes if b is not None])
        out["sls_checkpoint_stop_ms"] = median(stops)
        out["sls_checkpoint_guest_pause_ms"] = median([g for g in ckpt_gaps if g is not None])
        out["sls_restore_outage_ms"] = median([g for g in rest_gaps if g is not None])
        out["sls_restore_load_ms"] = median([x for x in loads if x is not None])
        out["sls_runs"] = {"checkpoint_ms": ckpt, "restore_ms": rest, "bytes": ckpt_bytes,
                           "stop_ms": stops, "guest_pause_ms": ckpt_gaps, "restore_load_ms": loads}

    def run(self):
        t_start = now()
        out = {"benchmark": "libvirt", "accel": "tcg", "mem_mib": self.o.mem_mib,
               "dirty_kib_per_10ms": self.o.dirty_kib, "reps": self.o.reps,
               "libvirt": virsh("version").stdout.split("\n")[0:3]}
        for part in (self.stock, self.sls):
            try:
                part(out)
            except (BenchError, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                self.error(part.__name__, e)
        for a, b, k in (("save_ms", "sls_checkpoint_ms", "checkpoint_speedup"),
                        ("restore_ms", "sls_restore_ms", "restore_speedup"),
                        ("save_bytes", "sls_checkpoint_bytes", "bytes_ratio"),
                        ("save_guest_pause_ms", "sls_checkpoint_guest_pause_ms", "guest_pause_ratio")):
            if out.get(a) and out.get(b):
                out[k] = round(out[a] / out[b], 1)
        return self.finish_run(out, t_start, print_table)


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}{unit}"
    return f"{v}{unit}"


def print_table(o):
    print()
    print(f"libvirt: {o['mem_mib']} MiB TCG guest dirtying {o['dirty_kib_per_10ms']} KiB / 10 ms, "
          f"median of {o['reps']} (private libvirtd; our QEMU for both sides)")
    print(f"{'':28} {'virsh save/restore':>20} {'virsh sls-*':>14} {'ratio':>8}")
    rows = [("save / checkpoint (ms)", "save_ms", "sls_checkpoint_ms", "checkpoint_speedup"),
            ("pause seen by guest (ms)", "save_guest_pause_ms", "sls_checkpoint_guest_pause_ms", "guest_pause_ratio"),
            ("bytes written", "save_bytes", "sls_checkpoint_bytes", "bytes_ratio"),
            ("restore (ms)", "restore_ms", "sls_restore_ms", "restore_speedup")]
    for label, a, b, r in rows:
        print(f"{label:28} {fmt(o.get(a)):>20} {fmt(o.get(b)):>14} {fmt(o.get(r), 'x'):>8}")
    print(f"stock pause = save + restore (the domain is stopped from save until restored); "
          f"slsvirt: vCPU stop of the forced epoch {fmt(o.get('sls_checkpoint_stop_ms'))} ms, "
          f"continuous p50/p99 {fmt(o.get('sls_stop_p50_ms'))}/{fmt(o.get('sls_stop_p99_ms'))} ms, "
          f"{fmt(o.get('sls_epochs_per_s'))} epochs/s writing {fmt(o.get('sls_write_bandwidth_mib_s'))} MiB/s; "
          f"sls-restore follows a SIGKILL (outage kill->running {fmt(o.get('sls_restore_outage_ms'))} ms; "
          f"of sls-restore, slsvirtd's store load {fmt(o.get('sls_restore_load_ms'))} ms; a plain virsh start "
          f"takes {fmt(o.get('start_ms'))} ms stock, {fmt(o.get('sls_start_ms'))} ms with the hook)")
    for e in o.get("errors", []):
        print(f"ERROR {e}")


def main(argv):
    p = argparse.ArgumentParser(prog="bench/run libvirt", description=__doc__)
    p.add_argument("--reps", type=int, default=3, help="repetitions of each side (default 3)")
    p.add_argument("--mem-mib", type=int, default=256, help="guest RAM in MiB (default 256)")
    p.add_argument("--dirty-kib", type=int, default=1024, help="guest writes per 10 ms in KiB (default 1024)")
    p.add_argument("--buffer-mib", type=int, default=64, help="guest buffer it writes into (default 64)")
    p.add_argument("--out", help="work dir (default build/bench/libvirt-<time>)")
    opts = p.parse_args(argv)
    if os.environ.get("SLSVIRT_LIBVIRT_NS") != "1":
        # Run again next to a private libvirtd (own mount namespace).
        helper = os.path.join(ROOT, "tests", "libvirt", "with-libvirtd")
        return subprocess.run([helper, sys.executable, os.path.join(ROOT, "bench", "run"), "libvirt", *argv]).returncode
    b = Bench(opts)
    try:
        b.check_image(["sls-dirty"])
        if not os.access(VIRSH, os.X_OK):
            raise BenchError(f"prerequisite missing: {VIRSH} (scripts/setup virsh)")
    except BenchError as e:
        b.error("prerequisites", e)
        return b.finish_run({"benchmark": "libvirt"}, now(), print_table)
    return b.run()
