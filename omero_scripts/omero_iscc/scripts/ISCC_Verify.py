#!/usr/bin/env python
# -*- coding: utf-8 -*-
#
# Copyright (C) 2026 the omero-iscc authors.
# Licensed under the Apache License, Version 2.0.
"""
ISCC_Verify.py: check that the selected images' files are still exactly what was imported.

Recomputes each image's ISCC-SUM and, in the same read, OMERO's own import checksum of every
file (OriginalFile.hash with its hasher), and compares both with what is stored. Each image
is OK, CHANGED, MISSING_FILE or NO_ANNOTATION; a CSV report is attached to the first selected
object.
"""

from omero import scripts
from omero.rtypes import rlong, rstring

from omero_iscc import NAMESPACE, __version__, scripting
from omero_iscc.config import script_settings
from omero_iscc.jobs import verify_job
from omero_iscc.selection import DATA_TYPES

P_DATA_TYPE = "Data_Type"
P_IDS = "IDs"
REPORT_NS = NAMESPACE + ".verify"


def verify_selection(omero_access, params, settings=None):
    """Verifies the selection; returns the message and the CSV report (``File_Annotation``)."""
    settings = settings or script_settings()
    with settings.slot("ISCC_Verify.py"):  # one script hashing per host at a time
        result = verify_job(omero_access, params[P_DATA_TYPE], params[P_IDS], settings)
    target = next((i for i in params[P_IDS] if i not in result.missing), None)
    outputs, note = scripting.attach_report(
        omero_access, params[P_DATA_TYPE], target, "iscc_verify_report.csv", result.report, REPORT_NS
    )
    return result.message + note, outputs


def run_script():
    client = scripts.client(
        "ISCC_Verify.py",
        """Recompute the ISCC-SUM and OMERO's import checksums of the selected images' files and
compare them with what is stored; where an image has a pixel code, recompute it from the planes
the server decodes now and compare it too. Attaches a CSV report (OK / CHANGED / MISSING_FILE /
NO_ANNOTATION per image) to the first selected object.""",
        scripts.String(
            P_DATA_TYPE,
            optional=False,
            grouping="1",
            values=[rstring(t) for t in DATA_TYPES],
            default="Image",
            description="The type of the selected objects",
        ),
        scripts.List(P_IDS, optional=False, grouping="2", description="IDs of the selected objects").ofType(rlong(0)),
        version=__version__,
        authors=["omero-iscc authors"],
        institutions=["omero-iscc"],
        namespaces=[NAMESPACE],
    )
    try:
        scripting.run(client, verify_selection, "Nothing verified")
    finally:
        client.closeSession()


if __name__ == "__main__":
    run_script()
