# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/run checkpoint: continuous checkpointing (ours) against stock QEMU's
ways to save a running VM, on the same guest, QEMU binary and machine, in one
run. See bench/README.md for what is measured and how."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from benchlib import (BUILD, HOSTD, MACHINE_ARGS, QEMU, SLSCTL, BenchBase, BenchError, judge, Console, Qemu,
                      Qmp, histogram_diff, histogram_quantile, kill_pidfile, log, median, now,
                      slsctl_run_detached)

HOSTD_TOOL_DIRS = [os.path.join(BUILD, "meson", "hostd", "tools"), os.path.join(BUILD, "meson", "hostd")]

PERIOD_MS = 10
BOOT_TIMEOUT_S = 120       # boot + prefault of the dirty buffer (TCG: ~6 s)
SETTLE_S = 3               # after "ready": epoch 1 (full) and warm-up pass
PRE_WINDOW_S = 5           # stock: guest throughput before the mechanism runs
OFF_WINDOW_S = 8           # ours: throughput after sls-stop, same VM
ON2_WINDOW_S = 5           # ours: then on again (ABA pairing against drift)
MIGRATE_TIMEOUT_S = 60     # FACTS: a live save of a fast writer may never converge
SNAPSHOT_TIMEOUT_S = 90
SAVEVM_TIMEOUT_S = 90
HOSTD_TOOL_TIMEOUT_S = 120
RAW_SIZE = "1G"            # per raw run; the store runs write ~1.2 GiB (150 x 8 MiB)
MAX_BANDWIDTH = 1 << 40    # lift QEMU's 128 MiB/s default (libvirt does the same)

QUERY_SLS_NEEDS = ["stop-p50-ns", "stop-p99-ns", "stop-histogram", "epochs-per-s", "write-bandwidth",
                   "epochs-committed", "epochs-failed"]

TARGETS = {
    "stop_p50": "our stop p50 <= 1 ms at <= 2 MiB dirty per epoch",
    "stop_p99": "our stop p99 <= 5 ms at <= 2 MiB dirty per epoch",
    "slowdown": "guest slowdown with checkpointing at 100/s <= 10%",
    "vs_stock": "our stop p50 >= 10x lower than stock's best pause",
    "hostd_bw": "hostd write bandwidth >= 80% of a raw io_uring writer",
}


