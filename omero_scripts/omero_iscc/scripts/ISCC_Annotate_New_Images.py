#!/usr/bin/env python
# -*- coding: utf-8 -*-
#
# Copyright (C) 2026 the omero-iscc authors.
# Licensed under the Apache License, Version 2.0.
"""
ISCC_Annotate_New_Images.py: one poll of the omero-iscc scheduler, as an OMERO script.

For sites that schedule `omero script launch` from cron with a session key instead of running
Python outside the server: finds up to Batch_Size images without an ISCC annotation across all
groups (by ascending id), hashes and annotates them through this script's own session, with
the scheduler's state (retries with backoff, at most 3 attempts) and lock. Administrators only.
"""

import time

from omero import scripts

from omero_iscc import NAMESPACE, __version__, scripting
from omero_iscc.config import load
from omero_iscc.scheduler import Scheduler
from omero_iscc.state import Lock, script_slot

P_BATCH = "Batch_Size"


def poll(omero_access, batch_size, config_file=None):
    """Runs one poll; returns the message for OMERO.web."""
    if not omero_access.is_admin():
        raise scripting.ScriptError("only administrators may run this script")
    started = time.monotonic()
    cfg = load(cli={"batch_size": batch_size}, env={}, config_file=config_file)
    # The scheduler's lock (no poll beside a running scheduler), then the scripts' slot (one
    # script hashing per host at a time); the time spent waiting counts against the budget.
    with Lock(cfg.state_dir), script_slot(cfg.state_dir, "ISCC_Annotate_New_Images.py", cfg.script_wait):
        scheduler = Scheduler(cfg, lambda _cfg: (None, omero_access))
        # Under OMERO's Processor: the worker stays in the script's process group (cancelling
        # the script stops it), a dead session is retried a few times only, and no new image
        # is started once the time budget (below the script timeout) is spent.
        scheduler.detach = False
        scheduler.once = True
        scheduler.max_reconnects = 0
        scheduler.deadline = started + cfg.script_time_budget
        try:
            result = scheduler.poll_once()
        finally:
            scheduler.close()
    lost = "; the session to OMERO was lost: run again later" if result.unreachable else ""
    return (
        f"{result.annotated} annotated, {result.failed} failed, of {result.seen} image(s) "
        f"without an ISCC (batch size {batch_size}){lost}"
    )


def poll_batch(omero_access, params):
    """The script's work: one poll of at most Batch_Size images; no object outputs."""
    return poll(omero_access, int(params.get(P_BATCH, 100))), {}


def run_script():
    client = scripts.client(
        "ISCC_Annotate_New_Images.py",
        """Annotate up to Batch_Size images that have no ISCC yet, across all groups
(administrators only). Meant to be launched periodically, e.g. from cron with
`omero script launch`.""",
        scripts.Long(
            P_BATCH,
            optional=False,
            grouping="1",
            default=100,
            min=1,
            max=100000,
            description="Most images to annotate in this run",
        ),
        version=__version__,
        authors=["omero-iscc authors"],
        institutions=["omero-iscc"],
        namespaces=[NAMESPACE],
    )
    try:
        scripting.run(client, poll_batch, "Nothing annotated")
    finally:
        client.closeSession()


if __name__ == "__main__":
    run_script()
