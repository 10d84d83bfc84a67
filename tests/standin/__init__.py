"""A stand-in OMERO server on the wire, for the tests: omero-py's own client, gateway and CLI
talk to it over real Ice (IceSSL and TCP on 127.0.0.1), so that Ice checks every argument and
the server's rules are applied below omero-py, where a real server applies them.

Modules: ``world`` (what the server holds and its permission rules, with the tests' building
and assertion calls), ``model`` (the model as omero-py describes it), ``hql`` (queries checked
and evaluated), ``convert`` (answers as model objects), ``services`` (the servants),
``sessions``, ``saving``, ``deleting``, ``pixels``, and ``server`` (the adapter, the router and
logins; also runnable as a process). docs/testing.md says what it models and where each rule
comes from.
"""
