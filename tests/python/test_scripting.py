"""The envelope every script runs its work in (omero_iscc.scripting.run), with a recording
client: inputs read, session kept alive, outputs set, input errors reported through ERROR."""

from __future__ import annotations

import omero.model
import pytest
from omero.rtypes import unwrap

from omero_iscc import scripting
from omero_iscc.selection import SelectionError
from omero_iscc.worker import WorkerError


class Client:
    def __init__(self, inputs):
        self.inputs = inputs
        self.outputs = {}
        self.keepalive = None

    def getInputs(self, unwrap=False):  # noqa: N802 - omero.client's API
        assert unwrap
        return self.inputs

    def enableKeepAlive(self, seconds):  # noqa: N802
        self.keepalive = seconds

    def setOutput(self, name, value):  # noqa: N802
        self.outputs[name] = value


def test_outputs_of_successful_work():
    client = Client({"IDs": [1]})
    seen = {}

    def work(omero_access, params):
        seen.update(params=params, omero=omero_access)
        return "1 annotated", {"Result": omero.model.ImageI(1, False)}

    scripting.run(client, work, "Nothing annotated", omero_factory=lambda c: "gateway")
    assert seen == {"params": {"IDs": [1]}, "omero": "gateway"}
    assert client.keepalive == 60
    assert unwrap(client.outputs["Message"]) == "1 annotated"
    assert client.outputs["Result"].getValue().getId().val == 1
    assert "ERROR" not in client.outputs


def test_input_errors_go_to_error_and_message():
    for error in (
        SelectionError("no IDs given"),
        WorkerError("omero-iscc not found"),
        scripting.ScriptError("only administrators may run this script"),
    ):
        client = Client({})

        def work(omero_access, params, error=error):
            raise error

        scripting.run(client, work, "Nothing verified", omero_factory=lambda c: None)
        assert unwrap(client.outputs["ERROR"]) == str(error)
        assert unwrap(client.outputs["Message"]) == f"Nothing verified: {error}"


def test_a_bug_is_not_swallowed():
    client = Client({})

    def work(omero_access, params):
        raise KeyError("Data_Type")

    # A programming error must surface as a failed script, not as a polite message.
    with pytest.raises(KeyError):
        scripting.run(client, work, "x", omero_factory=lambda c: None)
    assert "Message" not in client.outputs


def test_any_other_runtime_error_is_a_fault_not_an_input_error():
    client = Client({})

    def work(omero_access, params):
        raise RuntimeError("an unexpected state")

    # REPORTED is narrow: only InputError (and a worker that failed as a whole) end politely.
    with pytest.raises(RuntimeError):
        scripting.run(client, work, "x", omero_factory=lambda c: None)
    assert "ERROR" not in client.outputs
