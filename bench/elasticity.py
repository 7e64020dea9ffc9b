# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/run elasticity: give 512 MiB of a 1 GiB guest back to the host and
take it back, slsvirt (sls-mem-target: the driver takes free pages in large
chunks, one RELEASE doorbell per batch, QEMU discards them) against stock
virtio-balloon (QMP balloon) and virtio-mem (qom-set requested-size), with
Redis serving GETs inside the guest the whole time.

Per mechanism, in a fresh QEMU (same binary, same kernel, 1 GiB):
  1. the guest touches ~800 MiB and frees it (so host RSS covers its RAM),
     starts Debian's redis-server (redis-tools' binary), loads 100k keys of
     1 KiB, then runs redis-benchmark GET rounds of ROUND ops in a loop,
     printing 'SLS: redis ops=N' after each;
  2. baseline GET rate over --window seconds (host-timestamped lines,
     least-squares slope);
  3. shrink to 512 MiB; QEMU's VmRSS polled every 5 ms: release_ms = until
     95% of 512 MiB has left RSS, rss_returned_frac = RSS drop / 512 MiB
     once settled; the GET rate over the shrink (at least --window s);
  4. grow back to 1 GiB: reclaim_ms = until the mechanism reports the guest
     whole again (query-sls-mem released == 0 / query-balloon actual ==
     1 GiB / virtio-mem size == requested), and the GET rate meanwhile.
"""

import argparse
import json
import os
import shutil
import subprocess
import time

import benchlib
from benchlib import BenchError, Qmp, Qemu, Console, log, now

MIB = 1 << 20
GUEST_MIB = 1024
SHRINK_MIB = 512

REDIS_BINS = {"/usr/bin/redis-check-rdb": "bin/redis-server",  # Debian: redis-server is this binary
              "/usr/bin/redis-benchmark": "bin/redis-benchmark"}
MODULES = ["kernel/drivers/virtio/virtio_balloon.ko.xz", "kernel/drivers/virtio/virtio_mem.ko.xz"]

GUEST_SCRIPT = r"""#!/bin/sh
# bench/run elasticity, inside the guest (see bench/elasticity.py)
ip link set lo up
for m in $SLS_MODULES; do insmod /lib/modules/sls-bench/$m.ko || echo "SLS: insmod $m FAILED"; done
# virtio-mem plugs and onlines its memory asynchronously: wait for all of it.
i=0
while [ "$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)" -lt %(total)d ]; do
	i=$((i + 1)); [ $i -gt 300 ] && { echo "SLS: redis FAILED: memory not plugged: $(grep MemTotal /proc/meminfo)"; exit 1; }
	sleep 0.1
done
# Touch most of RAM once, then free it: host RSS then covers guest RAM.
dd if=/dev/zero of=/dev/null bs=%(touch)dM count=1 2>/dev/null
redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
	--logfile /tmp/redis.log || { echo "SLS: redis FAILED to start"; exit 1; }
i=0
while ! redis-benchmark -q -t ping -n 1 >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -gt 100 ] && { echo "SLS: redis FAILED: $(tail -n 3 /tmp/redis.log)"; exit 1; }
	sleep 0.1
done
redis-benchmark -q -t set -n %(keys)d -r %(keys)d -d 1024 -P 16 >/dev/null ||
	{ echo "SLS: redis FAILED to load"; exit 1; }
echo "SLS: redis ready keys=%(keys)d"
while :; do
	redis-benchmark -q -t get -n %(round)d -r %(keys)d -P 16 -c 4 >/dev/null || echo "SLS: redis round FAILED"
	echo "SLS: redis ops=%(round)d"
