"""The rehearsal's figures: what the load saw in each scenario, checked against its rules.

Usage: figures.py WORK SCENARIO…

For each scenario, scripts/rehearse leaves in WORK: NAME.what (its title), NAME.figures (the
JSON rehearsal-load printed), NAME.marks (`KEY MILLISECONDS` since the load started, one a
line) and NAME.expect (rules, one a line), and WORK/groups maps target-group ARNs to the
Services they serve (`ARN SERVICE` lines). Rules:

  none KIND SERVICE FROM TO   no check-in of KIND (plain, header, any) answered by SERVICE
  some KIND SERVICE FROM TO   at least one did
  new-none VERSION FROM TO    no new connection answered by VERSION
  held VERSION                every held connection was on VERSION

FROM and TO are `start`, `end`, a mark, or `mark+seconds`. A window (FROM, TO] is counted in
whole seconds of the load's clock.

Prints a Markdown table and every broken rule; exits 1 on any failed request or connection,
dropped held connection or broken rule.
"""

import json
import math
import sys
from pathlib import Path


def main() -> int:
    work = Path(sys.argv[1])
    groups = {}
    if (work / "groups").exists():
        for line in (work / "groups").read_text().splitlines():
            if line.strip():
                arn, service = line.split()
                groups[arn] = service
    rows, broken = [], []
    for name in sys.argv[2:]:
        what = (work / f"{name}.what").read_text().strip()
        figures = json.loads((work / f"{name}.figures").read_text())
        marks = {}
        for line in (work / f"{name}.marks").read_text().splitlines():
            key, ms = line.split()
            marks[key] = int(ms) / 1000

        def at(point: str) -> float:
            if point == "start":
                return -math.inf
            if point == "end":
                return math.inf
            key, _, plus = point.partition("+")
            if key not in marks:
                raise SystemExit(f"{name}: rule names the mark {key!r}, which was not set")
            return marks[key] + float(plus or 0)

        problems = []
        if "sent" in figures:
            failed = figures["errors"] + sum(figures["server_errors"].values()) + figures["other"]
            by_service = {}
            for kind, answered in figures.get("groups", {}).items():
                for arn, seconds in answered.items():
                    service = groups.get(arn, arn)
                    by_service.setdefault(kind, {}).setdefault(service, []).extend(seconds)
            answered = "; ".join(
                f"{kind}: " + ", ".join(f"{s} {len(v)} s" for s, v in sorted(services.items()))
                for kind, services in sorted(by_service.items())
            )
            rows.append((what, f"{figures['sent']} check-ins", failed, "—",
                         f"{figures['longest_gap_ms']} ms", answered))
            if failed:
                problems.append(f"{failed} check-ins failed; first ones: " + " | ".join(figures["examples"]))
        else:
            failed = figures["new_failed"]
            answered = ", ".join(f"{v} {len(s)}" for v, s in sorted(figures["versions"].items()))
            held_on = ", ".join(f"{v} {n}" for v, n in sorted(figures.get("held_on", {}).items()))
            rows.append((what, f"{figures['held']} held (on {held_on}) + {figures['new']} new",
                         failed, figures["dropped"], "—", f"new connections answered by {answered}"))
            if failed or figures["dropped"]:
                problems.append(f"{failed} new connections failed, {figures['dropped']} held ones "
                                f"dropped; first ones: " + " | ".join(figures["examples"]))
        for rule in (work / f"{name}.expect").read_text().splitlines():
            words = rule.split()
            if not words:
                continue
            if words[0] in ("none", "some"):
                kind, service, start, end = words[1:]
                if service not in groups.values():
                    # A rule about a Service no target group serves would hold vacuously.
                    problems.append(f"rule {rule!r}: no target group serves {service}")
                    continue
                kinds = ["plain", "header"] if kind == "any" else [kind]
                seconds = [
                    s
                    for k in kinds
                    for arn, answered in figures.get("groups", {}).get(k, {}).items()
                    if groups.get(arn) == service
                    for s in answered
                    if at(start) < s <= at(end)
                ]
                if words[0] == "none" and seconds:
                    problems.append(f"{kind} check-ins reached {service} between {start} and {end}, "
                                    f"in seconds {sorted(set(seconds))[:10]} (marks: {marks})")
                if words[0] == "some" and not seconds:
                    problems.append(f"no {kind} check-in reached {service} between {start} and {end} "
                                    f"(marks: {marks})")
            elif words[0] == "new-none":
                version, start, end = words[1:]
                late = [s for s in figures["versions"].get(version, []) if at(start) < s <= at(end)]
                if late:
                    problems.append(f"new connections reached {version} between {start} and {end}, "
                                    f"in seconds {late[:10]} (marks: {marks})")
            elif words[0] == "held":
                on = figures.get("held_on", {})
                if on.get(words[1], 0) != figures["held"]:
                    problems.append(f"the held connections were on {on}, not all on {words[1]}")
            else:
                raise SystemExit(f"{name}: unknown rule {rule!r}")
        broken.extend(f"{what}: {p}" for p in problems)
    print("| scenario | load | failed | dropped | longest gap | answered by |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    for problem in broken:
        print(f"FAILED: {problem}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
