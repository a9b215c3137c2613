#!/usr/bin/env python3
"""Fails when the files of one crate import each other in a circle, or when a
crate depends on one of ours the layering does not allow.

Import cycles: for every crate under crates/ and plugins/trigger-nats (or the
crate directories given), each source file is a module; an edge A -> B is any
`crate::B...` path in A's code (comments and `#[cfg(test)]` modules left out,
since tests may reach anywhere). Prints the cycles found, or one line per crate
that has none.

Crate layering (whole repository only, no arguments): every Cargo.toml under
crates/, components/, tools/, bench/ and fuzz/. Each names, in its
`[dependencies]` (optional and target-specific ones included), only crates of
ours that ALLOWED gives it: the layering docs/architecture.md draws. A crate of
ours is a path dependency (directly or through the root's
[workspace.dependencies]); dev-dependencies are left out, as tests may reach
anywhere. Also checked: ALLOWED itself has no cycle, and what REACH bounds (a
component's whole tree of ours, through the features its dependencies turn
on) holds nothing else. Each violation is printed, naming the crate, and the
script exits 1.
"""
import os
import re
import sys
import tomllib

# Which of our crates each crate may name in its [dependencies] (optional ones
# included). Keep in step with docs/architecture.md ("Crates"); a new arrow is a
# design change, made here and there together.
ALLOWED = {
    # crates/: the storage crates, lowest first
    "tasks-domain": set(),
    "tasks-kv": {"tasks-domain"},
    "tasks-feed": {"tasks-domain", "tasks-kv"},
    "tasks-read": {"tasks-domain", "tasks-kv"},
    "tasks-outbox": {"tasks-domain", "tasks-kv"},
    "tasks-cloud": {"tasks-domain", "tasks-kv"},
    "tasks-apply": {"tasks-domain", "tasks-kv", "tasks-feed", "tasks-read", "tasks-outbox"},
    "tasks-retry": {"tasks-domain", "tasks-kv", "tasks-feed", "tasks-outbox", "tasks-apply"},
    "tasks-cloud-flush": {"tasks-domain", "tasks-kv", "tasks-cloud", "tasks-outbox"},
    # crates/: the others
    "tasks-signing": set(),
    "tasks-cf-kv": set(),
    "tasks-proptest-kit": set(),
    "tasks-site": {"tasks-domain", "tasks-signing", "tasks-kv", "tasks-feed", "tasks-outbox"},
    # feature counters: tasks-feed; feature writer: tasks-feed, tasks-apply,
    # tasks-retry, tasks-signing, trigger-nats-sdk
    "tasks-spin-kv": {
        "tasks-domain", "tasks-kv", "tasks-cloud", "tasks-cf-kv",
        "tasks-feed", "tasks-apply", "tasks-retry", "tasks-signing", "trigger-nats-sdk",
    },
    # components/
    "tasks-web": {
        "tasks-domain", "tasks-site", "tasks-signing", "tasks-spin-kv",
        "tasks-kv", "tasks-read", "tasks-outbox", "tasks-feed",
    },
    "tasks-events": {"tasks-domain", "tasks-site", "tasks-spin-kv", "tasks-kv", "tasks-feed"},
    "tasks-kv-read": {"tasks-domain", "tasks-spin-kv", "tasks-kv", "tasks-read"},
    "tasks-writer": {"tasks-spin-kv", "tasks-feed", "trigger-nats-sdk"},
    "tasks-retrier": {
        "tasks-domain", "tasks-spin-kv", "tasks-kv", "tasks-feed",
        "tasks-apply", "tasks-retry", "tasks-cloud-flush",
    },
    # tools/, bench/, fuzz/
    "tasks-seed": {"tasks-domain", "tasks-kv"},
    "tasks-nats": set(),
    "tasks-sign": {"tasks-signing"},
    "tasks-cf-fault-proxy": {"tasks-cf-kv"},
    "ingest-baseline": {"tasks-domain", "tasks-seed"},
    "bench-writer-no-order-check": {"tasks-domain", "tasks-kv", "tasks-spin-kv", "trigger-nats-sdk"},
    "bench-hello-p2": set(),
    "bench-hello-p3": set(),
    "bench-hello-p3-kv": set(),
    "tasks-fuzz": {"tasks-domain", "tasks-signing", "tasks-site", "tasks-outbox"},
}

# Ours, but checked in their own workspace (plugins/trigger-nats): leaves here.
OUTSIDE = {"trigger-nats-sdk"}

# What a crate's whole tree may hold of ours, following its [dependencies] and
# the features they turn on (spin-kv's writer and counters features): kv-read
# links no event side (no writer, retrier, outbox or flush code).
REACH = {
    "tasks-kv-read": {
        "tasks-domain", "tasks-kv", "tasks-read", "tasks-spin-kv", "tasks-cloud", "tasks-cf-kv",
    },
}

