#!/usr/bin/env python3
"""Record Alembic's revision-graph answers as JSON fixtures for src/graph/alembic_tests.rs.

Re-run (from the repository root):

    python3 -m venv /tmp/alembic-venv && /tmp/alembic-venv/bin/pip install alembic
    /tmp/alembic-venv/bin/python tests/alembic/gen_fixtures.py

Writes tests/fixtures/alembic/<graph>.json. No database is needed: graphs are built directly as
alembic.script.revision.RevisionMap objects, plans come from RevisionMap.iterate_revisions (the path
ScriptDirectory._upgrade_revs/_downgrade_revs take), version-row effects from alembic.runtime.migration.HeadMaintainer
driven with an in-memory row set, stamp from ScriptDirectory._stamp_revs, history from ScriptDirectory.walk_revisions.

Some Alembic answers depend on Python's set iteration order (hash seeds). The generator therefore runs every
query under several PYTHONHASHSEED values and marks an answer "stable" only if all runs agree; the Rust test
compares unstable answers as sets.
"""

import json
import os
import subprocess
import sys
import types

SEEDS = ["0", "1", "2", "3", "4", "5"]

# (id, down_revisions, branch_labels, depends_on)
GRAPHS = {
    "linear": [
        ("aaaa1111", [], [], []),
        ("bbbb2222", ["aaaa1111"], [], []),
        ("cccc3333", ["bbbb2222"], [], []),
        ("dddd4444", ["cccc3333"], [], []),
    ],
    "branch_merge": [
        ("a0000001", [], [], []),
        ("b0000002", ["a0000001"], [], []),
        ("c0000003", ["b0000002"], [], []),
        ("d0000004", ["b0000002"], [], []),
        ("e0000005", ["d0000004"], [], []),
        ("f0000006", ["c0000003", "e0000005"], [], []),
        ("g0000007", ["f0000006"], [], []),
    ],
    "two_roots": [
        ("r1aa0001", [], [], []),
        ("r1bb0002", ["r1aa0001"], [], []),
        ("r2aa0001", [], [], []),
        ("r2bb0002", ["r2aa0001"], [], []),
        ("r2cc0003", ["r2bb0002"], [], []),
    ],
    "branch_labels": [
        ("base0001", [], [], []),
        ("acct0001", ["base0001"], ["accounts"], []),
        ("acct0002", ["acct0001"], [], []),
        ("bill0001", ["base0001"], ["billing"], []),
        ("bill0002", ["bill0001"], [], []),
        ("bill0003", ["bill0002"], [], []),
    ],
    "labelled_roots": [
        ("core0001", [], ["core"], []),
        ("core0002", ["core0001"], [], []),
        ("plug0001", [], ["plugin"], []),
        ("plug0002", ["plug0001"], [], []),
    ],
    "depends_across": [
        ("aone0001", [], ["alpha"], []),
        ("atwo0002", ["aone0001"], [], []),
        ("athr0003", ["atwo0002"], [], []),
        ("bone0001", [], ["beta"], []),
        ("btwo0002", ["bone0001"], [], ["atwo0002"]),
        ("bthr0003", ["btwo0002"], [], []),
    ],
    "depends_label": [
        ("xone0001", [], ["xray"], []),
        ("xtwo0002", ["xone0001"], [], []),
        ("yone0001", [], ["yank"], ["xray"]),
        ("ytwo0002", ["yone0001"], [], []),
    ],
    "merge_three": [
        ("root0001", [], [], []),
        ("left0002", ["root0001"], [], []),
        ("midd0002", ["root0001"], [], []),
        ("rght0002", ["root0001"], [], []),
        ("left0003", ["left0002"], [], []),
        ("join0004", ["left0003", "midd0002", "rght0002"], [], []),
        ("tail0005", ["join0004"], [], []),
    ],
    "diamond_depends": [
        ("top00001", [], [], []),
        ("lft00002", ["top00001"], [], []),
        ("rgt00002", ["top00001"], [], []),
        ("dep00003", ["lft00002"], [], ["rgt00002"]),
        ("mrg00004", ["dep00003", "rgt00002"], [], []),
        ("end00005", ["mrg00004"], [], []),
    ],
    "prefixes": [
        ("abc10001", [], [], []),
        ("abc20002", ["abc10001"], [], []),
        ("abd30003", ["abc20002"], [], []),
        ("xy", ["abd30003"], [], []),
    ],
}


def build(spec):
    from alembic.script.revision import Revision, RevisionMap

    class Rev(Revision):
        module = types.SimpleNamespace(upgrade=lambda: None, downgrade=lambda: None)
        doc = ""

    revs = [
        Rev(rid, tuple(down) or None, dependencies=tuple(deps) or None, branch_labels=tuple(labels) or None)
        for rid, down, labels, deps in spec
    ]
    rmap = RevisionMap(lambda: revs)
    rmap.heads  # noqa: B018, build eagerly
    return rmap


