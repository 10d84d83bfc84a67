#!/usr/bin/env python
# -*- coding: utf-8 -*-
#
# Copyright (C) 2026 the omero-iscc authors.
# Licensed under the Apache License, Version 2.0.
"""
ISCC_Find_Duplicates.py: images whose files are identical to, or near variants of, others.

Reads the ISCC annotations of the selection (or of every image you can see, Scope=Server),
groups identical images (same bytes) and near duplicates (Data-Codes at most Threshold bits
apart, e.g. re-saved or slightly edited files) with the worker's `similar` command; from the
pixel codes, where images have them, the same pixels in different files (one image in two
formats) and similar pixels, with each image's format; and attaches a CSV report. Images
without an ISCC are counted and named in the message.
"""

from omero import scripts
from omero.rtypes import rlong, rstring

from omero_iscc import NAMESPACE, __version__, scripting
from omero_iscc.config import script_settings
from omero_iscc.jobs import DUPLICATE_TYPES, SCOPES, duplicates_job

P_DATA_TYPE = "Data_Type"
P_IDS = "IDs"
P_SCOPE = "Scope"
P_THRESHOLD = "Threshold"
TYPES = DUPLICATE_TYPES
REPORT_NS = NAMESPACE + ".duplicates"


def duplicates_of(omero_access, params, settings=None):
    """Returns the message and the CSV report (``File_Annotation``)."""
    settings = settings or script_settings()
    with settings.slot("ISCC_Find_Duplicates.py"):  # one script running the worker per host at a time
        result = duplicates_job(
            omero_access,
            params[P_DATA_TYPE],
            params.get(P_IDS) or [],
            settings,
            scope=params.get(P_SCOPE, "Selection"),
            threshold=int(params.get(P_THRESHOLD, 12)),
        )
    target = params[P_IDS][0] if params.get(P_IDS) else None
    outputs, note = scripting.attach_report(
        omero_access, params[P_DATA_TYPE], target, "iscc_duplicates.csv", result.report, REPORT_NS
    )
    return result.message + note, outputs


def run_script():
    client = scripts.client(
        "ISCC_Find_Duplicates.py",
        """Find images whose files are identical to another image's, and near duplicates
(re-saved, edited, extended files), from their ISCC annotations; and, from their pixel codes,
the same pixels in different files (the same image in two formats) and similar pixels.
Scope=Server looks at every image you can see. Attaches a CSV report to the first selected
object.""",
        scripts.String(
            P_DATA_TYPE,
            optional=False,
            grouping="1",
            values=[rstring(t) for t in TYPES],
            default="Dataset",
            description="The type of the selected objects",
        ),
        scripts.List(P_IDS, optional=False, grouping="2", description="IDs of the selected objects").ofType(rlong(0)),
        scripts.String(
            P_SCOPE,
            grouping="3",
            values=[rstring(s) for s in SCOPES],
            default="Selection",
            description="Selection: compare the selected images with each other; Server: every image you can see",
        ),
        scripts.Int(
            P_THRESHOLD,
            grouping="4",
            default=12,
            min=0,
            max=64,
            description="Largest Data-Code distance in bits (of 64) for near duplicates",
        ),
        version=__version__,
        authors=["omero-iscc authors"],
        institutions=["omero-iscc"],
        namespaces=[NAMESPACE],
    )
    try:
        scripting.run(client, duplicates_of, "No report")
    finally:
        client.closeSession()


if __name__ == "__main__":
    run_script()