# Folders whose subfolders are crates, and crates that stand alone.
CRATE_GROUPS = ("crates", "components", "tools", "bench")
CRATE_DIRS = ("fuzz",)


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


def ours(root):
    """Package name of each path dependency in the root's [workspace.dependencies]."""
    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        table = tomllib.load(f).get("workspace", {}).get("dependencies", {})
    return {key: spec.get("package", key) for key, spec in table.items()
            if isinstance(spec, dict) and "path" in spec}


def our_deps(table, workspace):
    """{package: spec} of the crates of ours in one dependency table."""
    out = {}
    for key, spec in table.items():
        if not isinstance(spec, dict):
            continue
        if spec.get("workspace") and key in workspace:
            out[workspace[key]] = spec
        elif "path" in spec:
            out[spec.get("package", key)] = spec
    return out


def manifests(root):
    """{package: (folder, [dependencies] of ours, [features])} of every
    crate under CRATE_GROUPS and CRATE_DIRS."""
    workspace = ours(root)
    dirs = [os.path.join(g, d) for g in CRATE_GROUPS
            for d in sorted(os.listdir(os.path.join(root, g)))] + list(CRATE_DIRS)
    out = {}
    for where in dirs:
        path = os.path.join(root, where, "Cargo.toml")
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        deps = our_deps(doc.get("dependencies", {}), workspace)
        for target in doc.get("target", {}).values():
            deps.update(our_deps(target.get("dependencies", {}), workspace))
        out[doc["package"]["name"]] = (where, deps, doc.get("features", {}))
    return out


def reach(start, crates):
    """Our crates in `start`'s tree: its [dependencies], then theirs, an
    optional one only when a feature turned on in the build enables it."""
    on = {start: {"default"}}
    changed = True
    while changed:
        changed = False
        for name in list(on):
            if name not in crates:
                continue
            _, deps, features = crates[name]
            wanted = {dep: set() for dep, spec in deps.items() if not spec.get("optional")}
            todo, done, weak = list(on[name]), set(), []
            while todo:
                feat = todo.pop()
                if feat in done:
                    continue
                done.add(feat)
                for item in features.get(feat, ()):
                    dep, _, sub = item.removeprefix("dep:").partition("/")
                    if dep.endswith("?"):
                        weak.append((dep[:-1], sub))
                    elif dep in features and not sub and not item.startswith("dep:"):
                        todo.append(dep)
                    elif dep in deps:
                        wanted.setdefault(dep, set()).update({sub} - {""})
            for dep, sub in weak:
                if dep in wanted:
                    wanted[dep].add(sub)
            for dep, feats in wanted.items():
                feats = feats | set(deps[dep].get("features", ()))
                if deps[dep].get("default-features", True):
                    feats.add("default")
                if not feats <= on.get(dep, set()):
                    on[dep] = on.get(dep, set()) | feats
                    changed = True
    return set(on) - {start}


def check_layering(root):
    bad = 0
    for c in cycles(ALLOWED):
        print(f"ALLOWED: dependency cycle: {' -> '.join(c)}")
        bad += 1
    crates = manifests(root)
    for name, (where, deps, _) in sorted(crates.items(), key=lambda c: c[1][0]):
        if name not in ALLOWED:
            print(f"{where}: crate {name} is not in the dependency table (scripts/check-imports.py ALLOWED)")
            bad += 1
            continue
        extra = sorted(set(deps) - ALLOWED[name])
        for dep in extra:
            print(f"{where}: {name} depends on {dep}, which the layering does not allow (scripts/check-imports.py ALLOWED, docs/architecture.md)")
        beyond = sorted(reach(name, crates) - REACH[name]) if name in REACH else []
        for dep in beyond:
            print(f"{where}: {name}'s dependency tree holds {dep}, beyond what it may reach (scripts/check-imports.py REACH)")
        bad += len(extra) + len(beyond)
        if not (extra or beyond):
            print(f"{where}: dependencies within the layering")
    for name in sorted(set(ALLOWED) - set(crates)):
        print(f"ALLOWED names {name}, which is no crate of this repository")
        bad += 1
    for name in sorted(set().union(*ALLOWED.values()) - set(ALLOWED) - OUTSIDE):
        print(f"ALLOWED lets a crate depend on {name}, which is not in the table")
        bad += 1
    return bad


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
    return bad


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # The app's crates and the plugin's (its own workspace, plugins/trigger-nats).
    plugin = os.path.join(root, "plugins", "trigger-nats")
    args = sys.argv[1:] or sorted(
        [os.path.join(root, "crates", c) for c in os.listdir(os.path.join(root, "crates"))]
        + [plugin] + [os.path.join(plugin, c) for c in ("core", "redis", "sdk", "macro")]
    )
    bad = main(args)
    if not sys.argv[1:]:
        bad += check_layering(root)
    sys.exit(1 if bad else 0)
