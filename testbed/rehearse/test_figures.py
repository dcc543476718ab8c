"""figures.py must fail a rehearsal whose load saw what a player would notice, or traffic where a
scenario's rules forbid it. Run: python -m unittest testbed/rehearse/test_figures.py"""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

FIGURES = Path(__file__).with_name("figures.py")


def web(groups=None, errors=0):
    return {"sent": 100, "ok": 100 - errors, "errors": errors, "server_errors": {}, "other": 0,
            "longest_gap_ms": 40, "examples": ["at 3.0 s: refused"] if errors else [],
            "groups": groups or {}}


def tcp(held_on, versions, dropped=0):
    return {"held": sum(held_on.values()), "dropped": dropped, "held_on": held_on,
            "new": sum(len(s) for s in versions.values()), "new_failed": 0,
            "versions": versions, "examples": []}


class Figures(unittest.TestCase):
    def run_figures(self, figures, marks, rules):
        with tempfile.TemporaryDirectory() as work:
            w = Path(work)
            (w / "groups").write_text("arn:blue ct-blue\narn:green ct-green\n")
            (w / "s.what").write_text("scenario\n")
            (w / "s.figures").write_text(json.dumps(figures))
            (w / "s.marks").write_text("".join(f"{k} {ms}\n" for k, ms in marks.items()))
            (w / "s.expect").write_text("".join(f"{r}\n" for r in rules))
            done = subprocess.run([sys.executable, str(FIGURES), work, "s"],
                                  capture_output=True, text=True)
            return done.returncode, done.stdout

    def test_a_clean_release_passes(self):
        code, out = self.run_figures(
            web({"plain": {"arn:blue": [0, 1, 2, 3], "arn:green": [3, 4, 5, 6]}}),
            {"released": 3000},
            ["none any ct-blue released+2 end", "some plain ct-green released end"])
        self.assertEqual(code, 0, out)
        self.assertIn("| scenario | 100 check-ins | 0 |", out)

    def test_a_failed_request_fails(self):
        code, out = self.run_figures(web(errors=1), {}, [])
        self.assertEqual(code, 1)
        self.assertIn("1 check-ins failed", out)

    def test_traffic_to_the_old_slot_after_the_release_fails(self):
        code, out = self.run_figures(
            web({"plain": {"arn:blue": [0, 1, 2, 3, 9], "arn:green": [3, 4, 5, 6]}}),
            {"released": 3000}, ["none any ct-blue released+2 end"])
        self.assertEqual(code, 1)
        self.assertIn("reached ct-blue between released+2 and end, in seconds [9]", out)

    def test_a_header_rule_that_never_sent_anyone_to_the_canary_fails(self):
        code, out = self.run_figures(
            web({"header": {"arn:blue": [0, 1, 2]}}), {"canary": 0, "promote": 2500},
            ["some header ct-green canary promote"])
        self.assertEqual(code, 1)
        self.assertIn("no header check-in reached ct-green", out)

    def test_a_rule_about_a_service_without_a_target_group_is_not_vacuously_true(self):
        code, out = self.run_figures(web({"plain": {"arn:blue": [0]}}), {},
                                     ["none any ct- start end"])
        self.assertEqual(code, 1)
        self.assertIn("no target group serves ct-", out)

    def test_players_dropped_or_on_the_wrong_version_fail(self):
        code, out = self.run_figures(tcp({"v1": 9, "v2": 1}, {"v2": [1, 2]}), {},
                                     ["held v1"])
        self.assertEqual(code, 1)
        self.assertIn("not all on v1", out)
        code, out = self.run_figures(tcp({"v1": 10}, {"v1": [1], "v2": [5]}, dropped=1),
                                     {"released": 2000}, ["new-none v1 released+2 end"])
        self.assertEqual(code, 1)
        self.assertIn("1 held ones dropped", out)

    def test_a_new_connection_to_the_old_version_after_the_release_fails(self):
        code, out = self.run_figures(tcp({"v1": 10}, {"v1": [1, 2, 8], "v2": [5, 6]}),
                                     {"released": 4000}, ["new-none v1 released+2 end"])
        self.assertEqual(code, 1)
        self.assertIn("new connections reached v1 between released+2 and end, in seconds [8]", out)


if __name__ == "__main__":
    unittest.main()
