#!/usr/bin/env python3
"""Builds a platform wheel of the nkv binding with a stripped libnkv.so.

    python3 bindings/python/build_wheel.py [--out DIR]

Runs ``pip wheel`` on this directory (setup.py builds libnkv with cargo,
release profile unless NKV_CARGO_PROFILE says otherwise, copies it into the
package and strips it), then checks what came out: one wheel tagged
``py3-none-<platform>`` (never ``py3-none-any``), holding ``nkv/libnkv.so``
without a symbol table or debug info. Prints the wheel's path.
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))


def check(wheel: str) -> None:
    name = os.path.basename(wheel)
    tag = name[: -len(".whl")].split("-")[-3:]
    if tag[:2] != ["py3", "none"] or tag[2] == "any":
        raise SystemExit(f"{name}: expected a py3-none-<platform> wheel")
    with zipfile.ZipFile(wheel) as z:
        if "nkv/libnkv.so" not in z.namelist():
            raise SystemExit(f"{name}: nkv/libnkv.so is missing")
        with tempfile.TemporaryDirectory() as tmp:
            lib = z.extract("nkv/libnkv.so", tmp)
            sections = subprocess.run(
                ["readelf", "-S", "-W", lib], check=True, capture_output=True, text=True
            ).stdout
    for section in (".symtab", ".debug_info"):
        if f" {section} " in sections:
            raise SystemExit(f"{name}: libnkv.so still has {section} (not stripped)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "dist"), help="output directory")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for old in glob.glob(os.path.join(args.out, "nkv-*.whl")):
        os.remove(old)
    env = dict(os.environ, NKV_STRIP="1")
    subprocess.check_call(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", args.out, HERE], env=env
    )
    wheels = glob.glob(os.path.join(args.out, "nkv-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in {args.out}, found {wheels}")
    check(wheels[0])
    print(wheels[0])


if __name__ == "__main__":
    main()