class Bench(BenchBase):
    def __init__(self, opts):
        super().__init__(opts, "checkpoint")
        self.mem = f"{opts.mem_mib}M"

    def append_line(self, rate):
        return f"console=ttyS0 quiet panic=-1 sls.run=dirty sls.args={rate},{self.o.buffer_mib}"

    # ------------------------------------------------------------ prerequisites

    def check_prereqs(self):
        self.check_image(["bin/sls-dirty"])

    # ------------------------------------------------------------ stock side

    def stock_argv(self, name, rate, extra=()):
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        argv = [QEMU, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
                *MACHINE_ARGS, "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", self.mem,
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-chardev", f"file,id=con0,path={d}/console.log", "-serial", "chardev:con0",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-kernel", self.kernel, "-initrd", self.initrd, "-append", self.append_line(rate),
                "-qmp", f"unix:{d}/qmp.sock,server=on,wait=off", "-pidfile", f"{d}/qemu.pid"]
        return d, argv + list(extra)

    def boot_stock(self, name, rate, extra=()):
        """Boots the plain VM (no slsvirt device), waits for the workload, and
        measures its throughput before the mechanism runs."""
        d, argv = self.stock_argv(name, rate, extra)
        vm = Qemu(argv, f"{d}/qemu.log")
        con = Console(f"{d}/console.log")
        try:
            con.wait_for("SLS: dirty rate=", BOOT_TIMEOUT_S, vm.alive)
            qmp = Qmp(f"{d}/qmp.sock")
            time.sleep(SETTLE_S)
            t0 = now()
            time.sleep(PRE_WINDOW_S)
            pre = con.rate(t0, now())
        except BaseException:
            con.close()
            vm.kill()
            raise
        return d, vm, con, qmp, pre

    def poll_migration(self, qmp, timeout):
        deadline = now() + timeout
        while True:
            info = qmp.cmd("query-migrate")
            status = info.get("status")
            if status == "completed":
                return info
            if status in ("failed", "cancelled"):
                raise BenchError(f"migration {status}: {info.get('error-desc', '')}")
            if now() > deadline:
                qmp.cmd("migrate_cancel")
                ram = info.get("ram", {})
                raise BenchError(f"did not complete within {timeout} s (status {status}, "
                                 f"{ram.get('transferred', 0) >> 20} MiB sent, "
                                 f"dirty rate {ram.get('dirty-pages-rate', '?')} pages/s); cancelled")
            time.sleep(0.02)

    def run_stock(self, mech, rate):
        self.stock_runs = getattr(self, "stock_runs", 0) + 1
        name = f"stock-{mech}-{rate}-{self.stock_runs}"
        log(f"{name}: booting plain QEMU (no slsvirt device), {self.mem}, sls-dirty {rate} KiB/10ms")
        extra = []
        if mech == "savevm":
            disk = os.path.join(self.work, name, "disk.qcow2")
            os.makedirs(os.path.dirname(disk), exist_ok=True)
            self.make_qcow2(disk)
            extra = ["-drive", f"if=none,id=disk0,file={disk},format=qcow2"]
        d, vm, con, qmp, pre = self.boot_stock(name, rate, extra)
        res = {"throughput_before_work_per_s": pre["work_per_s"]}
        qmp.events.clear()
        target = os.path.join(d, "state.bin")
        try:
            if mech == "savevm":
                t0 = now()
                out = qmp.hmp("savevm bench", timeout=SAVEVM_TIMEOUT_S)
                t1 = now()
                if out and out.strip():
                    raise BenchError(f"savevm said: {out.strip()}")
                status = qmp.cmd("query-status")["status"]
                if status != "running":
                    raise BenchError(f"VM is '{status}' after savevm")
                # savevm stops the VM for the whole save: the pause is its wall time.
                res.update(stop_ms=(t1 - t0) * 1000, total_ms=(t1 - t0) * 1000,
                           state_bytes=os.stat(disk).st_blocks * 512)
            else:
                caps = [{"capability": "mapped-ram" if mech == "migrate_mapped_ram"
                         else "background-snapshot", "state": True}]
                qmp.cmd("migrate-set-capabilities", {"capabilities": caps})
                qmp.cmd("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})
                t0 = now()
                qmp.cmd("migrate", {"uri": f"file:{target}"})
                info = self.poll_migration(qmp, MIGRATE_TIMEOUT_S if mech == "migrate_mapped_ram"
                                           else SNAPSHOT_TIMEOUT_S)
                t1 = now()
                if "downtime" not in info:
                    raise BenchError(f"query-migrate reports no downtime: {info}")
                res.update(stop_ms=float(info["downtime"]), total_ms=float(info.get("total-time", 0)),
                           state_bytes=os.stat(target).st_blocks * 512,
                           end_status=qmp.cmd("query-status")["status"])
            # QMP STOP/RESUME event timestamps (microseconds) bracket the
            # pause more finely than query-migrate's whole milliseconds.
            ev = event_pause_ms(qmp.events)
            if ev is not None:
                res["stop_ms_events"] = ev
                res["stop_ms_wall" if mech == "savevm" else "stop_ms_qemu"] = res["stop_ms"]
                res["stop_ms"] = ev
            # Guest throughput while a snapshot ran (the VM keeps running; a
            # migration ends with the VM stopped, so there it means nothing).
            if mech == "background_snapshot" and t1 - t0 >= 1.0:
                try:
                    during = con.rate(t0, t1)
                    res["throughput_during_ratio"] = during["work_per_s"] / pre["work_per_s"]
                except BenchError:
                    pass
            log(f"{name}: pause {res['stop_ms']:.1f} ms, total {res['total_ms'] / 1000:.2f} s")
            return res
        finally:
            qmp.close()
            con.close()
            vm.kill()
            for f in (target, os.path.join(d, "disk.qcow2")):
                if os.path.exists(f):
                    os.unlink(f)

    def run_stock_repeated(self, mech, rate, repeat):
        """Median of `repeat` runs, each in a fresh QEMU. A run that fails is
        kept in 'runs' with its reason; the median is over the others."""
        runs = []
        for i in range(repeat):
            try:
                runs.append(self.run_stock(mech, rate))
            except Exception as e:  # noqa: BLE001 -- reported, not raised
                self.error(f"stock {mech} at {rate} KiB/10ms (run {i + 1}/{repeat})", e)
                runs.append({"error": str(e)})
        ok = [x for x in runs if "stop_ms" in x]
        if not ok:
            return {"error": runs[-1]["error"], "runs": runs}
        res = {k: median([x[k] for x in ok if k in x])
               for k in ("stop_ms", "total_ms", "state_bytes", "throughput_before_work_per_s",
                         "throughput_during_ratio") if any(k in x for x in ok)}
        res["runs"] = runs
        res["stop_ms_runs"] = [x.get("stop_ms") for x in runs]
        return res

    def make_qcow2(self, path):
        """A small qcow2 for savevm's snapshot: qemu-img if there is one,
        else QMP blockdev-create in our own QEMU (no extra package needed)."""
        for img in [os.path.join(BUILD, "qemu", "src", "build", "qemu-img"), shutil.which("qemu-img")]:
            if img and os.access(img, os.X_OK):
                r = subprocess.run([img, "create", "-q", "-f", "qcow2", path, "64M"],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise BenchError(f"qemu-img create failed: {r.stderr.strip()}")
                return
        open(path, "wb").close()
        sock = path + ".qmp"
        vm = Qemu([QEMU, "-machine", "none", "-nodefaults", "-display", "none",
                   "-blockdev", f"driver=file,filename={path},node-name=f0",
                   "-qmp", f"unix:{sock},server=on,wait=off"], path + ".log")
        try:
            qmp = Qmp(sock)
            qmp.cmd("blockdev-create", {"job-id": "mk", "options": {
                "driver": "qcow2", "file": "f0", "size": 64 << 20}})
            deadline = now() + 30
            while True:
                jobs = {j["id"]: j for j in qmp.cmd("query-jobs")}
                job = jobs.get("mk")
                if job and job["status"] == "concluded":
                    if job.get("error"):
                        raise BenchError(f"blockdev-create qcow2: {job['error']}")
                    qmp.cmd("job-dismiss", {"id": "mk"})
                    break
                if now() > deadline:
                    raise BenchError("blockdev-create qcow2 did not finish within 30 s")
                time.sleep(0.05)
            qmp.cmd("quit")
            qmp.close()
        finally:
            vm.kill()
            for f in (sock, path + ".log"):
                if os.path.exists(f):
                    os.unlink(f)

    # ------------------------------------------------------------ our side

    def check_ours_available(self):
        r = subprocess.run([SLSCTL, "run", "--help"], capture_output=True, text=True)
        if "--period-ms" not in r.stdout + r.stderr:
            raise BenchError(f"continuous checkpointing not available: {SLSCTL} run has no --period-ms")
        r = subprocess.run([QEMU, "-device", "slsvirt-pci,help"], capture_output=True, text=True)
        if "period-ms" not in r.stdout + r.stderr:
            raise BenchError(f"continuous checkpointing not available: {QEMU} slsvirt-pci has no "
                             "period-ms property (rebuild QEMU with the engine's continuous mode)")

    def run_ours(self, rate, cow=True):
        """Our VM at @rate; cow=False copies pages while paused
        (slsvirt-pci copy-before-write=off) instead of after resuming."""
        name = f"ours-{rate}" + ("" if cow else "-copy")
        vmname = f"bench{rate}" + ("" if cow else "c")
        run_dir = os.path.join(self.work, name, "run")
        store = os.path.join(self.work, "store")
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        os.makedirs(store, exist_ok=True)
        env = dict(os.environ, SLSVIRT_RUN_DIR=run_dir, SLSVIRT_STORE_ROOT=store, SLSVIRT_QEMU=QEMU,
                   SLSVIRT_KERNEL=self.kernel, SLSVIRT_INITRD=self.initrd, SLSVIRT_HOSTD=HOSTD)
        env.pop("SLSVIRTD_FAULT", None)
        log(f"{name}: slsctl run --period-ms {PERIOD_MS}, {self.mem}, sls-dirty {rate} KiB/10ms")
        argv = [SLSCTL, "run", vmname, "--detach", "--mem", self.mem, "--period-ms", str(PERIOD_MS),
                "--append", self.append_line(rate)]
        if not cow:
            argv += ["--qemu-arg=-global", "--qemu-arg=slsvirt-pci.copy-before-write=off"]
        con = qmp = None
        try:
            _, alive = slsctl_run_detached(argv, env)
            con = Console(os.path.join(run_dir, f"{vmname}.console"))
            con.wait_for("SLS: dirty rate=", BOOT_TIMEOUT_S, alive)
            qmp = Qmp(os.path.join(run_dir, f"{vmname}.qmp"))
            s = qmp.cmd("query-sls")
            missing = [k for k in QUERY_SLS_NEEDS if k not in s]
            if missing:
                raise BenchError(f"query-sls lacks {', '.join(missing)} (engine's continuous mode "
                                 "stats not there yet)")
            time.sleep(SETTLE_S)
            # Stop statistics: the histogram's change over the window (steady
            # state only: no boot, no prefault, no full epoch 1).
            s0, t0 = qmp.cmd("query-sls"), now()
            samples = []
            while now() < t0 + self.o.window:
                time.sleep(1.0)
                samples.append(qmp.cmd("query-sls"))
            s1, t1 = samples[-1], now()
            res = self.ours_stats(s0, s1, samples, t1 - t0)
            if bool(s1.get("copy-before-write")) != cow:
                raise BenchError(f"query-sls copy-before-write={s1.get('copy-before-write')}, "
                                 f"asked for {cow}")
            on1 = con.rate(t0, t1)
            res["late_ticks_on"] = on1["late_ticks"]
            # Throughput, paired in this VM: on (the window above), off, on.
            qmp.cmd("sls-stop")
            res["tracking_while_off"] = self.wait_idle(qmp)
            t2 = now()
            time.sleep(OFF_WINDOW_S)
            off = con.rate(t2, now())
            qmp.cmd("sls-start", {"period-ms": PERIOD_MS})
            time.sleep(1.5)  # the first epoch after a restart may be full
            t3 = now()
            time.sleep(ON2_WINDOW_S)
            on2 = con.rate(t3, now())
            qmp.cmd("sls-stop")
            res["throughput_on_work_per_s"] = (on1["work_per_s"] + on2["work_per_s"]) / 2
            res["throughput_on_windows"] = [on1["work_per_s"], on2["work_per_s"]]
            res["throughput_off_same_vm_work_per_s"] = off["work_per_s"]
            if res["epochs_failed"]:
                self.error(name, f"{res['epochs_failed']} epochs failed in the window "
                           f"(last-error: {s1.get('last-error', '')!r})")
            log(f"{name}: stop p50 {res['stop_ms_p50']:.3f} ms, p99 {res['stop_ms_p99']:.3f} ms, "
                f"{res['epochs_per_s']:.1f} epochs/s")
            return res
        finally:
            if qmp:
                qmp.close()
            if con:
                con.close()
            kill_pidfile(os.path.join(run_dir, f"{vmname}.pid"))
            kill_pidfile(os.path.join(run_dir, "slsvirtd.pid"))
            shutil.rmtree(os.path.join(store, vmname), ignore_errors=True)

    @staticmethod
    def wait_idle(qmp):
        """After sls-stop: waits (at most 3 s) for the epoch in flight to
        finish; returns whether dirty tracking is still on."""
        deadline = now() + 3
        while True:
            s = qmp.cmd("query-sls")
            if s.get("backlog", 0) == 0 or now() > deadline:
                return bool(s.get("tracking"))
            time.sleep(0.05)

    @staticmethod
    def ours_stats(s0, s1, samples, secs):
        hist = histogram_diff(s1["stop-histogram"], s0["stop-histogram"])
        max_us = s1.get("max-stop-ns", 0) / 1000 or None
        p50 = histogram_quantile(hist, 0.50, max_us)
        p99 = histogram_quantile(hist, 0.99, max_us)
        if p50 is None:
            raise BenchError("no epoch was captured in the measuring window")
        epochs = s1["epochs-committed"] - s0["epochs-committed"]

        def mean(key):
            v = [x[key] for x in samples if key in x]
            return sum(v) / len(v) if v else None

        def delta(key):
            return s1[key] - s0[key] if key in s1 and key in s0 else None

        return {
            "stop_ms_p50": p50 / 1000, "stop_ms_p99": p99 / 1000,
            "stop_histogram_window": [b for b in hist if b["count"]],
            "engine_stop_ms_p50": s1["stop-p50-ns"] / 1e6, "engine_stop_ms_p99": s1["stop-p99-ns"] / 1e6,
            "engine_stop_ms_max": s1.get("max-stop-ns", 0) / 1e6,
            "epochs_in_window": epochs, "window_s": secs, "epochs_per_s": epochs / secs,
            "engine_epochs_per_s": mean("epochs-per-s"),
            "write_bandwidth_mib_s": (mean("write-bandwidth") or 0) / 2**20,
            "epochs_failed": delta("epochs-failed") or 0, "epochs_full": delta("epochs-full"),
            "ticks_skipped": delta("ticks-skipped"), "effective_period_ms": mean("effective-period-ms"),
            "pages_per_epoch": mean("last-epoch-pages"), "backlog_mean": mean("backlog"),
            "copy_before_write": bool(s1.get("copy-before-write")),
            "copy_window_ms_mean": (mean("last-copy-ns") or 0) / 1e6,
            "cow_pages": delta("cow-pages"), "cow_writer_copies": delta("cow-writer-copies"),
            "cow_retries": delta("cow-retries"), "cow_epochs": delta("cow-epochs"),
        }

    # ------------------------------------------------------------ hostd vs raw

    def find_tool(self, name):
        for d in HOSTD_TOOL_DIRS:
            p = os.path.join(d, name)
            if os.access(p, os.X_OK):
                return p
        return None

    def run_tool(self, name, args, scratch):
        """Runs a hostd tool; returns the JSON object of its last '{' line."""
        tool = self.find_tool(name)
        if not tool:
            raise BenchError(f"{name} not built (looked in {', '.join(HOSTD_TOOL_DIRS)})")
        argv = [tool] + args
        log(f"hostd: {' '.join(argv)}")
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=HOSTD_TOOL_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"{name} ran longer than {HOSTD_TOOL_TIMEOUT_S} s") from e
        finally:
            if os.path.isdir(scratch):
                shutil.rmtree(scratch, ignore_errors=True)
            elif os.path.exists(scratch):
                os.unlink(scratch)
        if r.returncode != 0:
            raise BenchError(f"{name} exited {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}")
        lines = [l for l in r.stdout.splitlines() if l.strip().startswith("{")]
        if not lines:
            raise BenchError(f"{name} printed no JSON object: {r.stdout.strip()[-300:]}")
        return json.loads(lines[-1])

    def run_hostd(self):
        """Raw io_uring sequential writer vs hostd's store writer, both on the
        store's filesystem, each buffered and O_DIRECT. Raw = the better raw
        mode (the disk's sequential bandwidth); hostd = the better store mode
        at 8 MiB per epoch, unpaced, counting page payload only."""
        base = os.path.join(self.work, "store")
        os.makedirs(base, exist_ok=True)
        raw = {"buffered": {"runs": []}, "direct": {"runs": []}}

        def raw_runs():
            for mode, extra in (("buffered", []), ("direct", ["--direct"])):
                f = os.path.join(base, f"rawbench-{mode}")
                raw[mode]["runs"].append(self.run_tool(
                    "sls-rawbench", ["--file", f, "--size", RAW_SIZE, "--block", "1M", "--qd", "8"] + extra, f))
                raw[mode]["bw_mib_s"] = median([float(x["mib_s"]) for x in raw[mode]["runs"]])

        raw_runs()  # before and after the store runs: the host disk's speed drifts
        store = {}
        for mode, dirty, epochs, extra in (("buffered", 8, 150, []), ("direct", 8, 150, ["--direct-io"]),
                                           ("buffered_1mib", 1, 300, [])):
            d = os.path.join(base, f"storebench-{mode}")
            store[mode] = self.run_tool("sls-storebench", ["--dir", d, "--epochs", str(epochs),
                                                           "--dirty-mib", str(dirty), "--ram-mib", "256"]
                                        + extra, d)
            store[mode]["bw_mib_s"] = float(store[mode]["data_mib_s"])
        raw_runs()
        raw_best = max(raw, key=lambda m: raw[m]["bw_mib_s"])
        store_best = max(("buffered", "direct"), key=lambda m: store[m]["bw_mib_s"])
        return {"raw_mib_s": raw[raw_best]["bw_mib_s"], "raw_mode": raw_best,
                "hostd_mib_s": store[store_best]["bw_mib_s"], "hostd_mode": store_best,
                "hostd_bw_ratio_vs_raw": store[store_best]["bw_mib_s"] / raw[raw_best]["bw_mib_s"],
                "ratio_same_mode": {m: store[m]["bw_mib_s"] / raw[m]["bw_mib_s"] for m in raw},
                "raw": raw, "store": store}

    # ------------------------------------------------------------ driver

    def run(self):
        o = self.o
        rates = o.rates
        out = {"benchmark": "checkpoint", "accel": "tcg", "machine": "q35", "smp": 1,
               "mem_mib": o.mem_mib, "buffer_mib": o.buffer_mib, "period_ms": PERIOD_MS,
               "primary_rate_kib": rates[0], "qemu": os.path.realpath(QEMU), "workdir": self.work,
               "rates": {}}
        t_start = now()
        try:
            self.check_prereqs()
        except BenchError as e:
            self.error("prerequisites", e)
            return self.finish(out, t_start)
        ours_ok = True
        if "ours" in o.parts:
            try:
                self.check_ours_available()
            except BenchError as e:
                self.error("ours", e)
                ours_ok = False
        for rate in rates:
            r = out["rates"][str(rate)] = {"ours": None, "ours_copy": None, "stock": {}}
            if "ours" in o.parts and ours_ok:
                try:
                    r["ours"] = self.run_ours(rate)
                except Exception as e:  # noqa: BLE001 -- any failure is reported, not raised
                    self.error(f"ours at {rate} KiB/10ms", e)
                if not o.no_copy_mode:
                    try:
                        r["ours_copy"] = self.run_ours(rate, cow=False)
                    except Exception as e:  # noqa: BLE001
                        self.error(f"ours (copy while paused) at {rate} KiB/10ms", e)
                    if r["ours_copy"]:
                        c = r["ours_copy"]
                        c["slowdown_ratio"] = 1 - c["throughput_on_work_per_s"] / \
                            c["throughput_off_same_vm_work_per_s"]
            if "stock" in o.parts:
                repeat = o.stock_repeat if rate == rates[0] else 1
                for mech in o.mechanisms:
                    r["stock"][mech] = self.run_stock_repeated(mech, rate, repeat)
            # Slowdown: paired on/off windows in our VM (robust to a busy
            # machine); cross-check against the plain VMs' pre-windows.
            offs = [m["throughput_before_work_per_s"] for m in r["stock"].values()
                    if "throughput_before_work_per_s" in m]
            r["throughput_off_plain_vm_work_per_s"] = median(offs)
            if r["ours"]:
                on = r["ours"]["throughput_on_work_per_s"]
                r["slowdown_ratio"] = 1 - on / r["ours"]["throughput_off_same_vm_work_per_s"]
                if offs:
                    r["slowdown_ratio_vs_plain_vm"] = 1 - on / median(offs)
            stops = {m: v["stop_ms"] for m, v in r["stock"].items() if "stop_ms" in v}
            if stops:
                best = min(stops, key=stops.get)
                r["stock_best_stop_ms"], r["stock_best_mechanism"] = stops[best], best
                if r["ours"]:
                    r["stop_ratio_vs_stock"] = stops[best] / max(r["ours"]["stop_ms_p50"], 1e-6)
                    r["stop_ratio_vs_stock_p99"] = stops[best] / max(r["ours"]["stop_ms_p99"], 1e-6)
        if "hostd" in o.parts:
            try:
                out["hostd"] = self.run_hostd()
            except BenchError as e:
                self.error("hostd vs raw", e)
                out["hostd"] = {"error": str(e)}
        return self.finish(out, t_start)

    def finish(self, out, t_start):
        prim = out["rates"].get(str(out["primary_rate_kib"]), {})
        ours = prim.get("ours") or {}
        out.update(
            stop_ms_p50=ours.get("stop_ms_p50"), stop_ms_p99=ours.get("stop_ms_p99"),
            epochs_per_s=ours.get("epochs_per_s"), slowdown_ratio=prim.get("slowdown_ratio"),
            stock_best_stop_ms=prim.get("stock_best_stop_ms"),
            stock_best_mechanism=prim.get("stock_best_mechanism"),
            stop_ratio_vs_stock=prim.get("stop_ratio_vs_stock"),
            hostd_bw_ratio_vs_raw=(out.get("hostd") or {}).get("hostd_bw_ratio_vs_raw"))
        bytes_per_epoch = out["primary_rate_kib"] * 1024
        small = bytes_per_epoch <= 2 << 20

        out["targets"] = {
            "stop_p50": judge(out["stop_ms_p50"], lambda v: small and v <= 1.0),
            "stop_p99": judge(out["stop_ms_p99"], lambda v: small and v <= 5.0),
            "slowdown": judge(out["slowdown_ratio"], lambda v: v <= 0.10),
            "vs_stock": judge(out["stop_ratio_vs_stock"], lambda v: v >= 10.0),
            "hostd_bw": judge(out["hostd_bw_ratio_vs_raw"], lambda v: v >= 0.80),
        }
        return self.finish_run(out, t_start, print_table)


def event_pause_ms(events):
    """ms from the first STOP event to the RESUME after it, or None."""
    def ts(e):
        return e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6
    stop = next((e for e in events if e.get("event") == "STOP"), None)
    if stop is None:
        return None
    resume = next((e for e in events if e.get("event") == "RESUME" and ts(e) >= ts(stop)), None)
    return None if resume is None else (ts(resume) - ts(stop)) * 1000


def fmt(v, spec=".2f", unit=""):
    if v is None:
        return "-"
    return f"{v:{spec}}{unit}"


def print_table(out):
    rates = list(out["rates"])
    w = 22
    print()
    print(f"checkpoint benchmark -- TCG guest (q35, -smp 1, {out['mem_mib']} MiB RAM), "
          f"sls-dirty over a {out['buffer_mib']} MiB buffer; same QEMU binary for both sides")
    print(f"{'':44}" + "".join(f"{str(int(r) // 1024) + ' MiB/10ms':>{w}}" for r in rates))

    def row(label, fn):
        cells = []
        for r in rates:
            try:
                cells.append(fn(out["rates"][r]))
            except (KeyError, TypeError):
                cells.append("-")
        print(f"{label:44}" + "".join(f"{c:>{w}}" for c in cells))

    def ours(k, spec=".3f", which="ours"):
        return lambda r: fmt((r.get(which) or {}).get(k), spec)

    def stock(m):
        def f(r):
            v = r["stock"].get(m)
            if v is None:
                return "-"
            runs = v.get("runs", [v])
            failed = sum(1 for x in runs if "error" in x)
            if "stop_ms" not in v:
                return f"failed {failed}/{len(runs)}"
            s = f"{v['stop_ms']:.1f}"
            if v.get("total_ms"):
                s += f" ({v['total_ms'] / 1000:.1f}s)"
            return s + (f" {failed}/{len(runs)} failed" if failed else "")
        return f

    row(f"ours: stop p50 ms (period {out['period_ms']} ms)", ours("stop_ms_p50"))
    row("ours: stop p99 ms", ours("stop_ms_p99"))
    row("ours: engine p50 / p99 ms (last 4096)", lambda r: (
        f"{r['ours']['engine_stop_ms_p50']:.3f} / {r['ours']['engine_stop_ms_p99']:.3f}")
        if r.get("ours") else "-")
    row("ours: stop max ms (engine, since boot)", ours("engine_stop_ms_max"))
    row("ours: epochs/s", ours("epochs_per_s", ".1f"))
    row("ours: write bandwidth MiB/s", ours("write_bandwidth_mib_s", ".1f"))
    row("ours: pages/epoch (mean)", ours("pages_per_epoch", ".0f"))
    row("guest work/s, checkpointing at 100/s", ours("throughput_on_work_per_s", ".0f"))
    row("guest work/s, off (same VM, sls-stop)", ours("throughput_off_same_vm_work_per_s", ".0f"))
    row("guest work/s, off (plain VMs, median)", lambda r: fmt(r.get("throughput_off_plain_vm_work_per_s"), ".0f"))
    row("slowdown (1 - on/off, same VM)", lambda r: fmt(r.get("slowdown_ratio"), ".1%"))
    row("slowdown vs plain VMs (cross-check)", lambda r: fmt(r.get("slowdown_ratio_vs_plain_vm"), ".1%"))
    row("ours: copy window ms (mean, after resume)", ours("copy_window_ms_mean"))
    row("ours: epochs copied after resume / all", lambda r: (
        f"{r['ours']['cow_epochs']} / {r['ours']['epochs_in_window']}") if r.get("ours") else "-")
    row("ours: pages copied by writers / retries", lambda r: (
        f"{r['ours']['cow_writer_copies']} / {r['ours']['cow_retries']}") if r.get("ours") else "-")
    row("copy while paused: stop p50 / p99 ms", lambda r: (
        f"{r['ours_copy']['stop_ms_p50']:.3f} / {r['ours_copy']['stop_ms_p99']:.3f}")
        if r.get("ours_copy") else "-")
    row("copy while paused: epochs/s", ours("epochs_per_s", ".1f", "ours_copy"))
    row("copy while paused: slowdown (same VM)", ours("slowdown_ratio", ".1%", "ours_copy"))
    row("stock runs per mechanism (median shown)", lambda r: str(max(
        (len(v.get("runs", [])) for v in r["stock"].values()), default=0)) if r["stock"] else "-")
    row("stock migrate mapped-ram: downtime ms (total)", stock("migrate_mapped_ram"))
    row("stock savevm (qcow2): pause ms", stock("savevm"))
    row("stock background-snapshot: downtime ms (total)", stock("background_snapshot"))
    row("stock bg-snapshot: guest work/s during / before",
        lambda r: fmt(r["stock"]["background_snapshot"].get("throughput_during_ratio"), ".0%"))
    row("stock best pause ms", lambda r: fmt(r.get("stock_best_stop_ms"), ".1f"))
    row("stock best / ours p50", lambda r: fmt(r.get("stop_ratio_vs_stock"), ".2f", "x"))
    h = out.get("hostd") or {}
    if "hostd_mib_s" in h:
        print(f"hostd store writer ({h['hostd_mode']}, 8 MiB epochs, unpaced) {h['hostd_mib_s']:.0f} MiB/s vs raw "
              f"io_uring sequential writer ({h['raw_mode']}) {h['raw_mib_s']:.0f} MiB/s = "
              f"{h['hostd_bw_ratio_vs_raw']:.0%}")
        st, rw = h["store"], h["raw"]
        print(f"  raw: buffered {rw['buffered']['bw_mib_s']:.0f}, direct {rw['direct']['bw_mib_s']:.0f} MiB/s;"
              f" store: buffered {st['buffered']['bw_mib_s']:.0f}, direct {st['direct']['bw_mib_s']:.0f},"
              f" 1 MiB epochs {st['buffered_1mib']['bw_mib_s']:.0f} MiB/s"
              f" ({st['buffered_1mib']['epochs_per_s']:.0f} epochs/s, commit p99"
              f" {st['buffered_1mib']['commit_ms_p99']:.1f} ms)")
    else:
        print(f"hostd vs raw writer: {h.get('error', 'not run')}")
    print(f"targets (primary rate {int(out['primary_rate_kib']) // 1024} MiB/10ms):")
    for k, text in TARGETS.items():
        v = out["targets"][k]
        print(f"  [{'MET' if v else 'not met' if v is False else 'unknown'}] {text}")
    for e in out["errors"]:
        print(f"  error: {e}")
    print(f"raw results: {out['workdir']}/result.json   elapsed {out['elapsed_s']} s")


def main(argv):
    p = argparse.ArgumentParser(prog="bench/run checkpoint", description=__doc__)
    p.add_argument("--mem-mib", type=int, default=1024, help="guest RAM in MiB (default 1024)")
    p.add_argument("--buffer-mib", type=int, default=256,
                   help="sls-dirty's rotating buffer in MiB (default 256)")
    p.add_argument("--rates", default="1024,8192",
                   help="dirty rates in KiB per 10 ms; the first is the primary one (default 1024,8192)")
    p.add_argument("--window", type=float, default=15.0, help="our measuring window in s (default 15)")
    p.add_argument("--parts", default="ours,stock,hostd", help="subset of ours,stock,hostd")
    p.add_argument("--no-copy-mode", action="store_true",
                   help="skip the second run of ours with copy-before-write=off (pages copied while "
                        "paused); the headline figures are copy-before-write's either way")
    p.add_argument("--mechanisms", default="migrate_mapped_ram,savevm,background_snapshot",
                   help="stock mechanisms to run")
    p.add_argument("--stock-repeat", type=int, default=3,
                   help="fresh-QEMU runs per stock mechanism at the primary rate, median taken "
                        "(other rates: 1; default 3)")
    p.add_argument("--out", help="work dir (default build/bench/checkpoint-<time>)")
    o = p.parse_args(argv)
    o.rates = [int(x) for x in o.rates.split(",")]
    o.parts = set(o.parts.split(","))
    o.mechanisms = o.mechanisms.split(",")
    bad = o.parts - {"ours", "stock", "hostd"}
    bad_m = set(o.mechanisms) - {"migrate_mapped_ram", "savevm", "background_snapshot"}
    if bad or bad_m:
        p.error(f"unknown part or mechanism: {', '.join(sorted(bad | bad_m))}")
    return Bench(o).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
