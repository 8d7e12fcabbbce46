"""The larger built-in data sets (Debian / npm packages), registered by name with the data set registry."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def register_builtin_sets(register: Callable[..., Any]) -> None:
    """Calls `register(name, loader, kind, description)` for each built-in set; loaders import lazily."""
    from modalign.data.cdda import CROSS_STYLE_TILESETS, load_cdda, load_cdda_categories

    register("cdda", load_cdda, "pairs",
             "Cataclysm: DDA item and monster sprites with their descriptions: ~26k pairs of ~4.4k things in 10 "
             "pixel-art tile sets; ?tilesets=A,B / ?exclude_tilesets=A hold styles out (apt: cataclysm-dda-data)")
    held_out = ",".join(CROSS_STYLE_TILESETS)
    register("cdda-instyle", functools.partial(load_cdda, exclude_tilesets=held_out), "pairs",
             f"cdda without the tile sets {held_out}: train here, test on cdda-xstyle for unseen styles")
    register("cdda-xstyle", functools.partial(load_cdda, tilesets=held_out), "pairs",
             f"cdda in the tile sets {held_out} only: the cross-style test (groups keep their names)")
    register("cdda-categories", load_cdda_categories, "labelled",
             "Cataclysm: DDA sprites labelled by item category (food, guns, clothing ... monster), for zero-shot")

    from modalign.data.openclipart import load_openclipart, load_openclipart_categories

    register("openclipart", load_openclipart, "pairs",
             "Open Clip Art Library drawings with a caption from title and keywords: ~3.5k pairs, public domain; "
             "icon themes, shapes, gradients and cards left out (apt: openclipart-png openclipart-svg)")
    register("openclipart-categories", load_openclipart_categories, "labelled",
             "Open Clip Art drawings labelled by category (animals, food, people ...), for zero-shot")

    from modalign.data.iconify import load_iconify, load_iconify_categories

    register("iconify", load_iconify, "pairs",
             "Iconify icons with name, set and category as caption: ~55k icons of 12 permissively licensed sets by "
             "default; iconify:SET,... or ?sets=all (~300k), ?per_set=N (npm: @iconify/json, `make data`)",
             qualifier="sets")
    register("iconify-categories", load_iconify_categories, "labelled",
             "Iconify icons labelled by their set's category (medical, weather, arrows ...), for zero-shot",
             qualifier="sets")

    from modalign.data.kgeography import load_kgeography, load_kgeography_flags

    register("kgeography", load_kgeography, "pairs",
             "KGeography: ~4k maps with one region highlighted and ~670 flags, with names and capitals; GPL-2+ "
             "(apt: kgeography-data)")
    register("kgeography-flags", load_kgeography_flags, "labelled",
             "KGeography flags labelled by region name (~660 classes), for zero-shot")

    from modalign.data.asterisk import load_asterisk_sounds

    register("asterisk-sounds", load_asterisk_sounds, "pairs",
             "Asterisk telephone prompts: ~570 real English recordings (audio column) with transcripts; "
             "CC-BY-SA-3.0; ?lang=fr with the French packages (apt: asterisk-core-sounds-en-wav asterisk-core-sounds-en)")

    from modalign.data.digits import load_digits

    register("digits", load_digits, "labelled",
             "scikit-learn's handwritten digits: 1,797 8x8 images of 0-9 (drawn as 32x32 blocks), for zero-shot; BSD")
