"""The stand-in server itself, through omero-py's own client: it refuses what a server refuses,
for the reason a server gives (docs/testing.md names each rule's source). A stand-in that
accepts what a server refuses would let the helper's tests pass where a server fails them."""

from __future__ import annotations

import time

import Ice
import omero
import omero.model
import pytest
from fake_server import FakeServer
from omero.cmd import Delete2
from omero.rtypes import rstring
from standin import pixels
from standin.processor import run_script

from omero_iscc import gateway as g

CTX = {"omero.group": "-1"}


def _params(**values):
    return g.BlitzOmero._params(**values)


@pytest.fixture
def server():
    s = FakeServer(root=None)
    s.add_group(4, "read-write lab", "rwrw--")
    s.add_user(13, "colleague", {1, 4})
    s.add_user(14, "restricted", set(), admin=True, privileges={"WriteOwned"})
    return s


def _fileset(server, n_files=3, n_images=1, group=1, owner=2):
    files = [server.original_file(f"/nowhere/f{k}", "d/") for k in range(n_files)]
    return server.add_fileset(files, "d/", n_images=n_images, group_id=group, owner=owner)


# -- queries: checked against the model ------------------------------------------------------------
@pytest.mark.parametrize(
    "hql, says",
    [
        ("select i from Image i where i.nmae = :x", "could not resolve property: nmae of: ome.model.Image"),
        ("select f from Fileset f where f.usedFiles.originalFile.id = :x", "illegal attempt to dereference collection"),
        ("select i from Imgae i where i.id = :x", "Imgae is not mapped"),
        ("select i from Image i where j.id = :x", "Invalid path: 'j.id'"),
        ("select i from Image i join fetch i.details.ownr where i.id = :x", "could not resolve property: details.ownr"),
    ],
)
def test_a_misspelt_query_fails_as_the_servers_parser_fails_it(server, hql, says):
    query = server.access(2).conn.getQueryService()
    with pytest.raises(omero.QueryException) as caught:
        query.findAllByQuery(hql, _params(x=1), CTX)
    assert caught.value.message.startswith("Illegal query:") and says in caught.value.message


def test_a_named_parameter_without_a_value_is_refused(server):
    query = server.access(2).conn.getQueryService()
    with pytest.raises(omero.ApiUsageException, match="Null parameters not allowed: ids"):
        query.projection("select i.id from Image i where i.id in (:ids)", _params(other=1), CTX)


def test_a_collection_join_returns_a_row_per_element_unless_distinct(server):
    _fileset(server, n_files=4, n_images=1)
    query = server.access(2).conn.getQueryService()
    plain = query.findAllByQuery("select f from Fileset f join fetch f.usedFiles e", None, CTX)
    assert len(plain) == 4 and len({f.getId().val for f in plain}) == 1
    assert len(plain[0].copyUsedFiles()) == 4 and server.queries[-1][1] == 4
    unique = query.findAllByQuery("select distinct f from Fileset f join fetch f.usedFiles e", None, CTX)
    assert len(unique) == 1 and server.queries[-1][1] == 4, "the database still sent every joined row"
    ids = query.projection("select distinct f.id from Fileset f join f.usedFiles e", None, CTX)
    assert len(ids) == 1 and server.queries[-1][1] == 1


def test_index_of_a_list_element_is_its_import_position(server):
    [image] = _fileset(server, n_files=3, n_images=1)
    fileset = server.images_[image].fileset
    rows = (
        server.access(2)
        .conn.getQueryService()
        .projection(
            "select index(e), e.originalFile.name from Fileset f join f.usedFiles e where f.id = :id"
            " order by index(e) desc",
            _params(id=fileset),
            CTX,
        )
    )
    assert [(r[0].val, r[1].val) for r in rows] == [(2, "f2"), (1, "f1"), (0, "f0")]


def test_a_list_parameter_binds_a_jdbc_parameter_per_element(server):
    query = server.access(2).conn.getQueryService()
    ok = query.projection(g.Q_EXISTING.format(kind="Image"), _params(ids=list(range(10**6, 10**6 + 32767))), CTX)
    assert ok == []
    with pytest.raises(omero.InternalException, match="out-of-range integer as a 2-byte value: 32768"):
        query.projection(g.Q_EXISTING.format(kind="Image"), _params(ids=list(range(32768))), CTX)


