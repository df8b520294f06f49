#!/usr/bin/env python3
"""The layout rules of the house, checked on every test run (scripts/test.sh):

- no file under src/ over 600 lines (functions over 80 lines are clippy's too_many_lines);
- no circle between modules: among the children of any module, the imports (`crate::...` and
  `super::...` outside `#[cfg(test)]` blocks and test-only modules) form no cycle, so every
  arrow points one way.

Prints each violation and exits 1 if there is any."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
MAX_LINES = 600


def module_of(path):
    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def imports(path, module):
    text = open(path, encoding="utf-8").read()
    text = re.split(r"#\[cfg\(test\)\]\s*(?:pub\(crate\) )?mod ", text)[0]
    text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
    parent = module[:-1]
    found = {tuple(m.split("::")) for m in re.findall(r"crate::([a-z_]+(?:::[a-z_]+)*)", text)}
    found |= {parent + tuple(m.split("::")) for m in re.findall(r"\bsuper::([a-z_]+(?:::[a-z_]+)*)", text)}
    return found


def test_only_children(path, module):
    """The child modules `path` declares under `#[cfg(test)]`: test code may use anything."""
    text = open(path, encoding="utf-8").read()
    names = re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_]+)\s*;", text)
    return {module + (name,) for name in names}


def main():
    problems = []
    edges = {}
    test_only = set()
    for directory, _, files in os.walk(ROOT):
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            lines = sum(1 for _ in open(path, encoding="utf-8"))
            if lines > MAX_LINES:
                problems.append(f"{os.path.relpath(path)}: {lines} lines (at most {MAX_LINES})")
            module = module_of(path)
            edges[module] = imports(path, module)
            test_only |= test_only_children(path, module)
    for module in list(edges):
        if any(module[: len(t)] == t for t in test_only):
            edges[module] = set()
    modules = set(edges)

    def resolve(path):
        for i in range(len(path), 0, -1):
            if path[:i] in modules:
                return path[:i]
        return None

    for parent in {m[:-1] for m in modules if m}:
        depth = len(parent) + 1
        graph = {}
        for module, deps in edges.items():
            if len(module) < depth or module[: len(parent)] != parent:
                continue
            source = module[:depth]
            for dep in deps:
                target = resolve(dep)
                if target and len(target) >= depth and target[: len(parent)] == parent:
                    if target[:depth] != source:
                        graph.setdefault(source, set()).add(target[:depth])
        state = {}

        def visit(node, stack):
            state[node] = "open"
            stack.append(node)
            for nxt in sorted(graph.get(node, ())):
                if state.get(nxt) == "open":
                    cycle = stack[stack.index(nxt):] + [nxt]
                    problems.append("circle: " + " -> ".join("::".join(m) for m in cycle))
                elif nxt not in state:
                    visit(nxt, stack)
            stack.pop()
            state[node] = "done"

        for node in sorted(graph):
            if node not in state:
                visit(node, [])
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
