"""What `modalign datasets` says about each built-in data set: size, licence, where it comes from, and
whether it is installed here (without loading it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SetInfo:
    size: str  # e.g. "~26k pairs", as loaded by default
    licence: str
    install: str  # how to get it: "apt-get install X", "npm pack Y", "bundled"
    paths: tuple[str, ...] = ()  # it is installed when all of these exist (empty: see `installed`)

    def installed(self) -> bool:
        return all(Path(p).exists() for p in self.paths)


_TUX = SetInfo("700 pairs", "GPL-2", "apt-get install tuxpaint-stamps-default", ("/usr/share/tuxpaint/stamps",))
_FMNIST = SetInfo("", "MIT", "apt-get install dataset-fashion-mnist", ("/usr/share/datasets/fashion-mnist",))
_CDDA = SetInfo("", "CC-BY-SA-3.0", "apt-get install cataclysm-dda-data", ("/usr/share/games/cataclysm-dda/gfx",))
_CLIPART = SetInfo("", "public domain", "apt-get install openclipart-svg (+ openclipart-png)",
                   ("/usr/share/openclipart/svg",))
_KGEO = SetInfo("", "GPL-2+", "apt-get install kgeography-data", ("/usr/share/kgeography",))
_ICONIFY = SetInfo("", "per set",
                   "npm pack @iconify/json into ~/.cache/modalign/iconify (make data)")

INFO: dict[str, SetInfo] = {
    "tuxpaint": _TUX,
    "tuxpaint-sounds": SetInfo("135 triples", _TUX.licence, _TUX.install, _TUX.paths),
    "tuxpaint-categories": SetInfo("700 imgs, 15 cls", _TUX.licence, _TUX.install, _TUX.paths),
    "fashion-mnist": SetInfo("10k imgs, 10 cls", _FMNIST.licence, _FMNIST.install, _FMNIST.paths),
    "fashion-mnist:test": SetInfo("10k imgs, 10 cls", _FMNIST.licence, _FMNIST.install, _FMNIST.paths),
    "fashion-mnist:train": SetInfo("60k imgs, 10 cls", _FMNIST.licence, _FMNIST.install, _FMNIST.paths),
    "digits": SetInfo("1.8k imgs, 10 cls", "BSD-3-Clause", "bundled with scikit-learn"),
    "cdda": SetInfo("26k pairs", _CDDA.licence, _CDDA.install, _CDDA.paths),
    "cdda-instyle": SetInfo("21k pairs", _CDDA.licence, _CDDA.install, _CDDA.paths),
    "cdda-xstyle": SetInfo("5.7k pairs", _CDDA.licence, _CDDA.install, _CDDA.paths),
    "cdda-categories": SetInfo("26k imgs, 20 cls", _CDDA.licence, _CDDA.install, _CDDA.paths),
    "openclipart": SetInfo("3.5k pairs", _CLIPART.licence, _CLIPART.install, _CLIPART.paths),
    "openclipart-categories": SetInfo("3.3k imgs, 15 cls", _CLIPART.licence, _CLIPART.install, _CLIPART.paths),
    "kgeography": SetInfo("4.7k pairs", _KGEO.licence, _KGEO.install, _KGEO.paths),
    "kgeography-flags": SetInfo("670 imgs, 660 cls", _KGEO.licence, _KGEO.install, _KGEO.paths),
    "iconify": SetInfo("50k pairs (300k all)", _ICONIFY.licence, _ICONIFY.install),
    "iconify-categories": SetInfo("by sets", _ICONIFY.licence, _ICONIFY.install),
    "asterisk-sounds": SetInfo("570 audio pairs", "CC-BY-SA-3.0",
                               "apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en",
                               ("/usr/share/asterisk/sounds", "/usr/share/doc/asterisk-core-sounds-en")),
}


def is_installed(name: str) -> bool | None:
    """True / False for a built-in set; None when modalign cannot tell (a set it has no entry for)."""
    info = INFO.get(name)
    if info is None:
        return None
    if name.startswith("iconify"):
        from modalign.data.iconify import default_root
        from modalign.data.iconify_source import find_sources

        return bool(find_sources(default_root()) or find_sources(Path("node_modules")))
    if name == "digits":
        try:
            import sklearn  # noqa: F401
        except ImportError:
            return False
    return info.installed()