done
"""


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run elasticity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mechanisms", default="slsvirt,balloon,virtio-mem,slsvirt-init-on-alloc",
                   help="comma-separated subset of slsvirt,balloon,virtio-mem,slsvirt-init-on-alloc")
    p.add_argument("--guest-args", default="init_on_alloc=0",
                   help="kernel arguments for every guest (default: no zeroing on allocation, "
                        "see bench/README.md); slsvirt-init-on-alloc runs without them")
    p.add_argument("--window", type=float, default=5.0, help="seconds per throughput window")
    p.add_argument("--keys", type=int, default=100000, help="Redis keys of 1 KiB loaded")
    p.add_argument("--round", type=int, default=500, help="GETs per redis-benchmark round")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a shrink/grow may take")
    p.add_argument("--out", help="work dir (default build/bench/elasticity-<time>)")
    return p.parse_args(argv)


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


class Elasticity(benchlib.BenchBase):
    def __init__(self, opts):
        super().__init__(opts, "elasticity")
        self.overlay = os.path.join(self.work, "redis-overlay.cpio.gz")
        self.initrd_all = os.path.join(self.work, "initramfs+redis.cpio.gz")

    # -------------------------------------------------------- guest image

    def build_overlay(self):
        """A cpio appended to the test image: Redis from Debian's
        redis-tools with the libraries it links (ldd), the stock balloon and
        virtio-mem modules, and the guest script."""
        for b in REDIS_BINS:
            if not os.path.exists(b):
                raise BenchError(f"prerequisite missing: {b} (apt-get install redis-tools; scripts/setup does)")
        root = os.path.join(self.work, "overlay")
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(os.path.join(root, "bin"))
        libs = set()
        for src, dst in REDIS_BINS.items():
            shutil.copy2(src, os.path.join(root, dst))
            out = subprocess.run(["ldd", src], capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                parts = line.split()
                for p in parts:
                    if p.startswith("/"):
                        libs.add(p)
        for lib in libs:
            real = os.path.realpath(lib)
            dst = os.path.join(root, lib.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(real, dst)
        kver = open(os.path.join(benchlib.ROOT, "scripts", "versions.sh")).read()
        kver = [l.split("=", 1)[1].strip().strip('"') for l in kver.splitlines()
                if l.startswith("SLS_KVER=")]
        moddir = f"/lib/modules/{kver[0] if kver else os.uname().release}"
        os.makedirs(os.path.join(root, "lib/modules/sls-bench"))
        for m in MODULES:
            src = os.path.join(moddir, m)
            if not os.path.exists(src):
                raise BenchError(f"prerequisite missing: {src} (linux-image of the guest kernel)")
            dst = os.path.join(root, "lib/modules/sls-bench", os.path.basename(m)[:-3])
            with open(dst, "wb") as f:
                subprocess.run(["xz", "-dc", src], stdout=f, check=True)
        script = GUEST_SCRIPT % {"touch": GUEST_MIB - 224, "keys": self.o.keys, "round": self.o.round,
                                 "total": GUEST_MIB - 128}
        with open(os.path.join(root, "bench-redis.sh"), "w") as f:
            f.write(script)
        os.chmod(os.path.join(root, "bench-redis.sh"), 0o755)
        subprocess.run(f"cd '{root}' && find . | LC_ALL=C sort | cpio --create --format=newc "
                       f"--owner=0:0 --quiet | gzip -1 > '{self.overlay}'", shell=True, check=True)
        with open(self.initrd_all, "wb") as out:
            for part in (self.initrd, self.overlay):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out)

    # -------------------------------------------------------- one side

    def start(self, mech):
        d = os.path.join(self.work, mech)
        os.makedirs(d, exist_ok=True)
        qmp = os.path.join(d, "qmp.sock")
        console = os.path.join(d, "console.log")
        modules = {"balloon": "virtio_balloon", "virtio-mem": "virtio_mem"}.get(mech, "")
        append = (f"console=ttyS0 quiet panic=-1 sls.run=exec sls.args=sh,/bench-redis.sh "
                  f"SLS_MODULES={modules}")
        if mech != "slsvirt-init-on-alloc" and self.o.guest_args:
            append += " " + self.o.guest_args
        argv = [benchlib.QEMU, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
                *benchlib.MACHINE_ARGS, "-accel", "tcg", "-cpu", "max", "-smp", "1",
                "-nodefaults", "-no-user-config", "-nographic",
                "-chardev", f"file,id=con0,path={console}", "-serial", "chardev:con0",
                "-kernel", self.kernel, "-initrd", self.initrd_all,
                "-qmp", f"unix:{qmp},server=on,wait=off"]
        if mech == "virtio-mem":
            # virtio-mem plugs memory above a boot size: 512 MiB boot + 512 MiB plugged.
            argv += ["-m", f"{GUEST_MIB - SHRINK_MIB}M,maxmem={2 * GUEST_MIB}M",
                     "-object", f"memory-backend-ram,id=vmem0,size={SHRINK_MIB}M",
                     "-device", f"virtio-mem-pci,id=vm0,memdev=vmem0,requested-size={SHRINK_MIB}M"]
            append += " memhp_default_state=online_movable"
        else:
            argv += ["-m", f"{GUEST_MIB}M"]
        if mech.startswith("slsvirt"):
            # No store attached: this measures elasticity, not checkpointing.
            argv += ["-device", f"slsvirt-pci,vm=bench,socket={d}/no-store.sock"]
        if mech == "balloon":
            argv += ["-device", "virtio-balloon-pci,id=balloon0"]
        argv += ["-append", append]
        q = Qemu(argv, os.path.join(d, "qemu.log"))
        c = Console(console)
        try:
            c.wait_for("SLS: redis ready", 600, q.alive)
            for _, line in c.lines:
                if "FAILED" in line:
                    raise BenchError(f"guest: {line}")
        except BaseException:
            c.close()
            q.kill()
            raise
        return q, c, Qmp(qmp)

    def ops_rate(self, c, t0, t1):
        pts = [(t, line) for t, line in c.lines if t0 <= t <= t1 and line.startswith("SLS: redis ops=")]
        if len(pts) < 3:
            raise BenchError(f"only {len(pts)} Redis rounds finished in a {t1 - t0:.1f} s window")
        # Rounds are equal: ops per second between the first and last line.
        return (len(pts) - 1) * self.o.round / (pts[-1][0] - pts[0][0])

    def set_size(self, mech, qmp, mib):
        if mech.startswith("slsvirt"):
            qmp.cmd("sls-mem-target", {"size": mib * MIB})
        elif mech == "balloon":
            qmp.cmd("balloon", {"value": mib * MIB})
        else:
            qmp.cmd("qom-set", {"path": "/machine/peripheral/vm0", "property": "requested-size",
                                "value": (mib - (GUEST_MIB - SHRINK_MIB)) * MIB})

    def grown(self, mech, qmp):
        if mech.startswith("slsvirt"):
            return qmp.cmd("query-sls-mem")["released"] == 0
        if mech == "balloon":
            return qmp.cmd("query-balloon")["actual"] >= GUEST_MIB * MIB
        size = qmp.cmd("qom-get", {"path": "/machine/peripheral/vm0", "property": "size"})
        return size >= SHRINK_MIB * MIB

    def side(self, mech):
        o = self.o
        q, c, qmp = self.start(mech)
        r = {}
        try:
            time.sleep(1.0)
            t = now()
            time.sleep(o.window)
            r["baseline_ops_s"] = self.ops_rate(c, t, now())
            rss0 = rss_bytes(q.proc.pid)
            r["rss_before_mib"] = rss0 / MIB
            goal = rss0 - 0.95 * SHRINK_MIB * MIB
            t0 = now()
            self.set_size(mech, qmp, GUEST_MIB - SHRINK_MIB)
            t_done = None
            while now() - t0 < o.timeout:
                if rss_bytes(q.proc.pid) <= goal:
                    t_done = now()
                    break
                time.sleep(0.005)
            r["release_ms"] = None if t_done is None else (t_done - t0) * 1000
            # The shrink's throughput window: the shrink itself, at least --window s.
            time.sleep(max(0.0, t0 + max(o.window, (t_done or now()) - t0) - now()))
            t_end = now()
            r["shrink_ops_s"] = self.ops_rate(c, t0, t_end)
            r["rss_returned_frac"] = (rss0 - rss_bytes(q.proc.pid)) / (SHRINK_MIB * MIB)
            if t_done is None:
                raise BenchError(f"{mech}: host RSS did not drop by 95% of {SHRINK_MIB} MiB within "
                                 f"{o.timeout:.0f} s (returned {r['rss_returned_frac']:.1%})")
            if mech.startswith("slsvirt"):
                r["released_ranges"] = qmp.cmd("query-sls-mem")["released-ranges"]

            t1 = now()
            self.set_size(mech, qmp, GUEST_MIB)
            t_back = None
            while now() - t1 < o.timeout:
                if self.grown(mech, qmp):
                    t_back = now()
                    break
                time.sleep(0.005)
            r["reclaim_ms"] = None if t_back is None else (t_back - t1) * 1000
            time.sleep(max(0.0, t1 + o.window - now()))
            r["grow_ops_s"] = self.ops_rate(c, t1, now())
            if t_back is None:
                raise BenchError(f"{mech}: the guest did not grow back within {o.timeout:.0f} s")
            r["shrink_ops_ratio"] = r["shrink_ops_s"] / r["baseline_ops_s"]
            r["grow_ops_ratio"] = r["grow_ops_s"] / r["baseline_ops_s"]
        finally:
            qmp.close()
            c.close()
            q.kill()
        return r


def print_table(out):
    print("\nbench/run elasticity: 512 MiB of a 1 GiB TCG guest to the host and back, Redis GETs in the guest")
    print(f"{'mechanism':12} {'release ms':>11} {'RSS returned':>13} {'reclaim ms':>11} "
          f"{'GET/s base':>11} {'shrink':>8} {'grow':>8}")
    for mech, r in out["sides"].items():
        if "error" in r:
            print(f"{mech:12} could not measure: {r['error']}")
            continue
        f = lambda k, fmt: (fmt % r[k]) if r.get(k) is not None else "-"
        print(f"{mech:12} {f('release_ms', '%.0f'):>11} {f('rss_returned_frac', '%.3f'):>13} "
              f"{f('reclaim_ms', '%.0f'):>11} {f('baseline_ops_s', '%.0f'):>11} "
              f"{f('shrink_ops_ratio', '%.2fx'):>8} {f('grow_ops_ratio', '%.2fx'):>8}")
    if out.get("release_speedup_vs_balloon"):
        print(f"slsvirt releases {out['release_speedup_vs_balloon']:.1f}x faster than virtio-balloon"
              + (f", {out['release_speedup_vs_virtio_mem']:.1f}x faster than virtio-mem"
                 if out.get("release_speedup_vs_virtio_mem") else ""))
    print(f"targets: >=95% RSS returned within 100 ms: {out['targets']['release_100ms_95pct']}; "
          f">=10x balloon: {out['targets']['speedup_10x']}")
    print(f"TCG guest (no KVM here); guests booted with '{out['guest_args']}' except "
          "slsvirt-init-on-alloc (Debian's default: every allocated page zeroed); "
          "slsvirt sides without a store attached (elasticity only).")


def main(argv):
    o = parse_args(argv)
    b = Elasticity(o)
    t_start = now()
    out = {"benchmark": "elasticity", "guest_mib": GUEST_MIB, "shrink_mib": SHRINK_MIB,
           "accel": "tcg", "guest_args": o.guest_args, "sides": {}}
    mechs = [m for m in o.mechanisms.split(",") if m]
    try:
        b.check_image(["slsvirt.ko"])
        b.build_overlay()
    except BenchError as e:
        b.error("setup", e)
        mechs = []
    for mech in mechs:
        log(f"{mech}: booting a {GUEST_MIB} MiB guest with Redis")
        try:
            out["sides"][mech] = b.side(mech)
            log(f"{mech}: {json.dumps(out['sides'][mech])}")
        except BenchError as e:
            b.error(mech, e)
            out["sides"][mech] = {"error": str(e)}
    s = out["sides"].get("slsvirt", {})
    bal = out["sides"].get("balloon", {})
    vmem = out["sides"].get("virtio-mem", {})
    out["release_ms"] = s.get("release_ms")
    out["rss_returned_frac"] = s.get("rss_returned_frac")
    out["reclaim_ms"] = s.get("reclaim_ms")
    out["workload_ops_during_shrink_ratio"] = s.get("shrink_ops_ratio")
    out["workload_ops_during_grow_ratio"] = s.get("grow_ops_ratio")
    out["balloon_release_ms"] = bal.get("release_ms")
    out["balloon_reclaim_ms"] = bal.get("reclaim_ms")
    out["balloon_ops_during_shrink_ratio"] = bal.get("shrink_ops_ratio")
    zs = out["sides"].get("slsvirt-init-on-alloc", {})
    out["init_on_alloc_release_ms"] = zs.get("release_ms")
    out["virtio_mem_release_ms"] = vmem.get("release_ms")
    out["virtio_mem_reclaim_ms"] = vmem.get("reclaim_ms")
    sp = lambda other: (other / out["release_ms"]) if other and out["release_ms"] else None
    out["release_speedup_vs_balloon"] = sp(out["balloon_release_ms"])
    out["release_speedup_vs_virtio_mem"] = sp(out["virtio_mem_release_ms"])
    out["targets"] = {
        "release_100ms_95pct": benchlib.judge(out["release_ms"], lambda v: v <= 100),
        "speedup_10x": benchlib.judge(out["release_speedup_vs_balloon"], lambda v: v >= 10),
    }
    return b.finish_run(out, t_start, print_table)