def error_kind(exc):
    from alembic.script.revision import MultipleHeads, RangeNotAncestorError, ResolutionError
    from alembic.util import CommandError

    if isinstance(exc, MultipleHeads):
        return "multiple_heads"
    if isinstance(exc, ResolutionError):
        return "resolution"
    if isinstance(exc, RangeNotAncestorError):
        return "range"
    if isinstance(exc, CommandError):
        cause = exc.__cause__
        return error_kind(cause) if cause is not None else "error"
    return "error"


def capture(fn):
    try:
        return {"ok": fn()}
    except Exception as exc:  # noqa: BLE001, every failure is an answer
        return {"error": error_kind(exc), "message": "%s: %s" % (type(exc).__name__, exc)}


def ids(revs):
    out = []
    for r in revs:
        if r is None or r == "base":
            out.append(None)
        else:
            out.append(r.revision)
    return out


def resolve(rmap, spec, rows):
    from alembic.script.revision import _relative_destination

    m = _relative_destination.match(spec)
    if m and int(m.group(3)) < 0:
        found = [rmap._parse_downgrade_target(tuple(rows), spec, True)[1]]
    elif m:
        found = list(rmap._parse_upgrade_target(tuple(rows), spec, True))
    else:
        found = list(rmap.get_revisions(spec))
    out = []
    for r in found:
        if r == "base":
            continue
        if r is None:
            raise RuntimeError("walked off the graph")
        out.append(r.revision)
    return out


class Maintainer:
    """HeadMaintainer with the SQL replaced by an in-memory row set (the bookkeeping logic is Alembic's)."""

    def __init__(self, heads):
        from alembic.runtime.migration import HeadMaintainer

        class Fake(HeadMaintainer):
            def __init__(self, heads):
                self.heads = set(heads)
                self.ops = []

            def _insert_version(self, v):
                assert v not in self.heads
                self.heads.add(v)
                self.ops.append(("insert", v))

            def _delete_version(self, v):
                self.heads.remove(v)
                self.ops.append(("delete", v))

            def _update_version(self, f, t):
                assert t not in self.heads
                self.heads.remove(f)
                self.heads.add(t)
                self.ops.append(("delete", f))
                self.ops.append(("insert", t))

        self.m = Fake(heads)

    def step(self, step):
        self.m.ops = []
        self.m.update_to_step(step)
        dele = [v for op, v in self.m.ops if op == "delete"]
        ins = [v for op, v in self.m.ops if op == "insert"]
        both = set(dele) & set(ins)
        return sorted(set(dele) - both), sorted(set(ins) - both)


def plan(rmap, rows, target, up):
    from alembic.runtime.migration import RevisionStep

    if up:
        revs = list(rmap.iterate_revisions(target, tuple(rows), implicit_base=True))
        revs.reverse()
    else:
        revs = list(rmap.iterate_revisions(tuple(rows), target, select_for_downgrade=True))
    m = Maintainer(rows)
    steps = []
    for r in revs:
        d, i = m.step(RevisionStep(rmap, r, up))
        steps.append({"revision": r.revision, "delete": d, "insert": i})
    return {"steps": steps, "rows_after": sorted(m.m.heads)}


def script_dir(rmap):
    from alembic.script import ScriptDirectory

    sd = object.__new__(ScriptDirectory)
    sd.revision_map = rmap
    return sd


def stamp(rmap, rows, targets, purge):
    heads = () if purge else tuple(rows)
    m = Maintainer(heads)
    for step in script_dir(rmap)._stamp_revs(tuple(targets), heads):
        m.m.update_to_step(step)
    return sorted(m.m.heads)


def history(rmap, rng, rows):
    base, head = rng.strip().split(":")
    sd = script_dir(rmap)
    if head == "current":
        head, base = tuple(rows), base
    elif base == "current":
        base = tuple(rows)
    return [r.revision for r in sd.walk_revisions(base=base or "base", head=head or "heads")]


def row_states(rmap, spec):
    """Version-row states Alembic itself reaches: upgrades from empty to each revision and to heads."""
    states = [[]]
    for rid, *_ in spec:
        r = capture(lambda rid=rid: plan(rmap, [], rid, True)["rows_after"])
        if "ok" in r and r["ok"] not in states:
            states.append(r["ok"])
    r = capture(lambda: plan(rmap, [], "heads", True)["rows_after"])
    if "ok" in r and r["ok"] not in states:
        states.append(r["ok"])
    return states


