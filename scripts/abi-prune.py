#!/usr/bin/env python3
"""Reduces an `abidw` dump of libhaquic to the public ABI.

`abidw` describes every translation unit in the library's DWARF: BoringSSL's
C and C++ declarations and haquic's internal Rust types, close to 2 MB of XML
that changes with every internal edit. The public ABI is much smaller: the
exported `haquic_*` functions (and variables, if any), and the types their
parameters and return values reach. This keeps exactly that closure, in the
same libabigail XML, so that the committed baseline (abi/libhaquic.abi) is
readable and only changes when the ABI does. `abidiff` compares the reduced
files as it compares full ones.

Rust methods (`member-function`) of the reached types are dropped: they are
not callable from C and are not part of the ABI.

    abi-prune.py FULL.abi > PUBLIC.abi
Exit status 1 when the dump has no exported function (an unusable dump,
e.g. a library built without debug information).
"""

import sys
import xml.etree.ElementTree as ET

# Elements that carry a type definition (identified by their `id`).
TYPE_TAGS = {
    "type-decl", "class-decl", "union-decl", "enum-decl", "typedef-decl",
    "pointer-type-def", "reference-type-def", "qualified-type-def",
    "array-type-def", "function-type", "pointer-to-member-type",
}


def referenced(elem):
    """type-ids an element's subtree refers to (excluding methods)."""
    out = set()
    stack = [elem]
    while stack:
        e = stack.pop()
        if e.tag == "member-function":
            continue
        tid = e.get("type-id")
        if tid:
            out.add(tid)
        stack.extend(list(e))
    return out


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    tree = ET.parse(argv[1])
    root = tree.getroot()

    # 1. the roots: declarations bound to an exported ELF symbol
    defs = {}       # type id -> [elements]
    exported = []
    for e in root.iter():
        if e.tag in TYPE_TAGS and e.get("id"):
            defs.setdefault(e.get("id"), []).append(e)
        elif e.tag in ("function-decl", "var-decl") and e.get("elf-symbol-id", "").startswith("haquic_"):
            exported.append(e)
    if not any(e.tag == "function-decl" for e in exported):
        print(f"abi-prune: {argv[1]} declares no exported haquic_* function "
              "(was the library built with debug information?)", file=sys.stderr)
        return 1

    # 2. the closure of the types they reach
    needed = set()
    work = set()
    for e in exported:
        work |= referenced(e)
    while work:
        tid = work.pop()
        if tid in needed:
            continue
        needed.add(tid)
        for d in defs.get(tid, []):
            work |= referenced(d) - needed

    keep_decls = {id(e) for e in exported}

    # 3. prune: keep what is needed, and the namespaces and translation
    #    units that still contain something
    def prune(parent):
        for child in list(parent):
            if child.tag in ("elf-needed", "elf-function-symbols", "elf-variable-symbols"):
                continue
            if child.tag == "member-function":
                parent.remove(child)
            elif child.tag in TYPE_TAGS:
                if child.get("id") in needed:
                    prune(child)
                else:
                    parent.remove(child)
            elif child.tag in ("function-decl", "var-decl") and parent.tag in ("abi-instr", "namespace-decl"):
                if id(child) not in keep_decls:
                    parent.remove(child)
            elif child.tag in ("abi-instr", "namespace-decl", "member-type"):
                prune(child)
                if len(child) == 0:
                    parent.remove(child)
            else:
                prune(child)

    prune(root)
    ET.indent(tree, space="  ")
    sys.stdout.write(ET.tostring(root, encoding="unicode") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
