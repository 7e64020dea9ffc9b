# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/run persist: the slsvirt persistence barrier (PERSIST, guest memory
made durable by continuous checkpointing) against fsync on a virtio-blk disk
in the same kind of guest, and SQLite on each, in one run on the same host
disk. See bench/README.md for what is measured and how."""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

from benchlib import (HOSTD, MACHINE_ARGS, QEMU, SLSCTL, BenchBase, BenchError, judge, Console, Qemu, kill_pidfile,
                      log, now, print_footer, print_targets, slsctl_run_detached)

PERIOD_MS = 10             # the default continuous-checkpointing period
BOOT_TIMEOUT_S = 120
DISK_MIB = 512             # the fsync side's raw ext4 image
AIO_PREFERENCE = ["io_uring", "native", "threads"]

TARGETS = {
    "persist_p50": "persist p50 <= 2x one host fdatasync (p50)",
    "sqlite": "SQLite on PERSIST >= 2x SQLite with fsync on virtio-blk (1 client)",
    "sqlite_4": "SQLite on PERSIST >= 2x SQLite with fsync on virtio-blk (4 clients)",
}

LAT_RE = re.compile(r"SLS: sqlite lat kind=(\S+) n=(\d+) p50_us=(\d+) p99_us=(\d+) min_us=(\d+) "
                    r"max_us=(\d+) mean_us=(\d+)")
DONE_RE = re.compile(r"SLS: sqlite done txns=(\d+) clients=(\d+) mode=(\S+) guest_ms=(\d+) (\S+)"
                     r"(?: epochs=(\d+))?")
START_RE = re.compile(r"SLS: sqlite start mode=(\S+) clients=\d+ db=\S+ journal=(\S+) synchronous=(\S+)"
                      r"(?: ack=(\S+))?")


def median_merge(results):
    """One result from several rounds' (same shape): the median of every
    number, the first round's value of anything else."""
    first = results[0]
    if isinstance(first, dict):
        return {k: median_merge([r[k] for r in results if isinstance(r, dict) and k in r]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(r for r in results if isinstance(r, (int, float)))
    return first


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


class Bench(BenchBase):
    def __init__(self, opts):
        super().__init__(opts, "persist")
        self.round = 1
        self.rounds = {"ours": [], "stock": []}

    def sqlite_args(self, mode):
        clients = ":".join(str(c) for c in self.o.clients)
        a = f"bench,-m,{mode},-c,{clients},-t,{self.o.seconds},-l,{self.o.samples}"
        if mode == "fsync":
            a += ",-d,/mnt/disk/sls.db,-f,/mnt/disk/lat"
        return a

    # ------------------------------------------------------------ prerequisites

    def check_prereqs(self):
        for path, what in [(SLSCTL, "slsctl (meson compile -C build/meson)"),
                           (HOSTD, "slsvirtd (meson compile -C build/meson)")]:
            if not os.path.exists(path):
                raise BenchError(f"prerequisite missing: {what} at {path}")
        if not shutil.which("mkfs.ext4"):
            raise BenchError("prerequisite missing: mkfs.ext4 (install e2fsprogs)")
        self.check_image(["bin/sls-sqlite", "lib/modules/sls/ext4.ko", "lib/modules/sls/virtio_blk.ko"])
        r = subprocess.run([SLSCTL, "run", "--help"], capture_output=True, text=True)
        if "--period-ms" not in r.stdout + r.stderr:
            raise BenchError(f"{SLSCTL} run has no --period-ms (continuous checkpointing)")

    # ------------------------------------------------------------ host fdatasync

    def run_host_fdatasync(self):
        """4 KiB pwrite at offset 0 + fdatasync, on the work dir's filesystem
        (the store's disk), `samples` times after 20 warm-up rounds."""
        path = os.path.join(self.work, "fdatasync.probe")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        buf = bytearray(4096)
        lat = []
        try:
            for i in range(20 + self.o.host_samples):
                buf[0] = i & 0xff
                t0 = time.perf_counter_ns()
                os.pwrite(fd, buf, 0)
                os.fdatasync(fd)
                if i >= 20:
                    lat.append((time.perf_counter_ns() - t0) / 1e6)
        finally:
            os.close(fd)
            os.unlink(path)
        return {"n": len(lat), "ms_p50": pct(lat, 0.5), "ms_p99": pct(lat, 0.99), "ms_min": min(lat),
                "ms_mean": sum(lat) / len(lat)}

    # ------------------------------------------------------------ guest output

    def parse_guest(self, con, mode):
        """Latency and per-client-count SQLite throughput from the console.
        Throughput is timed with host time between the 'start' and 'done'
        lines (the guest clock stops while a capture pauses the vCPUs)."""
        lines = list(con.lines)
        res = {"lat": {}, "sqlite": {}}
        begins = {}
        start_t = None
        for t, line in lines:
            if line.startswith("SLS: sqlite lat begin kind="):
                begins[line.split("kind=")[1].split()[0]] = t
            m = LAT_RE.match(line)
            if m:
                kind = m[1]
                n = int(m[2])
                guest_mean_ms = int(m[7]) / 1000
                d = {"n": n, "guest_ms_p50": int(m[3]) / 1000, "guest_ms_p99": int(m[4]) / 1000,
                     "guest_ms_min": int(m[5]) / 1000, "guest_ms_max": int(m[6]) / 1000,
                     "guest_ms_mean": guest_mean_ms}
                if kind in begins:
                    d["wall_ms_mean"] = (t - begins[kind]) * 1000 / n
                    # Time the guest clock did not see (captures' pauses),
                    # spread over the samples: added to p50/p99.
                    d["hidden_ms_per_op"] = max(0.0, d["wall_ms_mean"] - guest_mean_ms)
                res["lat"][kind] = d
            if line.startswith("SLS: sqlite start "):
                start_t = t
                m = START_RE.match(line)
                if m and m[1] != "none":
                    res["settings"] = {"journal_mode": m[2], "synchronous": m[3], "ack": m[4]}
            m = DONE_RE.match(line)
            if m:
                if m[5] != "ok":
                    raise BenchError(f"{mode}: SQLite run with {m[2]} clients failed: {line}")
                txns, clients, guest_ms = int(m[1]), int(m[2]), int(m[4])
                wall_s = t - start_t
                run = {"txns": txns, "wall_s": wall_s, "tps": txns / wall_s,
                       "guest_s": guest_ms / 1000, "tps_guest_clock": txns / (guest_ms / 1000)}
                if m[3] == "none":
                    # the no-durability reference run after each persist run
                    res.setdefault("no_durability", {})[clients] = run
                    continue
                res["sqlite"][clients] = run
                if mode == "persist" and m[6] is not None:
                    # distinct PERSIST tickets: the epochs the commits shared
                    res["sqlite"][clients]["epochs"] = int(m[6])
                    res["sqlite"][clients]["txns_per_epoch"] = txns / int(m[6]) if int(m[6]) else None
        for t, line in lines:
            if "FAILED" in line:
                raise BenchError(f"{mode}: guest said: {line}")
        return res

    def wait_done(self, con, alive, what):
        # ours runs each client count twice (PERSIST, then no durability)
        budget = BOOT_TIMEOUT_S + 2 * len(self.o.clients) * (self.o.seconds + 30) + self.o.samples * 0.1
        con.wait_for("SLS: sqlite bench done", budget, alive)
        time.sleep(0.1)

    # ------------------------------------------------------------ ours

    def run_ours(self):
        vm = "persist"
        run_dir = os.path.join(self.work, f"ours-{self.round}", "run")
        store = os.path.join(self.work, f"ours-{self.round}", "store")
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        os.makedirs(store, exist_ok=True)
        env = dict(os.environ, SLSVIRT_RUN_DIR=run_dir, SLSVIRT_STORE_ROOT=store, SLSVIRT_QEMU=QEMU,
                   SLSVIRT_KERNEL=self.kernel, SLSVIRT_INITRD=self.initrd, SLSVIRT_HOSTD=HOSTD)
        env.pop("SLSVIRTD_FAULT", None)
        append = f"console=ttyS0 quiet panic=-1 sls.run=sqlite sls.args={self.sqlite_args('persist')}"
        log(f"ours: slsctl run --period-ms {PERIOD_MS}: PERSIST latency, then SQLite (DB in guest RAM), "
            f"clients {self.o.clients}, {self.o.seconds} s each")
        con = None
        try:
            _, alive = slsctl_run_detached([SLSCTL, "run", vm, "--detach", "--mem", f"{self.o.mem_mib}M",
                                            "--period-ms", str(PERIOD_MS), "--append", append], env)
            con = Console(os.path.join(run_dir, f"{vm}.console"))
            self.wait_done(con, alive, "ours")
            res = self.parse_guest(con, "persist")
            if "persist" not in res["lat"]:
                raise BenchError("no persist latency line on the console")
            return res
        finally:
            if con:
                con.close()
            kill_pidfile(os.path.join(run_dir, f"{vm}.pid"))
            kill_pidfile(os.path.join(run_dir, "slsvirtd.pid"))
            shutil.rmtree(store, ignore_errors=True)

    # ------------------------------------------------------------ stock

    def pick_aio(self, disk):
        """The best aio= our QEMU build accepts with cache=none on this file."""
        for aio in AIO_PREFERENCE:
            r = subprocess.run([QEMU, "-machine", "none", "-nodefaults", "-display", "none", "-S",
                                "-drive", f"file={disk},if=none,id=d0,format=raw,cache=none,aio={aio}",
                                "-monitor", "none", "-serial", "none", "-qmp", "stdio"],
                               input='{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                return aio
            log(f"stock: aio={aio} not usable: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        raise BenchError("no aio mode of QEMU works with cache=none on the disk image")

    def run_stock(self):
        d = os.path.join(self.work, f"stock-{self.round}")
        os.makedirs(d, exist_ok=True)
        disk = os.path.join(d, "disk.raw")
        with open(disk, "wb") as f:
            f.truncate(DISK_MIB << 20)
        r = subprocess.run(["mkfs.ext4", "-q", "-F", disk], capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"mkfs.ext4 failed: {r.stderr.strip()}")
        aio = self.pick_aio(disk)
        self.aio = aio
        append = (f"console=ttyS0 quiet panic=-1 sls.run=sqlite sls.disk=1 "
                  f"sls.args={self.sqlite_args('fsync')}")
        argv = [QEMU, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
                *MACHINE_ARGS, "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", f"{self.o.mem_mib}M",
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-chardev", f"file,id=con0,path={d}/console.log", "-serial", "chardev:con0",
                "-kernel", self.kernel, "-initrd", self.initrd, "-append", append,
                "-drive", f"file={disk},if=none,id=d0,format=raw,cache=none,aio={aio}",
                "-device", "virtio-blk-pci,drive=d0"]
        log(f"stock: plain QEMU, virtio-blk raw ext4 image ({DISK_MIB} MiB) cache=none aio={aio}: "
            f"fsync latency, then SQLite on the disk, clients {self.o.clients}")
        vm = Qemu(argv, f"{d}/qemu.log")
        con = Console(f"{d}/console.log")
        try:
            try:
                self.wait_done(con, vm.alive, "stock")
            except BenchError as e:
                raise BenchError(f"{e} (qemu: {vm.log_tail()})") from e
            if not any("sqlite disk mounted" in l for _, l in con.lines):
                raise BenchError("the guest did not mount the virtio-blk disk")
            res = self.parse_guest(con, "fsync")
            if "fsync" not in res["lat"]:
                raise BenchError("no fsync latency line on the console")
            res["aio"] = aio
            return res
        finally:
            con.close()
            vm.kill()
            if os.path.exists(disk):
                os.unlink(disk)

    # ------------------------------------------------------------ driver

    def run(self):
        o = self.o
        out = {"benchmark": "persist", "accel": "tcg", "machine": "q35", "smp": 1, "mem_mib": o.mem_mib,
               "period_ms": PERIOD_MS, "clients": o.clients, "seconds_per_run": o.seconds, "rounds": o.rounds,
               "journal_mode": "wal", "synchronous": {"persist": "off", "fsync": "full"},
               "persist_commit": "group: COMMIT in memory, then PERSIST outside the write lock, then ack",
               "qemu": os.path.realpath(QEMU),
               "workdir": self.work}
        t_start = now()
        try:
            self.check_prereqs()
        except BenchError as e:
            self.error("prerequisites", e)
            return self.finish(out, t_start)
        try:
            out["host_fdatasync"] = self.run_host_fdatasync()
            log(f"host: fdatasync p50 {out['host_fdatasync']['ms_p50']:.3f} ms")
        except OSError as e:
            self.error("host fdatasync", e)
        # Rounds alternate ours and stock so that both sides see the same
        # slow and fast phases of a noisy machine; each figure is the median
        # over rounds, and each speedup the median of per-round ratios.
        rounds = {"ours": [], "stock": []}
        for r in range(o.rounds):
            self.round = r + 1
            for part, fn in (("ours", self.run_ours), ("stock", self.run_stock)):
                try:
                    rounds[part].append(fn())
                except Exception as e:  # noqa: BLE001 -- any failure is reported, not raised
                    self.error(f"{part} (round {r + 1})", e)
                    rounds[part].append(None)
        self.rounds = rounds
        with open(os.path.join(self.work, "rounds.json"), "w") as f:
            json.dump(rounds, f, indent=1, default=str)
        for part in rounds:
            done = [x for x in rounds[part] if x]
            if done:
                out[part] = median_merge(done)
        return self.finish(out, t_start)

    def finish(self, out, t_start):
        ours, stock, host = out.get("ours") or {}, out.get("stock") or {}, out.get("host_fdatasync") or {}
        p = ours.get("lat", {}).get("persist")
        if p:
            hidden = p.get("hidden_ms_per_op", 0.0)
            out["persist_ms_p50"] = p["guest_ms_p50"] + hidden
            out["persist_ms_p99"] = p["guest_ms_p99"] + hidden
            out["persist_ms_p50_guest_clock"] = p["guest_ms_p50"]
            out["persist_ms_mean_wall"] = p.get("wall_ms_mean")
        out["host_fdatasync_ms_p50"] = host.get("ms_p50")
        out["host_fdatasync_ms_p99"] = host.get("ms_p99")
        for kind in ("fsync", "fdatasync"):
            s = stock.get("lat", {}).get(kind)
            if s:
                out[f"guest_{kind}_ms_p50"] = s["guest_ms_p50"]
                out[f"guest_{kind}_ms_p99"] = s["guest_ms_p99"]
        # What each guest said it ran (its start line), over the defaults above.
        for side, part in (("persist", ours), ("fsync", stock)):
            st = part.get("settings") or {}
            if st.get("synchronous"):
                out["synchronous"][side] = st["synchronous"]
            if st.get("journal_mode") and st["journal_mode"] != out["journal_mode"]:
                out["journal_mode"] = f"{out['journal_mode']} / {side}: {st['journal_mode']}"
        out["sqlite"] = {}
        for c in out["clients"]:
            oc = ours.get("sqlite", {}).get(c, {})
            a = oc.get("tps")
            b = stock.get("sqlite", {}).get(c, {}).get("tps")
            ratios = [x["sqlite"][c]["tps"] / y["sqlite"][c]["tps"]
                      for x, y in zip(self.rounds["ours"], self.rounds["stock"])
                      if x and y and x.get("sqlite", {}).get(c, {}).get("tps")
                      and y.get("sqlite", {}).get(c, {}).get("tps")]
            speedup = statistics.median(ratios) if ratios else (a / b if a and b else None)
            nd = ours.get("no_durability", {}).get(c, {}).get("tps")
            out["sqlite"][str(c)] = {"tps_persist": a, "tps_fsync": b,
                                     "speedup": speedup, "speedup_per_round": ratios,
                                     "tps_no_durability": nd,
                                     "speedup_bound": nd / b if nd and b else None,
                                     "persist_epochs": oc.get("epochs"),
                                     "persist_txns_per_epoch": oc.get("txns_per_epoch")}
        first = out["sqlite"].get(str(out["clients"][0]), {})
        out["sqlite_tps_persist"] = first.get("tps_persist")
        out["sqlite_tps_fsync"] = first.get("tps_fsync")
        out["sqlite_speedup"] = first.get("speedup")
        out["sqlite_speedup_bound"] = first.get("speedup_bound")
        # The issue names one and four clients: the 4-client figure beside it.
        four = out["sqlite"].get("4", {})
        out["sqlite_tps_persist_4"] = four.get("tps_persist")
        out["sqlite_tps_fsync_4"] = four.get("tps_fsync")
        out["sqlite_speedup_4"] = four.get("speedup")
        out["sqlite_speedup_bound_4"] = four.get("speedup_bound")
        out["persist_vs_host_fdatasync"] = (out["persist_ms_p50"] / out["host_fdatasync_ms_p50"]
                                            if out.get("persist_ms_p50") and out["host_fdatasync_ms_p50"]
                                            else None)
        out["guest_aio"] = stock.get("aio")

        out["targets"] = {
            "persist_p50": judge(out["persist_vs_host_fdatasync"], lambda v: v <= 2.0),
            "sqlite": judge(out["sqlite_speedup"], lambda v: v >= 2.0),
            "sqlite_4": judge(out["sqlite_speedup_4"], lambda v: v >= 2.0),
        }
        return self.finish_run(out, t_start, print_table)


def fmt(v, spec=".3f", unit=""):
    return "-" if v is None else f"{v:{spec}}{unit}"


def print_table(out):
    ours, stock = out.get("ours") or {}, out.get("stock") or {}
    print()
    print(f"persist benchmark -- TCG guests (q35, -smp 1, {out['mem_mib']} MiB), same QEMU binary; "
          f"ours: PERSIST with checkpointing every {out['period_ms']} ms; stock: virtio-blk "
          f"cache=none aio={out.get('guest_aio') or '?'} on a raw ext4 image; both on the work dir's disk")
    w = 16
    print(f"{'latency (ms)':44}{'p50':>{w}}{'p99':>{w}}{'mean':>{w}}")
    h = out.get("host_fdatasync") or {}
    print(f"{'host: 4 KiB pwrite + fdatasync':44}{fmt(h.get('ms_p50')):>{w}}{fmt(h.get('ms_p99')):>{w}}"
          f"{fmt(h.get('ms_mean')):>{w}}")
    p = ours.get("lat", {}).get("persist") or {}
    print(f"{'guest: PERSIST (guest clock)':44}{fmt(p.get('guest_ms_p50')):>{w}}"
          f"{fmt(p.get('guest_ms_p99')):>{w}}{fmt(p.get('guest_ms_mean')):>{w}}")
    print(f"{'guest: PERSIST (+ pause the guest missed)':44}{fmt(out.get('persist_ms_p50')):>{w}}"
          f"{fmt(out.get('persist_ms_p99')):>{w}}{fmt(p.get('wall_ms_mean')):>{w}}")
    for kind in ("fsync", "fdatasync"):
        s = stock.get("lat", {}).get(kind) or {}
        print(f"{'guest: 4 KiB pwrite + ' + kind + ' (virtio-blk)':44}{fmt(s.get('guest_ms_p50')):>{w}}"
              f"{fmt(s.get('guest_ms_p99')):>{w}}{fmt(s.get('guest_ms_mean')):>{w}}")
    sync = out.get("synchronous") or {}
    print(f"SQLite, WAL: PERSIST side synchronous={sync.get('persist', '?')} + PERSIST after COMMIT "
          f"(group commit); fsync side synchronous={sync.get('fsync', '?')}")
    print(f"{'SQLite txn/s':44}{'PERSIST':>{w}}{'fsync':>{w}}{'speedup':>{w}}{'txns/epoch':>{w}}"
          f"{'no durability':>{w}}{'bound':>{w}}")
    for c, v in out.get("sqlite", {}).items():
        print(f"{'  ' + c + ' client(s), host-timed':44}{fmt(v['tps_persist'], '.0f'):>{w}}"
              f"{fmt(v['tps_fsync'], '.0f'):>{w}}{fmt(v['speedup'], '.2f', 'x'):>{w}}"
              f"{fmt(v.get('persist_txns_per_epoch'), '.2f'):>{w}}{fmt(v.get('tps_no_durability'), '.0f'):>{w}}"
              f"{fmt(v.get('speedup_bound'), '.2f', 'x'):>{w}}")
    print("  (no durability: the same guest and SQLite without PERSIST or sync, durable only by chance; "
          "bound = no durability / fsync, the most any durability mechanism could gain here)")
    print_targets(out, TARGETS)
    print(f"  persist p50 / host fdatasync p50 = {fmt(out.get('persist_vs_host_fdatasync'), '.2f', 'x')}")
    print_footer(out)


def main(argv):
    p = argparse.ArgumentParser(prog="bench/run persist", description=__doc__)
    p.add_argument("--clients", default="1,4", help="SQLite client counts; the first is the primary (default 1,4)")
    p.add_argument("--seconds", type=int, default=6, help="guest seconds per SQLite run (default 6)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds, each one VM of ours then one stock VM; figures are medians (default 3)")
    p.add_argument("--samples", type=int, default=500, help="guest latency samples (default 500)")
    p.add_argument("--host-samples", type=int, default=300, help="host fdatasync samples (default 300)")
    p.add_argument("--mem-mib", type=int, default=256, help="guest RAM in MiB (default 256)")
    p.add_argument("--out", help="work dir (default build/bench/persist-<time>)")
    o = p.parse_args(argv)
    o.clients = [int(x) for x in o.clients.split(",")]
    if not o.clients or min(o.clients) < 1 or max(o.clients) > 64:
        p.error("--clients: 1..64 each")
    return Bench(o).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
