"""Which subsets of a manifest a run trains or evaluates on: by name or by modality, with exclusions.

The paper's generalisation experiments train on one part of M3DS and test on another — Table 5
leaves one modality out of training and tests on it, Table 6 one dataset. ``resolve_subsets``
turns such a selection into the list of subset names, checked against the manifest's
``dataset_info.json``: a name that is not there is an error listing what is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from sim4seg.data.schema import DatasetInfo
from sim4seg.errors import InputError


def resolve_subsets(
    info: DatasetInfo,
    *,
    subsets: Sequence[str] | None = None,
    exclude_subsets: Sequence[str] | None = None,
    modalities: Sequence[str] | None = None,
    exclude_modalities: Sequence[str] | None = None,
    where: str | os.PathLike | None = None,
    what: str = "selection",
) -> list[str]:
    """The manifest's subsets kept by the selection, in manifest order.

    A subset is kept when it is in ``subsets`` (unset: all), its modality in ``modalities`` (unset:
    all), it is not in ``exclude_subsets`` and its modality not in ``exclude_modalities``. Unknown
    names, and a selection that keeps nothing, are ``InputError``s naming ``where`` and listing
    what the manifest holds.
    """
    names = list(info.subsets)
    present = sorted({s.modality for s in info.subsets.values()})
    for label, given, known in (
        ("subset", subsets, names),
        ("subset", exclude_subsets, names),
        ("modality", modalities, present),
        ("modality", exclude_modalities, present),
    ):
        unknown = [x for x in (given or ()) if x not in known]
        if unknown:
            raise InputError(
                f"{what}: unknown {label}(s) {', '.join(unknown)}; the manifest has {', '.join(known)}", where
            )
    kept = [
        n
        for n in names
        if (subsets is None or n in subsets)
        and (modalities is None or info.subsets[n].modality in modalities)
        and n not in (exclude_subsets or ())
        and info.subsets[n].modality not in (exclude_modalities or ())
    ]
    if not kept:
        raise InputError(
            f"{what} keeps no subset of the manifest (it has {', '.join(names)}; modalities {', '.join(present)})",
            where,
        )
    return kept
