"""Packaging of the nkv Python binding: builds libnkv with cargo and ships it
inside the package, so ``pip install ./bindings/python`` needs no NKV_LIB.

Environment knobs (all optional):

- ``NKV_PREBUILT_LIB``: use this libnkv.so instead of building one;
- ``NKV_CARGO_PROFILE``: ``release`` (default) or ``debug`` (tests use it
  to reuse the library their own build made);
- ``NKV_STRIP``: ``0`` keeps the library's symbols and debug info (it is
  stripped by default).

The wheel is a platform wheel (``py3-none-<platform>``): it holds a native
library but no Python extension, so any Python 3 on that platform can load
it.
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def build_library() -> str:
    """Path of a freshly built (or prebuilt) libnkv.so."""
    prebuilt = os.environ.get("NKV_PREBUILT_LIB")
    if prebuilt:
        return prebuilt
    manifest = os.path.join(ROOT, "Cargo.toml")
    if not os.path.exists(manifest):
        raise SystemExit(
            "nkv: building the package needs the nkv source tree around it "
            f"({manifest} is missing), or NKV_PREBUILT_LIB=/path/to/libnkv.so"
        )
    cargo = shutil.which("cargo")
    if cargo is None:
        raise SystemExit(
            "nkv: building the package needs cargo (https://rustup.rs), "
            "or NKV_PREBUILT_LIB=/path/to/libnkv.so"
        )
    profile = os.environ.get("NKV_CARGO_PROFILE", "release")
    if profile not in ("release", "debug"):
        raise SystemExit(f"nkv: NKV_CARGO_PROFILE must be release or debug, not {profile!r}")
    command = [cargo, "build", "--lib", "--manifest-path", manifest]
    if profile == "release":
        command.append("--release")
    subprocess.check_call(command)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, profile, "libnkv.so")


class BuildWithLibrary(build_py):
    """build_py, plus libnkv.so copied into the package (then stripped)."""

    def run(self) -> None:
        super().run()
        library = build_library()
        destination = os.path.join(self.build_lib, "nkv", "libnkv.so")
        shutil.copyfile(library, destination)
        os.chmod(destination, 0o755)
        strip = shutil.which("strip")
        if os.environ.get("NKV_STRIP", "1") != "0" and strip is not None:
            subprocess.check_call([strip, "--strip-unneeded", destination])


commands = {"build_py": BuildWithLibrary}

try:  # setuptools >= 70.1 has bdist_wheel; older ones rely on `wheel`
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover - depends on the build environment
    try:
        from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]
    except ImportError:
        bdist_wheel = None  # type: ignore[assignment, misc]

if bdist_wheel is not None:

    class PlatformWheel(bdist_wheel):  # type: ignore[misc, valid-type]
        """Tags the wheel py3-none-<platform>: native code, no extension."""

        def finalize_options(self) -> None:
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):  # type: ignore[no-untyped-def]
            _, _, platform = super().get_tag()
            return "py3", "none", platform

    commands["bdist_wheel"] = PlatformWheel

class BinaryDistribution(Distribution):
    """Holds a native library: built and installed as platform files."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass=commands, distclass=BinaryDistribution)
