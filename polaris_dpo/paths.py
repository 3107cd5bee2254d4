"""Where things are: the package's bundled configs and assets, and resolution of data paths.

In the repo `polaris_dpo/conf` and `polaris_dpo/assets/pairs/demo` are links to the top-level `conf/` and
`pairs/demo/` (edited there); a built wheel holds copies of the files, so an installed package has its own.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
CONF_DIR = PACKAGE_DIR / "conf"


def asset(name: str = "") -> str:
    """Path of a bundled asset (the OmegaConf resolver `${assets:glaive}` calls this)."""
    return str(ASSETS_DIR / name) if name else str(ASSETS_DIR)


def resolve(path: str | None, root: str | None = None) -> Path | None:
    """`path` as given when absolute, else under `root` when one is set, else relative to the cwd."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_absolute() or root is None:
        return p
    return Path(root).expanduser() / p
