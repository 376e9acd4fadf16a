#!/usr/bin/env python3
"""Reports modules under src/actors and src/api that import each other (issue 11).

A module "imports" another when it names it through `crate::…`, `super::…` or `self::…`
paths (in `use` lines or inline), or, for a `mod.rs`, calls `child::function(…)`. Code after
the first `#[cfg(test)]` is ignored. Prints one line per pair and exits 1 when there is any.
Usage: module_cycles.py REPO_ROOT
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else '.') / 'src'
LAYERS = ('actors', 'api')


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] in ('mod', 'lib', 'main'):
        parts = parts[:-1]
    return '::'.join(parts)


MODULES = {module_name(p): p for p in ROOT.rglob('*.rs')}


def imports(name, path):
    text = path.read_text().split('#[cfg(test)]')[0]
    is_mod_rs = path.name == 'mod.rs'
    own = name.split('::') if name else []
    found = set()
    pattern = r'\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)*)(::\{)?'
    for used, brace in re.findall(pattern, text):
        if '::' not in used and not brace:
            continue
        segments = used.split('::')
        head, segments = segments[0], segments[1:]
        if head == 'crate':
            base = []
        elif head == 'self':
            base = own if is_mod_rs else own[:-1] + own[-1:]
        else:  # super: the parent of this module
            base = own[:-1]
            while segments and segments[0] == 'super':
                base, segments = base[:-1], segments[1:]
        full = base + segments
        for i in range(len(full), 0, -1):
            candidate = '::'.join(full[:i])
            if candidate in MODULES:
                if candidate != name:
                    found.add(candidate)
                break
    if is_mod_rs:
        for child in re.findall(r'\b([a-z_]+)::[a-z_]+\(', text):
            candidate = f'{name}::{child}' if name else child
            if candidate in MODULES:
                found.add(candidate)
    return found


def in_layers(name):
    return name.split('::')[0] in LAYERS


edges = {name: imports(name, path) for name, path in MODULES.items()}
pairs = sorted(
    (a, b)
    for a, deps in edges.items()
    for b in deps
    if in_layers(a) and in_layers(b) and a < b and a in edges.get(b, ())
)
for a, b in pairs:
    print(f'{a} <-> {b}')
sys.exit(1 if pairs else 0)