def test_a_query_sees_the_call_context_group_and_what_the_user_may_read(server):
    [mine] = _fileset(server, group=1)
    [theirs] = _fileset(server, group=4, owner=13)
    server.add_group(8, "private", "rw----")
    server.add_user(15, "hermit", {8})
    [hidden] = _fileset(server, group=8, owner=15)
    query = server.access(2).conn.getQueryService()
    hql = "select i.id from Image i where i.id in (:ids)"
    ids = [mine, theirs, hidden]
    assert [r[0].val for r in query.projection(hql, _params(ids=ids), CTX)] == [mine]  # not in 4 or 8
    colleague = server.access(13).conn.getQueryService()
    assert [r[0].val for r in colleague.projection(hql, _params(ids=ids), CTX)] == [mine, theirs]
    assert [r[0].val for r in colleague.projection(hql, _params(ids=ids), {"omero.group": "4"})] == [theirs]
    root = server.access(0).conn.getQueryService()
    assert [r[0].val for r in root.projection(hql, _params(ids=ids), CTX)] == ids
    with pytest.raises(omero.SecurityViolation):
        query.projection(hql, _params(ids=ids), {"omero.group": "8"})


def test_an_operation_that_is_not_served_says_so(server):
    with pytest.raises(omero.ApiUsageException, match="IQuery.findByString is not served by the stand-in"):
        server.access(2).conn.getQueryService().findByString("Image", "name", "x", CTX)


# -- saves -------------------------------------------------------------------------------------------
def _tag(ns="x"):
    tag = omero.model.TagAnnotationI()
    tag.setNs(rstring(ns))
    return tag


def test_a_new_object_saved_with_group_minus_one_is_refused(server):
    update = server.access(2).conn.getUpdateService()
    with pytest.raises(omero.ApiUsageException):
        update.saveAndReturnObject(_tag(), CTX)
    saved = update.saveAndReturnObject(_tag(), {"omero.group": "1"})
    assert saved.getDetails().getGroup().getId().val == 1


def test_links_join_one_group_and_need_the_right_to_annotate(server):
    [in_one] = _fileset(server, group=1)
    [boss] = server.add_fileset([], "b/", can_annotate=False)  # the boss's, read-only group 3
    conn = server.access(2).conn
    update = conn.getUpdateService()
    tag = update.saveAndReturnObject(_tag(), {"omero.group": "1"})

    def link(image, group):
        lk = omero.model.ImageAnnotationLinkI()
        lk.setParent(omero.model.ImageI(image, False))
        lk.setChild(omero.model.TagAnnotationI(tag.getId().val, False))
        return update.saveAndReturnObject(lk, {"omero.group": str(group)})

    with pytest.raises(omero.SecurityViolation, match="Cannot link to Image"):
        link(boss, 3)
    with pytest.raises(omero.GroupSecurityViolation, match="MIXED GROUP"):
        link(in_one, 3)
    assert link(in_one, 1).getParent().getId().val == in_one


def test_in_a_private_group_an_administrator_may_not_annotate_a_members_image(server):
    server.add_group(8, "private", "rw----")
    server.add_user(15, "hermit", {8})
    [image] = _fileset(server, group=8, owner=15)
    root = server.access(0)
    [obj] = root.images([image])
    assert not obj.getDetails().getPermissions().canAnnotate()
    assert obj.getDetails().getPermissions().canDelete()
    [own] = server.access(15).images([image])
    assert own.getDetails().getPermissions().canAnnotate()


# -- sudo ------------------------------------------------------------------------------------------------
def test_sudo_takes_the_group_name_and_refuses_as_the_server_does(server):
    root = server.access(0).conn
    with pytest.raises(ValueError, match="invalid value for ::omero::sys::Principal member `group'"):
        root.suConn("scientist", 1)  # Ice refuses an int before sending
    assert server.calls.get("createSessionWithTimeout") is None, "nothing reached the server"
    sudo = root.suConn("scientist", "group 1", ttl=60000)
    assert sudo.getUserId() == 2 and sudo.getEventContext().groupName == "group 1"
    with pytest.raises(omero.SecurityViolation, match="not a member of group"):
        root.suConn("boss", "group 1")
    server.users[9].groups.discard(99001)  # disabled: no longer in the system group "user"
    with pytest.raises(omero.SecurityViolation, match="not active"):
        root.suConn("boss", "lab 3")
    with pytest.raises(omero.SecurityViolation, match="Sudo privilege"):
        server.access(14).conn.suConn("scientist", "group 1")


def test_a_sudo_session_ends_with_its_time_to_live(server):
    _fileset(server)
    sudo = server.access(0).conn.suConn("scientist", "group 1", ttl=60000)
    query = sudo.getQueryService()
    assert query.projection("select i.id from Image i", None, CTX)
    server.advance(61)
    with pytest.raises(omero.SessionTimeoutException, match=r"exceeded timeToLive \(60000\) by"):
        query.projection("select i.id from Image i", None, CTX)


