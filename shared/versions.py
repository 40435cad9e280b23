"""What code produced a result: the git revision of this checkout and the installed package versions.

Both stages record them (caption-set provenance, a training run's ``run_info.json``); this is the one
implementation.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def git_revision(path: str | Path = CHECKOUT) -> str:
    """``<hash>`` or ``<hash>-dirty`` of the checkout holding ``path``; ``"unknown"`` outside git."""
    try:
        run = dict(cwd=path, capture_output=True, text=True, timeout=10, check=True)
        head = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def library_versions(*packages: str, missing: str | None = None) -> dict[str, str]:
    """Installed versions of ``packages``; an absent one is left out, or given as ``missing`` when set."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if missing is not None:
                versions[name] = missing
    return versions
