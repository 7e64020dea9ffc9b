# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/run restore: starting a VM from a saved image -- slsvirt's lazy and
eager restore against stock QEMU's -incoming from a mapped-ram migration
file and libvirt's `virsh restore` -- on the same 1 GiB guest with a small
working set, in one run; then host memory for 1, 8 and 32 clones of one
epoch. See bench/README.md for what is measured and how."""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time

from benchlib import (MACHINE_ARGS, QEMU, SLSCTL, HOSTD, BenchBase, BenchError, Console, Qemu, Qmp, judge,
                      kill_pidfile, log, median, now)

BOOT_TIMEOUT_S = 120
PING_TIMEOUT_S = 60
MIGRATE_TIMEOUT_S = 120
MAX_BANDWIDTH = 1 << 40

TARGETS = {
    "first_instr": "first guest instruction <= 10 ms after the restore starts (QEMU up)",
    "speedup": "service ready >= 20x faster than stock QEMU -incoming (mapped-ram)",
    "clone": "each extra clone <= 10% of guest RAM until it writes",
}

PONG_RE = re.compile(rb"pong (\d+) ([0-9a-f]+)")


def ping(path, timeout=PING_TIMEOUT_S):
    """Connects to the service's socket chardev and sends one request;
    returns (host time the answer arrived, the answer)."""
    deadline = now() + timeout
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            break
        except OSError as e:
            s.close()
            if now() > deadline:
                raise BenchError(f"service socket {path}: {e}") from e
            time.sleep(0.002)
    try:
        s.settimeout(max(0.1, deadline - now()))
        s.sendall(b"ping\n")
        buf = b""
        while not PONG_RE.search(buf) or not buf.endswith(b"\n"):
            data = s.recv(256)
            if not data:
                raise BenchError(f"service socket {path} closed before answering")
            buf += data
        return now(), PONG_RE.search(buf)[2].decode()
    except socket.timeout as e:
        raise BenchError(f"service did not answer within {timeout} s") from e
    finally:
        s.close()


def pss_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise BenchError(f"no Pss in /proc/{pid}/smaps_rollup")


def mem_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return None


class Bench(BenchBase):
    def __init__(self, opts):
        super().__init__(opts, "restore")
        self.mem = f"{opts.mem_mib}M"
        self.run_dir = os.path.join(self.work, "run")
        self.store = os.path.join(self.work, "store")
        os.makedirs(self.run_dir, exist_ok=True)
        os.makedirs(self.store, exist_ok=True)
        self.env = dict(os.environ, SLSVIRT_RUN_DIR=self.run_dir, SLSVIRT_STORE_ROOT=self.store,
                        SLSVIRT_QEMU=QEMU, SLSVIRT_HOSTD=HOSTD, SLSVIRT_KERNEL=self.kernel,
                        SLSVIRT_INITRD=self.initrd)
        self.svc = os.path.join(self.run_dir, "svc.sock")
        self.started_daemons = []

    def append_line(self):
        # no_timer_check: on a loaded host a TCG guest can fail the IO-APIC
        # timer check and panic at boot (seen here); same line for every side.
        return f"console=ttyS0 quiet panic=-1 no_timer_check sls.run=service sls.args={self.o.ws_mib}"

    def slsctl(self, *args, timeout=120):
        r = subprocess.run([SLSCTL, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise BenchError(f"slsctl {' '.join(args)}: {(r.stderr or r.stdout).strip()[-500:]}")
        return r.stdout

    def kill_vm(self, vm, settle=True):
        kill_pidfile(os.path.join(self.run_dir, f"{vm}.pid"))
        if settle:
            # slsvirtd finishes the dead QEMU's session first; a QEMU that
            # says HELLO meanwhile is told -EBUSY and retries (100 ms steps).
            time.sleep(1.0)

    def qmp_vm(self, vm):
        return Qmp(os.path.join(self.run_dir, f"{vm}.qmp"))

    # ------------------------------------------------------------ ours

    def prepare_ours(self):
        """Boots the service VM under slsvirt, checkpoints it once it
        serves, records a working set from one lazy restore."""
        vm = "svc"
        log(f"ours: booting {vm} ({self.mem}, service working set {self.o.ws_mib} MiB)")
        console = os.path.join(self.run_dir, f"{vm}.console")
        self.slsctl("run", vm, "--detach", "--mem", self.mem, "--console", console,
                    "--append", self.append_line(),
                    "--qemu-arg", "-chardev", "--qemu-arg", f"socket,id=svc,path={self.svc},server=on,wait=off",
                    "--qemu-arg", "-device", "--qemu-arg", "isa-serial,chardev=svc", timeout=60)
        con = Console(console)
        try:
            con.wait_for("SLS: service ready", BOOT_TIMEOUT_S)
        finally:
            con.close()
        _, self.sum = ping(self.svc)
        out = self.slsctl("checkpoint", vm, timeout=300)
        self.epoch = int(re.search(r"epoch (\d+) durable", out)[1])
        self.kill_vm(vm)
        log(f"ours: epoch {self.epoch} durable; recording a working set from one lazy restore")
        self.slsctl("restore", vm, "--epoch", str(self.epoch), "--detach")
        ping(self.svc)
        self.ws = os.path.join(self.work, "svc.ws")
        self.slsctl("working-set", vm, self.ws)
        self.kill_vm(vm)
        return vm

    def restore_ours(self, vm, mode):
        """One restore: 'lazy', 'lazy_ws' (working set prefetched), 'eager',
        or 'lazy_pre' (into a QEMU `slsctl prestart` started beforehand,
        idle for --prestart-idle s before the clock starts)."""
        args = ["restore", vm, "--epoch", str(self.epoch), "--detach"]
        if mode == "eager":
            args.append("--eager")
        if mode == "lazy_ws":
            args += ["--working-set", self.ws]
        if mode == "lazy_pre":
            self.slsctl("prestart", vm, timeout=60)
            time.sleep(self.o.prestart_idle)
            args.append("--prestarted")
        t0 = now()
        out = self.slsctl(*args)
        m = re.search(r"to running: (\d+) ms \(QMP connect (\d+) ms, restore (\d+) ms\)" if mode == "lazy_pre"
                      else r"QEMU start to running: (\d+) ms \(QMP up (\d+) ms, restore (\d+) ms\)", out)
        if not m:
            raise BenchError(f"slsctl {' '.join(args)} printed no timing: {out.strip()[-300:]}")
        t_ready, answer = ping(self.svc)
        if answer != self.sum:
            raise BenchError(f"restored service answered sum {answer}, expected {self.sum}")
        # Pre-started, QEMU was up before the command: "first instruction"
        # is the whole command's QMP work (connect, sls-restore, cont).
        qmp_up = 0 if mode == "lazy_pre" else int(m[2])
        res = {"ready_ms": (t_ready - t0) * 1000, "running_ms": int(m[1]), "qmp_up_ms": qmp_up,
               "first_instr_ms": int(m[1]) - qmp_up}
        if mode != "eager":
            q = self.qmp_vm(vm)
            info = q.cmd("query-sls-restore")
            q.close()
            res.update(faults=info["faults"], pages_loaded=info["pages-loaded"],
                       prefetched=info["prefetched"], fault_ms=info["fault-ns"] / 1e6)
        self.kill_vm(vm)
        return res

    # ------------------------------------------------------------ stock QEMU

    def stock_argv(self, d, incoming):
        argv = [QEMU, "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
                *MACHINE_ARGS, "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", self.mem,
                "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-chardev", f"file,id=con0,path={d}/console.log", "-serial", "chardev:con0",
                "-chardev", f"socket,id=svc,path={d}/svc.sock,server=on,wait=off",
                "-device", "isa-serial,chardev=svc",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-kernel", self.kernel, "-initrd", self.initrd, "-append", self.append_line(),
                "-qmp", f"unix:{d}/qmp.sock,server=on,wait=off"]
        if incoming:
            argv += ["-incoming", "defer"]
        return argv

    def prepare_stock(self):
        d = os.path.join(self.work, "stock")
        os.makedirs(d, exist_ok=True)
        log("stock: booting plain QEMU (no slsvirt device), saving with migrate mapped-ram")
        vm = Qemu(self.stock_argv(d, False), f"{d}/qemu.log")
        con = Console(f"{d}/console.log")
        try:
            con.wait_for("SLS: service ready", BOOT_TIMEOUT_S, vm.alive)
            _, self.stock_sum = ping(f"{d}/svc.sock")
            q = Qmp(f"{d}/qmp.sock")
            q.cmd("migrate-set-capabilities",
                  {"capabilities": [{"capability": "mapped-ram", "state": True}]})
            q.cmd("migrate-set-parameters", {"max-bandwidth": MAX_BANDWIDTH})
            self.stock_file = f"{d}/state.bin"
            q.cmd("migrate", {"uri": f"file:{self.stock_file}"})
            deadline = now() + MIGRATE_TIMEOUT_S
            while q.cmd("query-migrate").get("status") != "completed":
                if now() > deadline:
                    raise BenchError("mapped-ram save did not complete")
                time.sleep(0.05)
            q.close()
        finally:
            con.close()
            vm.kill()
        return d

    def restore_stock(self, d, r, prestarted=False):
        """One stock restore: a new QEMU -incoming defer, migrate-incoming
        of the mapped-ram file, cont. prestarted: the QEMU was started and
        its QMP connected (mapped-ram capability set) --prestart-idle s
        before the clock starts, like ours with `slsctl prestart`."""
        sock = f"{d}/svc.sock"
        t0 = now()
        vm = Qemu(self.stock_argv(d, True), f"{d}/qemu-in-{r}{'-pre' if prestarted else ''}.log")
        try:
            q = Qmp(f"{d}/qmp.sock")
            t_up = now()
            q.cmd("migrate-set-capabilities",
                  {"capabilities": [{"capability": "mapped-ram", "state": True}]})
            if prestarted:
                time.sleep(self.o.prestart_idle)
                t0 = t_up = now()
            q.cmd("migrate-incoming", {"uri": f"file:{self.stock_file}"})
            deadline = now() + MIGRATE_TIMEOUT_S
            while q.cmd("query-migrate").get("status") != "completed":
                if now() > deadline or not vm.alive():
                    raise BenchError(f"incoming migration did not complete: {vm.log_tail()}")
                time.sleep(0.001)
            q.cmd("cont")
            t_run = now()
            t_ready, answer = ping(sock)
            if answer != self.stock_sum:
                raise BenchError(f"stock-restored service answered sum {answer}, expected {self.stock_sum}")
            q.close()
        finally:
            vm.kill()
        return {"ready_ms": (t_ready - t0) * 1000, "running_ms": (t_run - t0) * 1000,
                "qmp_up_ms": (t_up - t0) * 1000, "first_instr_ms": (t_run - t_up) * 1000}

    # ------------------------------------------------------------ libvirt

    def virsh(self, *args, timeout=120):
        r = subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise BenchError(f"virsh {args[0]}: {(r.stderr or r.stdout).strip()[-400:]}")
        return r.stdout

    def prepare_libvirt(self):
        if not shutil.which("virsh"):
            raise BenchError("virsh is not installed")
        try:
            self.virsh("version")
        except BenchError as e:
            if not self.o.start_libvirtd:
                raise BenchError(f"libvirtd does not answer on qemu:///system ({e}); the bench does not "
                                 "start the machine's shared system libvirtd unless --start-libvirtd is "
                                 "given") from e
            # FACTS.md: without systemd, virtlogd -d then libvirtd -d. Ours
            # to stop afterwards (by the pids they write).
            for daemon in ("virtlogd", "libvirtd"):
                subprocess.run([daemon, "-d", "-p", os.path.join(self.work, f"{daemon}.pid")], check=False)
                self.started_daemons.append(os.path.join(self.work, f"{daemon}.pid"))
            time.sleep(2)
            self.virsh("version")
        d = os.path.join(self.work, "libvirt")
        os.makedirs(d, exist_ok=True)
        os.chmod(self.work, 0o755)
        os.chmod(d, 0o777)   # libvirt's QEMU may run as another user
        self.dom = f"slsvirt-bench-{os.getpid()}"
        xml = f"""<domain type='qemu'>
  <name>{self.dom}</name>
  <memory unit='MiB'>{self.o.mem_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{self.kernel}</kernel><initrd>{self.initrd}</initrd>
    <cmdline>{self.append_line()}</cmdline></os>
  <cpu mode='custom'><model>max</model></cpu>
  <devices>
    <serial type='file'><source path='{d}/console.log'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='{d}/svc.sock'/><target port='1'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""
        with open(f"{d}/dom.xml", "w") as f:
            f.write(xml)
        log(f"libvirt: starting transient domain {self.dom}, saving with virsh save")
        self.virsh("create", f"{d}/dom.xml")
        con = Console(f"{d}/console.log")
        try:
            con.wait_for("SLS: service ready", BOOT_TIMEOUT_S)
            ping(f"{d}/svc.sock")
            self.libvirt_file = f"{d}/state.sav"
            self.virsh("save", self.dom, self.libvirt_file, timeout=300)
        except BaseException:
            subprocess.run(["virsh", "-c", "qemu:///system", "destroy", self.dom], capture_output=True)
            raise
        finally:
            con.close()
        return d

    def restore_libvirt(self, d):
        t0 = now()
        self.virsh("restore", self.libvirt_file, timeout=300)
        try:
            t_run = now()
            t_ready, answer = ping(f"{d}/svc.sock")
            if answer != self.sum:
                raise BenchError(f"virsh-restored service answered sum {answer}, expected {self.sum}")
        finally:
            subprocess.run(["virsh", "-c", "qemu:///system", "destroy", self.dom], capture_output=True)
        return {"ready_ms": (t_ready - t0) * 1000, "running_ms": (t_run - t0) * 1000}

    # ------------------------------------------------------------ clones

    def clone_density(self, vm, counts):
        """Host memory of K clones of one epoch: the sum of their QEMUs' PSS
        (shared pages split between the processes that map them) and the
        drop in MemAvailable."""
        res = {}
        for k in counts:
            prefix = f"c{k}"
            avail0 = mem_available_kib()
            t0 = now()
            self.slsctl("clone", f"{vm}@{self.epoch}", "--count", str(k), "--prefix", prefix,
                        timeout=120 + 10 * k)
            started = now() - t0
            pids = []
            for i in range(1, k + 1):
                with open(os.path.join(self.run_dir, f"{prefix}-{i}.pid")) as f:
                    pids.append(int(f.read().strip()))
            time.sleep(self.o.clone_settle)
            pss = sum(pss_kib(p) for p in pids)
            avail1 = mem_available_kib()
            rss = 0
            for p in pids:
                with open(f"/proc/{p}/status") as f:
                    rss += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            res[k] = {"pss_total_mib": pss / 1024, "pss_per_clone_mib": pss / 1024 / k,
                      "rss_total_mib": rss / 1024, "mem_available_drop_mib": (avail0 - avail1) / 1024,
                      "start_all_s": started}
            log(f"clones x{k}: PSS total {pss / 1024:.1f} MiB ({pss / 1024 / k:.1f} per clone), "
                f"naive RSS sum {rss / 1024:.1f} MiB, MemAvailable dropped {(avail0 - avail1) / 1024:.1f} MiB")
            for i in range(1, k + 1):
                self.kill_vm(f"{prefix}-{i}", settle=False)
            for i in range(1, k + 1):
                shutil.rmtree(os.path.join(self.store, f"{prefix}-{i}"), ignore_errors=True)
            shutil.rmtree(os.path.join(self.store, vm, "pins"), ignore_errors=True)
        return res

    # ------------------------------------------------------------ run

    def run(self):
        t_start = now()
        out = {"benchmark": "restore", "accel": "tcg", "mem_mib": self.o.mem_mib, "ws_mib": self.o.ws_mib,
               "rounds": self.o.rounds, "prestart_idle_s": self.o.prestart_idle, "targets": TARGETS}
        try:
            self.check_image(["bin/sls-service"])
        except BenchError as e:
            self.error("prerequisites", e)
            return self.finish(out, t_start)
        vm = d = None
        if "ours" in self.o.parts:
            try:
                vm = self.prepare_ours()
                out["epoch"] = self.epoch
            except BenchError as e:
                self.error("ours", e)
        if "stock" in self.o.parts:
            try:
                d = self.prepare_stock()
            except BenchError as e:
                self.error("stock", e)
        # Each round runs every side once, ours and stock in turn: the load
        # other users put on this machine changes within minutes, and a
        # side measured in a block of its own would get another machine.
        sides = []
        if vm:
            sides += [(f"ours_{m}", lambda r, m=m: self.restore_ours(vm, m))
                      for m in ("lazy", "lazy_ws", "lazy_pre", "eager")]
        if d:
            sides += [("stock_mapped_ram", lambda r: self.restore_stock(d, r)),
                      ("stock_mapped_ram_pre", lambda r: self.restore_stock(d, r, prestarted=True))]
        failed = set()
        for r in range(self.o.rounds):
            for key, restore in sides:
                part = key.split("_")[0]
                if part in failed:
                    continue
                try:
                    out.setdefault(key, []).append(restore(r))
                    log(f"{key} #{r + 1}: {out[key][-1]}")
                except BenchError as e:
                    self.error(part, e)
                    failed.add(part)
        if d:
            out["stock_state_bytes"] = os.stat(self.stock_file).st_blocks * 512
            os.unlink(self.stock_file)
        if "libvirt" in self.o.parts:
            try:
                d = self.prepare_libvirt()
                runs = []
                for r in range(self.o.rounds):
                    runs.append(self.restore_libvirt(d))
                    log(f"libvirt virsh restore #{r + 1}: {runs[-1]}")
                out["libvirt_restore"] = runs
                os.unlink(self.libvirt_file)
            except (BenchError, subprocess.TimeoutExpired) as e:
                self.error("libvirt", e)
        if "clones" in self.o.parts and vm:
            try:
                out["clones"] = self.clone_density(vm, [int(x) for x in self.o.clones.split(",")])
            except BenchError as e:
                self.error("clones", e)
        kill_pidfile(os.path.join(self.run_dir, "slsvirtd.pid"))
        for pidfile in reversed(self.started_daemons):
            kill_pidfile(pidfile)
        return self.finish(out, t_start)

    def finish(self, out, t_start):
        def med(key, field):
            runs = out.get(key)
            return median([r[field] for r in runs]) if runs else None

        out["restore_first_instr_ms"] = med("ours_lazy", "first_instr_ms")
        out["restore_first_instr_cold_ms"] = med("ours_lazy", "running_ms")
        out["restore_ready_ms"] = med("ours_lazy", "ready_ms")
        out["restore_ready_ws_ms"] = med("ours_lazy_ws", "ready_ms")
        out["eager_restore_ready_ms"] = med("ours_eager", "ready_ms")
        out["eager_first_instr_ms"] = med("ours_eager", "first_instr_ms")
        out["stock_restore_ready_ms"] = med("stock_mapped_ram", "ready_ms")
        out["stock_first_instr_ms"] = med("stock_mapped_ram", "first_instr_ms")
        out["libvirt_restore_ready_ms"] = med("libvirt_restore", "ready_ms")
        best = min([v for v in (out["restore_ready_ms"], out["restore_ready_ws_ms"]) if v is not None],
                   default=None)
        out["restore_best_ready_ms"] = best
        out["restore_speedup"] = (out["stock_restore_ready_ms"] / best
                                  if best and out["stock_restore_ready_ms"] else None)
        # Pre-started QEMU on both sides (ours: slsctl prestart; stock:
        # -incoming defer), the clock starting at the restore request.
        out["restore_ready_prestarted_ms"] = med("ours_lazy_pre", "ready_ms")
        out["restore_first_instr_prestarted_ms"] = med("ours_lazy_pre", "first_instr_ms")
        out["stock_restore_ready_prestarted_ms"] = med("stock_mapped_ram_pre", "ready_ms")
        out["stock_first_instr_prestarted_ms"] = med("stock_mapped_ram_pre", "first_instr_ms")
        out["restore_speedup_prestarted"] = (
            out["stock_restore_ready_prestarted_ms"] / out["restore_ready_prestarted_ms"]
            if out["restore_ready_prestarted_ms"] and out["stock_restore_ready_prestarted_ms"] else None)
        cl = out.get("clones") or {}
        counts = sorted(int(k) for k in cl)
        if len(counts) >= 2:
            lo, hi = counts[0], counts[-1]
            out["rss_per_extra_clone_mib"] = ((cl[hi]["pss_total_mib"] - cl[lo]["pss_total_mib"]) / (hi - lo))
            out["clone_pct_of_guest_ram"] = 100 * out["rss_per_extra_clone_mib"] / self.o.mem_mib
        else:
            out["rss_per_extra_clone_mib"] = None
            out["clone_pct_of_guest_ram"] = None
        out["meets"] = {
            "first_instr": judge(out["restore_first_instr_ms"], lambda v: v <= 10),
            "speedup": judge(out["restore_speedup"], lambda v: v >= 20),
            "clone": judge(out["clone_pct_of_guest_ram"], lambda v: v <= 10),
        }
        return self.finish_run(out, t_start, print_table)


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def print_table(out):
    print()
    print(f"bench/run restore: {out['mem_mib']} MiB guest (TCG), service working set {out['ws_mib']} MiB, "
          f"median of {out['rounds']} rounds; times from the restore command")
    print(f"{'mechanism':40} {'QEMU up->running ms':>20} {'spawn->running ms':>18} {'ready ms':>10}")

    def row(label, key):
        runs = out.get(key)
        if not runs:
            print(f"{label:40} {'(not measured)':>20}")
            return
        fi = median([r["first_instr_ms"] for r in runs]) if "first_instr_ms" in runs[0] else None
        print(f"{label:40} {fmt(fi):>20} {fmt(median([r['running_ms'] for r in runs])):>18} "
              f"{fmt(median([r['ready_ms'] for r in runs])):>10}")

    print("cold: the restore command starts QEMU")
    row("slsvirt lazy", "ours_lazy")
    row("slsvirt lazy + working-set prefetch", "ours_lazy_ws")
    row("slsvirt eager", "ours_eager")
    row("stock QEMU -incoming (mapped-ram file)", "stock_mapped_ram")
    row("libvirt virsh restore", "libvirt_restore")
    print(f"pre-started: QEMU was up and idle {out.get('prestart_idle_s')} s before the command; "
          "QEMU up->running = the whole command")
    row("slsvirt lazy (slsctl prestart)", "ours_lazy_pre")
    row("stock QEMU (-incoming defer)", "stock_mapped_ram_pre")
    if out.get("ours_lazy"):
        r = out["ours_lazy"][-1]
        print(f"  lazy: {r.get('faults')} faults, {r.get('pages_loaded')} pages loaded, "
              f"{fmt(r.get('fault_ms'))} ms serving faults (last round)")
    print(f"speedup vs stock (ready, best slsvirt lazy): {fmt(out.get('restore_speedup'), '.2f')}x")
    print(f"speedup vs stock, both pre-started (ready): {fmt(out.get('restore_speedup_prestarted'), '.2f')}x")
    cl = out.get("clones") or {}
    for k in sorted(cl, key=int):
        c = cl[k]
        print(f"clones x{k:<3} PSS total {c['pss_total_mib']:8.1f} MiB  per clone {c['pss_per_clone_mib']:7.1f} MiB  "
              f"(naive RSS sum {c['rss_total_mib']:8.1f} MiB, MemAvailable -{c['mem_available_drop_mib']:.0f} MiB)")
    print(f"host memory per extra clone: {fmt(out.get('rss_per_extra_clone_mib'))} MiB "
          f"({fmt(out.get('clone_pct_of_guest_ram'))}% of guest RAM)")
    for k, v in out["meets"].items():
        print(f"target {TARGETS[k]}: {'met' if v else ('not met' if v is not None else 'not measured')}")
    if out["errors"]:
        print("errors:", *out["errors"], sep="\n  ")


def main(argv):
    p = argparse.ArgumentParser(prog="bench/run restore", description=__doc__)
    p.add_argument("--mem-mib", type=int, default=1024, help="guest RAM in MiB (default 1024)")
    p.add_argument("--ws-mib", type=int, default=8, help="service working set in MiB (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="restores per mechanism, median taken (default 3)")
    p.add_argument("--clones", default="1,8,32", help="clone counts for the density part (default 1,8,32)")
    p.add_argument("--prestart-idle", type=float, default=1.0,
                   help="seconds a pre-started QEMU (ours and stock) idles before the restore (default 1)")
    p.add_argument("--clone-settle", type=float, default=3.0, help="seconds clones idle before measuring")
    p.add_argument("--parts", default="ours,stock,libvirt,clones", help="subset of ours,stock,libvirt,clones")
    p.add_argument("--start-libvirtd", action="store_true",
                   help="start virtlogd + libvirtd (system mode) if none answers, stop them afterwards")
    p.add_argument("--out", help="work dir (default build/bench/restore-<time>)")
    o = p.parse_args(argv)
    o.parts = set(o.parts.split(","))
    bad = o.parts - {"ours", "stock", "libvirt", "clones"}
    if bad:
        p.error(f"unknown part: {', '.join(sorted(bad))}")
    return Bench(o).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
