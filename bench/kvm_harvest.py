# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/run kvm-harvest: one checkpoint epoch's dirty-page harvest + re-arm
under KVM, three ways at equal dirty sets: KVM_SLS_EPOCH_HARVEST (our
kvm-patches capability) vs stock KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG
vs the stock dirty ring (drain + KVM_RESET_DIRTY_RINGS). Runs the selftest-
style program sls_epoch_bench (kvm-patches/selftests) with the patched
modules in an L1 guest under TCG (tests/kvm-nested/run-l1), or directly
where /dev/kvm exists. Every epoch the program checks that each method
reported exactly the pages the guest wrote."""

import argparse
import os
import re
import subprocess
import sys

from benchlib import ROOT, BenchBase, BenchError, judge, log, now, print_footer, print_targets

METHODS = ("cap", "dirty_log", "dirty_ring")
STOCK = ("dirty_log", "dirty_ring")
TARGETS = {"harvest_4096": ">= 3x cheaper harvest + re-arm than the best stock method at 4096 pages"}
RESULT = re.compile(r"RESULT method=(\S+) pages=(\d+) slots=(\d+) harvest_us=([\d.]+) "
                    r"stop_us=([\d.]+) dirty_us=([\d.]+)(?: duplicates=(\d+))?(?: verify_us=([\d.]+))?")


class Bench(BenchBase):
    def __init__(self, opts):
        super().__init__(opts, "kvm-harvest")

    def run(self):
        t_start = now()
        o = self.o
        out = {"benchmark": "kvm-harvest", "workdir": self.work, "pages": o.pages,
               "epochs": o.epochs, "slots": o.slots, "memslot_mib": 1024,
               # run-l1's choice: directly only where the modules can be swapped.
               "where": "this host's /dev/kvm" if os.access("/dev/kvm", os.W_OK) and
               os.path.exists("/proc/modules") and os.environ.get("SLSVIRT_KVM_NESTED") != "l1"
               else "L1 guest under TCG (-cpu max, emulated SVM+NPT), nested KVM",
               "results": {}}
        cmd = [os.path.join(ROOT, "tests", "kvm-nested", "run-l1"), "--timeout", str(o.timeout),
               # ":" in lists: run-l1 passes its words with "," for spaces.
               "bench", "-p", ":".join(map(str, o.pages)), "-i", str(o.epochs),
               "-s", str(o.slots), "-m", ":".join(METHODS)]
        log("running " + " ".join(cmd))
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=o.timeout + 120)
            with open(os.path.join(self.work, "run-l1.log"), "w") as f:
                f.write(r.stdout + r.stderr)
            # Two runs per method and size (A B C C B A): their mean.
            runs = {}
            for m in RESULT.finditer(r.stdout):
                runs.setdefault((int(m.group(2)), m.group(1)), []).append(
                    (float(m.group(4)), float(m.group(5)), float(m.group(6)), int(m.group(7) or 0),
                     float(m.group(8) or 0)))
            for (pages, method), v in runs.items():
                out["results"].setdefault(str(pages), {})[method] = {
                    "harvest_us": sum(x[0] for x in v) / len(v), "stop_us": sum(x[1] for x in v) / len(v),
                    "dirty_us": sum(x[2] for x in v) / len(v), "duplicates": sum(x[3] for x in v),
                    # the program's own check of each epoch's list, left out of stop_us
                    "verify_us": sum(x[4] for x in v) / len(v),
                    "runs": len(v), "harvest_us_runs": [x[0] for x in v]}
            if r.returncode != 0:
                raise BenchError(f"run-l1 exit {r.returncode}: {(r.stderr or r.stdout).strip()[-600:]}")
        except (BenchError, subprocess.TimeoutExpired) as e:
            self.error("kvm-harvest", e)

        for pages, res in out["results"].items():
            for m in METHODS:
                if m not in res:
                    self.error(f"{pages} pages", f"no result for {m}")
            cap = res.get("cap", {})
            stock = [res[m] for m in STOCK if m in res]
            if cap and stock:
                best_h = min(s["harvest_us"] for s in stock)
                best_s = min(s["stop_us"] for s in stock)
                res["harvest_ratio_vs_best_stock"] = best_h / cap["harvest_us"] if cap["harvest_us"] else None
                res["stop_ratio_vs_best_stock"] = best_s / cap["stop_us"] if cap["stop_us"] else None

        main = out["results"].get("4096", {})
        for m in METHODS:
            out[f"harvest_us_{m}"] = main.get(m, {}).get("harvest_us")
            out[f"stop_us_{m}"] = main.get(m, {}).get("stop_us")
        out["harvest_ratio_vs_best_stock"] = main.get("harvest_ratio_vs_best_stock")
        out["stop_ratio_vs_best_stock"] = main.get("stop_ratio_vs_best_stock")
        out["targets"] = {"harvest_4096": judge(out["harvest_ratio_vs_best_stock"], lambda v: v >= 3.0)}
        return self.finish_run(out, t_start, print_table)


def fmt(v, spec=".1f", unit=""):
    return "-" if v is None else f"{v:{spec}}{unit}"


def print_table(out):
    print()
    print(f"kvm-harvest -- {out['where']}; {out['memslot_mib']} MiB in {out['slots']} dirty-logged "
          f"memslot(s), 1 vCPU, guest writes N pages spread evenly, vCPU stopped for the harvest; "
          f"mean of two runs (order A B C C B A) of the median of {out['epochs']} epochs (us)")
    w = 12
    print(f"{'pages':>8}{'method':>12}{'harvest':>{w}}{'stop':>{w}}{'dirty N':>{w}}{'x harvest':>{w}}{'x stop':>{w}}")
    for pages in sorted(out["results"], key=int):
        res = out["results"][pages]
        for m in METHODS:
            v = res.get(m) or {}
            hx = fmt(res.get("harvest_ratio_vs_best_stock"), ".2f", "x") if m == "cap" else ""
            sx = fmt(res.get("stop_ratio_vs_best_stock"), ".2f", "x") if m == "cap" else ""
            print(f"{pages:>8}{m:>12}{fmt(v.get('harvest_us')):>{w}}{fmt(v.get('stop_us')):>{w}}"
                  f"{fmt(v.get('dirty_us')):>{w}}{hx:>{w}}{sx:>{w}}")
    print("x = best stock / cap (higher is better for cap); 'dirty N' = the guest's KVM_RUN time to "
          "write the N pages, write-protection faults included")
    print_targets(out, TARGETS)
    print_footer(out)


def main(argv):
    p = argparse.ArgumentParser(prog="bench/run kvm-harvest", description=__doc__)
    p.add_argument("--pages", default="256,4096,65536", help="dirty set sizes (default 256,4096,65536)")
    p.add_argument("--epochs", type=int, default=15, help="measured epochs per point (default 15)")
    p.add_argument("--slots", type=int, default=1, help="memslots the 1 GiB is split into (default 1)")
    p.add_argument("--timeout", type=int, default=1500, help="seconds for the L1 run (default 1500)")
    p.add_argument("--out", help="work dir (default build/bench/kvm-harvest-<time>)")
    o = p.parse_args(argv)
    o.pages = [int(x) for x in o.pages.split(",")]
    if not o.pages or any(x < 1 or x > 65536 or 262144 % x for x in o.pages):
        p.error("--pages: powers of two from 1 to 65536")
    if o.slots not in (1, 2, 4, 8):
        p.error("--slots: 1, 2, 4 or 8")
    return Bench(o).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