def graph_queries(name, spec):
    rmap = build(spec)
    all_ids = [s[0] for s in spec]
    labels = sorted({label for s in spec for label in s[2]})
    states = row_states(rmap, spec)
    specs = ["head", "heads", "base", "+1", "+2", "-1", "-2", "+9", "-9", "head-1", "heads-1", "heads+1",
             "zzzz", "a", "ab", "abc", "abc1", "abc2", "abd3", "xy", "x"]
    specs += all_ids + [i[:5] for i in all_ids] + [i + "+1" for i in all_ids] + [i + "-1" for i in all_ids]
    specs += [i + "@head" for i in all_ids[:3]]
    for label in labels:
        specs += [label, label + "@head", label + "@heads", label + "@base", label + "@+1", label + "@-1",
                  label + "@+2", label[:4]]
    specs = list(dict.fromkeys(specs))

    q = []
    for s in specs:
        for rows in states:
            q.append({"kind": "resolve", "spec": s, "rows": rows, "result": capture(lambda: resolve(rmap, s, rows))})
    up_targets = ["heads", "head", "+1", "+2", "-1", "base"] + all_ids + [label + "@head" for label in labels] + [
        label + "@+1" for label in labels
    ]
    down_targets = ["base", "-1", "-2", "+1"] + all_ids + [label + "@base" for label in labels] + [
        label + "@-1" for label in labels
    ]
    for rows in states:
        for t in up_targets:
            q.append({"kind": "upgrade", "rows": rows, "target": t, "result": capture(lambda: plan(rmap, rows, t, True))})
        for t in down_targets:
            q.append({"kind": "downgrade", "rows": rows, "target": t, "result": capture(lambda: plan(rmap, rows, t, False))})
        q.append({"kind": "applied", "rows": rows,
                  "result": capture(lambda: sorted(r.revision for r in rmap._get_ancestor_nodes(rmap.get_revisions(tuple(rows)))))})
        stamp_targets = [["heads"], ["base"], ["head"]] + [[i] for i in all_ids] + [[l + "@base"] for l in labels] + [
            [l + "@head"] for l in labels
        ]
        if len(all_ids) >= 2:
            stamp_targets.append([all_ids[0], all_ids[-1]])
        for ts in stamp_targets:
            for purge in (False, True):
                if purge and rows:
                    continue
                q.append({"kind": "stamp", "rows": rows, "targets": ts, "purge": purge,
                          "result": capture(lambda: stamp(rmap, rows, ts, purge))})
        for rng in ["base:heads", ":", "current:", ":current", "-2:", "-1:heads", "base:" + all_ids[1], all_ids[1] + ":",
                    all_ids[-1] + ":" + all_ids[0], "base:base"]:
            q.append({"kind": "history", "range": rng, "rows": rows, "result": capture(lambda: history(rmap, rng, rows))})
    info = {
        "heads": list(rmap.heads),
        "real_heads": list(rmap._real_heads),
        "bases": list(rmap.bases),
        "real_bases": list(rmap._real_bases),
    }
    return {"info": info, "queries": q}


def emit_raw():
    out = {name: graph_queries(name, spec) for name, spec in GRAPHS.items()}
    json.dump(out, sys.stdout)


def same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def main():
    import alembic

    runs = []
    for seed in SEEDS:
        env = dict(os.environ, PYTHONHASHSEED=seed)
        raw = subprocess.run([sys.executable, __file__, "--emit-raw"], env=env, check=True, capture_output=True, text=True)
        runs.append(json.loads(raw.stdout))
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = os.path.join(here, "..", "fixtures", "alembic")
    os.makedirs(outdir, exist_ok=True)
    for name, spec in GRAPHS.items():
        first = runs[0][name]
        queries = []
        for n, q in enumerate(first["queries"]):
            answers = [r[name]["queries"][n]["result"] for r in runs]
            # Messages can differ only in listing order; the stability verdict is about the answer.
            stable = all(same({k: v for k, v in a.items() if k != "message"}, {k: v for k, v in answers[0].items() if k != "message"}) for a in answers)
            queries.append(dict(q, stable=stable))
        doc = {
            "generator": "tests/alembic/gen_fixtures.py",
            "alembic_version": alembic.__version__,
            "graph": [{"id": i, "down_revisions": d, "branch_labels": l, "depends_on": dep} for i, d, l, dep in spec],
            "info": first["info"],
            "info_stable": all(same(r[name]["info"], first["info"]) for r in runs),
            "queries": queries,
        }
        with open(os.path.join(outdir, name + ".json"), "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        print("%s: %d queries, %d unstable" % (name, len(queries), sum(not q["stable"] for q in queries)))


if __name__ == "__main__":
    if "--emit-raw" in sys.argv:
        emit_raw()
    else:
        main()
