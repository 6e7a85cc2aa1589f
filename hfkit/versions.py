"""Which versions of hfkit's dependencies are installed, and how they compare with what was tested.

Two references: the ranges hfkit declares (read from the installed package's metadata, so they are exactly
`pyproject.toml`'s) and the lock that `make setup` and CI install (`requirements/lock.txt`, present in a source
checkout). `hfkit env` prints both comparisons; `make test-latest` uses `unbounded_requirements` to install the
newest releases. Imports no torch.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path

# Shown by `hfkit env` in this order, whether or not hfkit declares them directly.
KEY_PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "peft", "trl", "evaluate", "safetensors",
                "huggingface-hub", "typer", "deepspeed", "bitsandbytes")
LOCK_FILE = Path(__file__).resolve().parents[1] / "requirements" / "lock.txt"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def declared_requirements(extras: tuple[str, ...] = ()) -> list:
    """hfkit's own requirements (packaging `Requirement`s): the core ones, plus those of `extras`."""
    from packaging.requirements import Requirement

    out = []
    for text in md.requires("hfkit") or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            out.append(req)
    return out


def read_lock(path: Path = LOCK_FILE) -> dict[str, str]:
    """name -> pinned version, from a `name==version` requirements file (comments and markers ignored)."""
    if not path.is_file():
        return {}
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


@dataclass
class Row:
    name: str
    installed: str | None
    declared: str | None  # the range hfkit declares, None where it declares none
    locked: str | None

    @property
    def in_range(self) -> bool | None:
        if self.declared is None or self.installed is None:
            return None
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(self.declared).contains(_public(self.installed), prereleases=True)

    @property
    def matches_lock(self) -> bool | None:
        if self.locked is None or self.installed is None:
            return None
        return _public(self.installed) == _public(self.locked)


def _public(version: str) -> str:
    """2.13.0+cpu -> 2.13.0: a local build of a release counts as that release."""
    return version.split("+", 1)[0]


def report(extras: tuple[str, ...] = ("test", "plots", "deepspeed")) -> list[Row]:
    """One row per key package and per declared requirement."""
    ranges = {canonical(r.name): str(r.specifier) for r in declared_requirements(extras)}
    lock = read_lock()
    names = list(dict.fromkeys([canonical(n) for n in KEY_PACKAGES] + sorted(ranges)))
    return [Row(n, installed_version(n), ranges.get(n) or None, lock.get(n)) for n in names]


def unbounded_requirements(extras: tuple[str, ...] = ("test", "plots")) -> list[str]:
    """hfkit's requirements with every upper bound and pin removed: what the newest releases would be."""
    out = []
    for req in declared_requirements(extras):
        lower = [s for s in req.specifier if s.operator in (">=", ">", "~=")]
        spec = ",".join(f">={s.version}" if s.operator == "~=" else str(s) for s in lower)
        out.append(f"{req.name}{spec}")
    return out


if __name__ == "__main__":  # `python -m hfkit.versions`: the unbounded requirements, one a line (make test-latest)
    print("\n".join(unbounded_requirements()))
