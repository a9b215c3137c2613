#!/usr/bin/env python3
"""Fails when the files of one crate import each other in a circle.

For every crate under crates/ and plugins/trigger-nats (or the crate directories given), each source
file is a module; an edge A -> B is any `crate::B...` path in A's code
(comments and `#[cfg(test)]` modules left out, since tests may reach
anywhere). Prints the cycles found, or one line per crate that has none.
"""
import os
import re
import sys


def modules(src_dir):
    found = {}
    for root, _, names in os.walk(src_dir):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src_dir)[:-3]
            parts = [p for p in rel.split(os.sep) if p != "mod"]
            mod = "::".join(parts)
            found["" if mod in ("lib", "main") else mod] = path
    return found


def code_of(path):
    text = open(path, encoding="utf-8").read()
    text = text.split("#[cfg(test)]")[0]
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def paths_in(code):
    """Every crate-relative path: `crate::a::b` and `use crate::{a::b, c}`."""
    out = set(re.findall(r"crate::((?:[a-z_][a-z0-9_]*)(?:::[a-z_][a-z0-9_]*)*)", code))
    for group in re.findall(r"crate::\{([^}]*)\}", code):
        for item in group.split(","):
            item = item.strip()
            if re.match(r"[a-z_]", item):
                out.add(item.split("::{")[0])
    return out


def edges(mods):
    graph = {}
    for mod, path in mods.items():
        targets = set()
        for p in paths_in(code_of(path)):
            parts = p.split("::")
            for n in range(len(parts), 0, -1):
                cand = "::".join(parts[:n])
                if cand in mods:
                    if cand != mod and cand != "" and not mod.startswith(cand + "::") and not cand.startswith(mod + "::" if mod else "\0"):
                        targets.add(cand)
                    break
        graph[mod] = targets
    return graph


def cycles(graph):
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)
    return found


def main(dirs):
    bad = 0
    for crate in dirs:
        src = os.path.join(crate, "src")
        if not os.path.isdir(src):
            continue
        found = cycles(edges(modules(src)))
        name = os.path.relpath(crate)
        for c in found:
            print(f"{name}: import cycle: {' -> '.join(c)}")
        bad += len(found)
        if not found:
            print(f"{name}: no import cycle")
    return 1 if bad else 0


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # The app's crates and the plugin's (its own workspace, plugins/trigger-nats).
    plugin = os.path.join(root, "plugins", "trigger-nats")
    args = sys.argv[1:] or sorted(
        [os.path.join(root, "crates", c) for c in os.listdir(os.path.join(root, "crates"))]
        + [plugin] + [os.path.join(plugin, c) for c in ("core", "redis", "sdk", "macro")]
    )
    sys.exit(main(args))
