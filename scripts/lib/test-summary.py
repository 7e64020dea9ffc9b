#!/usr/bin/python3
"""Reads meson's testlog.json and prints slsvirt's verdict.

Usage: test-summary.py TESTLOG MESON_RC EXPECTED_SUITES [EXTRA_FAILURE...]

EXPECTED_SUITES is a comma-separated list of suites that must each have run at
least one test ("" = no such check). Each EXTRA_FAILURE is a reason counted as
one failed test (e.g. "setup failed"). The last line printed, alone, is
"N passed, N failed, N skipped"; exit status 0 only when nothing failed and
at least one test ran (passed or failed).
"""
import json
import os
import re
import subprocess
import sys

PASSED = {"OK", "EXPECTEDFAIL"}
SKIPPED = {"SKIP"}
# Everything else (FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS, INTERRUPT, ...) failed.


NAME_RE = re.compile(r"^([^:/ ]+):(\S*) / (.+)$")
_introspected = None


def introspect_suites(log_path):
    """{test name: [suite, ...]} from `meson introspect --tests`."""
    global _introspected
    if _introspected is None:
        _introspected = {}
        build_dir = os.path.dirname(os.path.dirname(os.path.abspath(log_path)))
        meson = os.environ.get("SLS_MESON", "/usr/bin/meson")
        try:
            out = subprocess.run([meson, "introspect", "--tests", build_dir],
                                 capture_output=True, text=True, timeout=60).stdout
            for t in json.loads(out or "[]"):
                _introspected[t["name"]] = [s.split(":", 1)[-1] for s in t.get("suite") or []]
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return _introspected


def split_name(entry, log_path):
    """(suites, bare name). meson names a test "project:suite1+suite2 / name"
    when the project has more than one suite, else just "name"."""
    name = entry.get("name", "?")
    m = NAME_RE.match(name)
    if m:
        return [s for s in m.group(2).split("+") if s], m.group(3)
    return introspect_suites(log_path).get(name, []), name


def last_line(text):
    lines = [l for l in (text or "").splitlines() if l.strip()]
    return lines[-1].strip()[:200] if lines else ""


def main(argv):
    log_path, meson_rc, expected = argv[1], int(argv[2]), argv[3]
    reasons = list(argv[4:])
    entries = []
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as e:
                    reasons.append(f"{log_path}:{n}: unreadable line ({e})")
    except OSError:
        if not reasons:  # else the reason given explains why there is no log
            reasons.append(f"meson test left no results in {log_path} (exit {meson_rc}): see its output above")
        expected = ""

    passed = failed = skipped = 0
    per_suite = {}
    for e in entries:
        res = e.get("result", "?")
        kind = "pass" if res in PASSED else "skip" if res in SKIPPED else "fail"
        if kind == "pass":
            passed += 1
        elif kind == "skip":
            skipped += 1
        else:
            failed += 1
        suites, name = split_name(e, log_path)
        where = "/".join(suites) or "(no suite)"
        for s in suites or ["(no suite)"]:
            c = per_suite.setdefault(s, {"pass": 0, "fail": 0, "skip": 0})
            c[kind] += 1
        if kind == "fail":
            why = last_line(e.get("stderr")) or last_line(e.get("stdout"))
            print(f"slsvirt: {res:<8} {where} / {name}" + (f": {why}" if why else ""))
        elif kind == "skip":
            why = last_line(e.get("stdout")) or last_line(e.get("stderr"))
            print(f"slsvirt: SKIP     {where} / {name}" + (f": {why}" if why else ""))

    for s in [s for s in expected.split(",") if s]:
        if s not in per_suite:
            reasons.append(f"suite '{s}' ran no test")
    if entries and meson_rc != 0 and failed == 0:
        reasons.append(f"meson test exited {meson_rc} although no test failed")
    if passed + failed == 0 and not reasons:
        reasons.append("no test ran")

    for s in sorted(per_suite):
        c = per_suite[s]
        print(f"slsvirt: suite {s:<12} pass {c['pass']:>3}  fail {c['fail']:>3}  skip {c['skip']:>3}")
    for r in reasons:
        print(f"slsvirt: FAILED: {r}")
    failed += len(reasons)
    sys.stdout.flush()
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