# -- Delete2 --------------------------------------------------------------------------------------------
def _ann(server, image, owner):
    return server.add_annotation(image, [["k", "v"]], "x", owner=owner)


def test_delete2_is_one_transaction(server):
    [image] = _fileset(server, group=1)
    mine, theirs = _ann(server, image, 2), _ann(server, image, 13)
    conn = server.access(2).conn
    handle = conn.c.sf.submit(Delete2(targetObjects={"Annotation": [mine, theirs]}), conn.SERVICE_OPTS)
    with pytest.raises(omero.CmdError) as caught:
        conn.c.waitOnCmd(handle, loops=20, ms=100, failonerror=True, failontimeout=True, closehandle=True)
    assert "Request rolled back" in caught.value.err.name
    assert mine in server.anns and theirs in server.anns
    conn.c.waitOnCmd(
        conn.c.sf.submit(Delete2(targetObjects={"Annotation": [mine]}), conn.SERVICE_OPTS),
        loops=20,
        ms=100,
        failontimeout=True,
        closehandle=True,
    )
    assert mine not in server.anns and not [lk for lk in server._links() if lk.v["child"] == mine]


def test_a_delete_given_up_after_five_seconds_is_rolled_back(server):
    [image] = _fileset(server, group=1)
    mine = _ann(server, image, 2)
    server.delete_seconds = 60
    conn = server.access(2).conn
    began = time.monotonic()
    conn.deleteObjects("Annotation", [mine], wait=True)  # omero-py: 10 x 500 ms, then handle.close()
    assert time.monotonic() - began >= 5
    [job] = server.delete_jobs
    assert job.state == [omero.cmd.State.CANCELLED] and mine in server.anns, "closing the handle cancelled it"


# -- pixels ------------------------------------------------------------------------------------------------
def test_pixels_refusals_and_the_maximum_plane_size_from_the_config(server):
    [image] = _fileset(server)
    pid = pixels.add_pixels(
        server, image, (8, 4, 1, 1, 1), "uint8", 1, bytes(range(32)), tile_limited=True, tile=(4, 2)
    )
    server.max_plane = (6, 6)
    conn = server.access(2).conn
    assert conn.getMaxPlaneSize() == (6, 6)
    store = conn.c.sf.createRawPixelsStore()
    store.setPixelsId(pid, True, CTX)
    assert store.getTileSize() == [4, 2]
    with pytest.raises(omero.ApiUsageException, match="exceeds the maximum plane size 6x6"):
        store.getPlane(0, 0, 0, CTX)
    with pytest.raises(omero.ApiUsageException, match="exceeds the tile size"):
        store.getTile(0, 0, 0, 0, 0, 8, 1, CTX)
    assert store.getTile(0, 0, 0, 4, 1, 4, 2, CTX) == bytes([12, 13, 14, 15, 20, 21, 22, 23])
    store.close()
    server.pixels[image].pyramid_pending = True
    store = conn.c.sf.createRawPixelsStore()
    with pytest.raises(omero.MissingPyramidException) as caught:
        store.setPixelsId(pid, True, CTX)
    assert caught.value.pixelsID == pid


# -- scripts under the Processor --------------------------------------------------------------------------
def test_a_script_session_ends_at_omero_scripts_timeout(server, tmp_path):
    script = tmp_path / "Sleepy.py"
    script.write_text(
        "import time\n"
        "import omero.scripts as scripts\n"
        "from omero.rtypes import rstring\n"
        "client = scripts.client('Sleepy.py', 'sleeps', scripts.Long('Seconds'))\n"
        "try:\n"
        "    client.setOutput('before', rstring('ok'))\n"
        "    time.sleep(client.getInput('Seconds', unwrap=True))\n"
        "    client.setOutput('after', rstring('ok'))\n"
        "finally:\n"
        "    client.closeSession()\n"
    )
    server.config["omero.scripts.timeout"] = "600000"

    def ten_minutes_pass(session):
        if "before" in session.outputs and not server.clock_offset:
            server.advance(601)

    run = run_script(server, str(script), {"Seconds": 1}, user=2, while_running=ten_minutes_pass)
    assert run.outputs == {"before": "ok"} and "SessionTimeoutException" in run.stderr, run.stderr


def test_an_ice_connection_lost_mid_call_is_the_clients_error(server):
    _fileset(server)
    server.drop_connection_after("projection", 1)
    with pytest.raises(Ice.ConnectionLostException):
        server.access(2).conn.getQueryService().projection("select i.id from Image i", None, CTX)
