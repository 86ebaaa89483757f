"""Assemble the delta benchmark corpus: real consecutive releases of public binaries.

Each pair is a file from two consecutive releases of a public package, fetched from the
package registries (PyPI wheels, npm tarballs) with pip and npm, and pinned by sha256:
executables, shared libraries and an uncompressed package tar. Files land in bench/corpus/
(git-ignored); a pinned hash that does not match stops the script.

    python -m bench.corpus            # fetch what is missing, verify everything
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class Release:
    registry: str  # "pypi" (a wheel) or "npm" (a package tarball)
    package: str
    version: str
    member: str  # path inside the archive, or "*" for the whole package as an uncompressed tar
    sha256: str  # of the extracted file


@dataclass(frozen=True)
class Pair:
    name: str
    kind: str
    old: Release
    new: Release


WHEEL = "--platform=manylinux_2_17_x86_64"

PAIRS = [
    Pair(
        "ruff",
        "executable",
        Release(
            "pypi",
            "ruff",
            "0.6.8",
            "ruff-0.6.8.data/scripts/ruff",
            "a3865acd0a83a8a2404b21f9ff701fa51a4a9088b5602955cc574fb255242a9d",
        ),
        Release(
            "pypi",
            "ruff",
            "0.6.9",
            "ruff-0.6.9.data/scripts/ruff",
            "220456997fb316238b1f4e4ee3e44d385040b678f2ca615f9391ef79dabf0e87",
        ),
    ),
    Pair(
        "esbuild",
        "executable",
        Release(
            "npm",
            "@esbuild/linux-x64",
            "0.23.0",
            "package/bin/esbuild",
            "632bda406e338d3c5f332087171354595ded72a97a7defb47f5f47a0785d6363",
        ),
        Release(
            "npm",
            "@esbuild/linux-x64",
            "0.23.1",
            "package/bin/esbuild",
            "eff84696eb6f0eeef2964951767d290c222baa4a08c4ff9a48a94080325fef66",
        ),
    ),
    Pair(
        "numpy-core",
        "shared library",
        Release(
            "pypi",
            "numpy",
            "2.1.1",
            "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
            "3de16576e6c700902490112c547f0944fdf5f1ab5612e05004e358e673c765b7",
        ),
        Release(
            "pypi",
            "numpy",
            "2.1.2",
            "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
            "fc30bdf6199a1ffa6772deb5f364d616066a72f8537d494e7676594b1432f145",
        ),
    ),
    Pair(
        "cryptography-rust",
        "shared library",
        Release(
            "pypi",
            "cryptography",
            "43.0.0",
            "cryptography/hazmat/bindings/_rust.abi3.so",
            "1cc63b625986817fd20e48d052159a24d69f1507f8b41e3ffb7f715e022278c3",
        ),
        Release(
            "pypi",
            "cryptography",
            "43.0.1",
            "cryptography/hazmat/bindings/_rust.abi3.so",
            "f6f35493add191900db4717ae7cea84d5bd4507f2dc2c3ba72793cf5de3af322",
        ),
    ),
    Pair(
        "pydantic-core",
        "shared library",
        Release(
            "pypi",
            "pydantic-core",
            "2.23.3",
            "pydantic_core/_pydantic_core.cpython-311-x86_64-linux-gnu.so",
            "b14ad64c4a8cdca67710ace6d9b54009746c92b799a20ce387f67cf9b068e284",
        ),
        Release(
            "pypi",
            "pydantic-core",
            "2.23.4",
            "pydantic_core/_pydantic_core.cpython-311-x86_64-linux-gnu.so",
            "bcd09f7cbc3a434e8c27d069af635df6fbfe6f6eed6d08ea9685914ae222d28e",
        ),
    ),
    Pair(
        "typescript",
        "filesystem tar",
        Release(
            "npm",
            "typescript",
            "5.6.2",
            "*",
            "3c8bbde7a20c944becbafdc00eb96086a509ffebe1560b3a2faa5261ef379977",
        ),
        Release(
            "npm",
            "typescript",
            "5.6.3",
            "*",
            "5af0cc99b81eaea42daae41f273cc82628f8a11c12bfb00962b821853e81c1af",
        ),
    ),
]


def _download(release: Release, work: Path) -> bytes:
    if release.registry == "pypi":
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"{release.package}=={release.version}",
                "--no-deps",
                "--only-binary",
                ":all:",
                WHEEL,
                "--python-version",
                "3.11",
                "-d",
                str(work),
                "-q",
            ],
            check=True,
        )
        (wheel,) = work.glob("*.whl")
        with zipfile.ZipFile(wheel) as z:
            return z.read(release.member)
    subprocess.run(
        ["npm", "pack", f"{release.package}@{release.version}", "--silent"],
        check=True,
        cwd=work,
        stdout=subprocess.DEVNULL,
    )
    (tgz,) = work.glob("*.tgz")
    if release.member == "*":
        return gzip.decompress(tgz.read_bytes())
    with tarfile.open(tgz) as t:
        f = t.extractfile(release.member)
        assert f is not None
        return f.read()


def path_of(pair: Pair, which: str) -> Path:
    release = pair.old if which == "old" else pair.new
    return CORPUS / pair.name / f"{release.version}.bin"


def fetch(pair: Pair, which: str) -> Path:
    release = pair.old if which == "old" else pair.new
    path = path_of(pair, which)
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            data = _download(release, Path(tmp))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if release.sha256 and digest != release.sha256:
        raise SystemExit(f"{path}: sha256 {digest} differs from the pinned {release.sha256}")
    return path


def main() -> None:
    for pair in PAIRS:
        for which in ("old", "new"):
            path = fetch(pair, which)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            print(f"{pair.name:18} {which} {path.stat().st_size:>10,}  {digest}")


if __name__ == "__main__":
    main()
