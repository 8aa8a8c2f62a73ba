"""Mutation testing of the ROS-free core (mutmut 3, configured in setup.cfg [mutmut]) and its report.

  .venv/bin/python scripts/mutation.py run [--max-children N]   mutate core/, run its unit tests per mutant
  .venv/bin/python scripts/mutation.py report                   docs/mutation/report.{md,json} from mutants/

`run` needs `pip install mutmut==3.8.1` (requirements/mutation.txt) and takes tens of minutes on 2
cores. `report` counts killed / survived / timeout / no tests per file, lists every survivor with its
diff, and takes the equivalent mutants from docs/mutation/equivalent.yaml (name -> one-line reason,
plus the mutated line, so an entry goes stale, and counts as a survivor again, when the code moves).
The score is killed / (all checked - equivalent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "mutation"
EQUIVALENT = DOCS / "equivalent.yaml"
def mutmut(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], cwd=ROOT, check=not capture, text=True, capture_output=capture)


def results() -> dict[str, tuple[str, str]]:
    """mutant name -> (status, source file), from mutmut's .meta files and mutmut's own exit-code table."""
    from mutmut.__main__ import status_by_exit_code

    out = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        source = str(meta.relative_to(ROOT / "mutants"))[: -len(".meta")]
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[name] = (status_by_exit_code.get(code, "suspicious"), source)
    return out


def diff_of(name: str) -> str:
    shown = mutmut("show", name, capture=True).stdout
    return "\n".join(line for line in shown.splitlines()[1:] if line.startswith(("-", "+"))
                     and not line.startswith(("---", "+++")))


def report() -> dict:
    found = results()
    if not found:
        raise SystemExit("no mutmut results under mutants/: run `scripts/mutation.py run` first")
    equivalent = yaml.safe_load(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    per_file: dict[str, Counter] = {}
    survivors, equivalents, stale = [], [], []
    for name, (status, source) in found.items():
        counts = per_file.setdefault(source, Counter())
        if status == "survived":
            diff = diff_of(name)
            entry = equivalent.get(name)
            if entry and entry.get("mutated") and entry["mutated"].strip() in diff:
                status = "equivalent"
                equivalents.append({"name": name, "file": source, "reason": entry["reason"], "diff": diff})
            else:
                if entry:
                    stale.append(name)
                survivors.append({"name": name, "file": source, "diff": diff})
        counts[status] += 1
    total = Counter()
    for c in per_file.values():
        total.update(c)
    checked = sum(v for k, v in total.items() if k not in ("not checked", "skipped"))
    score = total["killed"] / max(checked - total["equivalent"], 1)
    return {"score": score, "total": dict(total), "per_file": {k: dict(v) for k, v in per_file.items()},
            "survivors": survivors, "equivalent": equivalents, "stale_equivalent_entries": stale}


def markdown(r: dict, first_run: dict | None, ran_on: str | None = None) -> str:
    cols = ["killed", "survived", "equivalent", "timeout", "no tests", "suspicious", "segfault"]
    lines = ["# Mutation testing of `mobile_vla_ros/core/`", "",
             "mutmut 3.8.1 (setup.cfg `[mutmut]`), the core's unit tests, `scripts/mutation.py run` then `report`.",
             "`core/tensorrt_backend.py` and `core/cuda_binding.py` are not mutated: they need TensorRT or a GPU.",
             *([f"Run on: {ran_on}."] if ran_on else []), "",
             f"**Score: {100 * r['score']:.1f} %** of non-equivalent mutants killed "
             f"({r['total'].get('killed', 0)} killed, {r['total'].get('survived', 0)} survived, "
             f"{r['total'].get('equivalent', 0)} equivalent)."]
    if first_run:
        first = first_run["total"]
        lines.append(f"First run, before the tests it prompted: {100 * first_run['score']:.1f} % "
                     f"({first.get('killed', 0)} killed, {first.get('survived', 0)} survived).")
    lines += ["", "| file | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for f, c in sorted(r["per_file"].items()):
        lines.append(f"| {f} | " + " | ".join(str(c.get(k, 0)) for k in cols) + " |")
    lines += ["", f"## Survivors ({len(r['survivors'])})", ""]
    for s in r["survivors"]:
        lines += [f"- `{s['name']}`", "", "```diff", s["diff"], "```", ""]
    lines += [f"## Equivalent mutants ({len(r['equivalent'])})", "",
              "Each changes no behaviour a caller can observe; the reason says why.", ""]
    for e in r["equivalent"]:
        lines += [f"- `{e['name']}`: {e['reason']}", "", "```diff", e["diff"], "```", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run")
    run.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    rep = sub.add_parser("report")
    rep.add_argument("--first-run", type=Path, default=None, help="report.json of an earlier run to show beside")
    rep.add_argument("--ran-on", default=None, help="the machine the run used, for the report")
    args = ap.parse_args()
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    if args.what == "run":
        mutmut("run", "--max-children", str(args.max_children))
        return 0
    r = report()
    first = json.loads(args.first_run.read_text()) if args.first_run else None
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "report.json").write_text(json.dumps(r, indent=1))
    (DOCS / "report.md").write_text(markdown(r, first, args.ran_on) + "\n")
    print(f"score {100 * r['score']:.1f} %: {r['total']}; wrote {DOCS}/report.md, report.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
