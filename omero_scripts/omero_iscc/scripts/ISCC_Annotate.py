#!/usr/bin/env python
# -*- coding: utf-8 -*-
#
# Copyright (C) 2026 the omero-iscc authors.
# Licensed under the Apache License, Version 2.0.
"""
ISCC_Annotate.py: give every selected image its ISCC-SUM.

Computes the ISCC-SUM (ISO 24138: Data-Code + BLAKE3 Instance-Code) of each image's original
files, straight from the ManagedRepository (or through OMERO when the files cannot be read
there), and stores it on the image as a key-value annotation in the namespace
org.iscc.omero.sum. Images of one multi-series Fileset are hashed once and all annotated.
With Code = Pixels or Both, also (or only) the pixel code (IMAGEWALK): the image's planes as
OMERO decodes them, in the namespace org.iscc.omero.pixels.
"""

from omero import scripts
from omero.model import ImageI
from omero.rtypes import rlong, rstring

from omero_iscc import NAMESPACE, PIXELS_NAMESPACE, __version__, scripting
from omero_iscc.config import script_settings
from omero_iscc.jobs import CODE_CHOICES, annotate_job, codes_of
from omero_iscc.selection import DATA_TYPES

P_DATA_TYPE = "Data_Type"
P_IDS = "IDs"
P_REPLACE = "Replace_Existing"
P_WIDE = "Wide"
P_CODE = "Code"
P_SIMPRINTS = "Simprints"


def annotate_selection(omero_access, params, settings=None):
    """Annotates the selection; returns the message and a ``Result`` link to an annotated image."""
    settings = settings or script_settings()
    with settings.slot("ISCC_Annotate.py"):  # one script hashing per host at a time
        result = annotate_job(
            omero_access,
            params[P_DATA_TYPE],
            params[P_IDS],
            settings,
            replace=params.get(P_REPLACE, False),
            wide=params.get(P_WIDE, False),
            codes=codes_of(params.get(P_CODE, "Files")),
            simprints=params.get(P_SIMPRINTS, False),
        )
    first = result.first_annotated
    return result.message, ({"Result": ImageI(first, False)} if first is not None else {})


def run_script():
    client = scripts.client(
        "ISCC_Annotate.py",
        """Compute the ISCC-SUM of each selected image's original files and store it as a
key-value annotation (namespace org.iscc.omero.sum). Images that already have one are
skipped unless Replace_Existing is set.""",
        scripts.String(
            P_DATA_TYPE,
            optional=False,
            grouping="1",
            values=[rstring(t) for t in DATA_TYPES],
            default="Image",
            description="The type of the selected objects",
        ),
        scripts.List(P_IDS, optional=False, grouping="2", description="IDs of the selected objects").ofType(rlong(0)),
        scripts.Bool(
            P_REPLACE,
            grouping="3",
            default=False,
            description="Recompute images that already carry an ISCC; the old annotation is "
            "removed only after the new one is saved",
        ),
        scripts.Bool(
            P_WIDE,
            grouping="4",
            default=False,
            description="Wide 2x128-bit codes (ISCC:K4A...) instead of the ISO 24138 " "2x64-bit codes (ISCC:KUA...)",
        ),
        scripts.String(
            P_CODE,
            grouping="5",
            values=[rstring(c) for c in CODE_CHOICES],
            default="Files",
            description="Files: the code of the original files; Pixels: the code of the pixels "
            "as OMERO decodes them (the same image in any format gets the same one; reads every "
            "plane through the server); Both",
        ),
        scripts.Bool(
            P_SIMPRINTS,
            grouping="6",
            default=False,
            description="With the pixel code: also each plane's simprint, as a JSON file annotation",
        ),
        version=__version__,
        authors=["omero-iscc authors"],
        institutions=["omero-iscc"],
        namespaces=[NAMESPACE, PIXELS_NAMESPACE],
    )
    try:
        scripting.run(client, annotate_selection, "Nothing annotated")
    finally:
        client.closeSession()


if __name__ == "__main__":
    run_script()
