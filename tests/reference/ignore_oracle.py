"""The reference side of tests/integration/ignore_parity.rs: pathspec and iscc-sum's own tree walk.

Reads one JSON request on standard input and writes one JSON answer per case:
  {"match": [{"file": F, "paths": [...]}, ...]}  -> per case: {"error": msg} or {"ignored": [bool, ...]}
      F is an ignore file on disk; it is opened exactly as iscc-sum opens .isccignore files
      (text mode, UTF-8, universal newlines) and compiled with pathspec's gitwildmatch.
  {"walk": [DIR, ...]}  -> per tree: {"error": msg} or {"files": [relative paths in walk order]}
      iscc_sum.treewalk.treewalk_iscc, the walk behind `iscc-sum --tree`.
"""

import json
import os
import sys
import warnings

import pathspec
from iscc_sum.treewalk import treewalk_iscc

warnings.simplefilter("ignore")  # pathspec's deprecation and re's "possible nested set" notes


def match(case):
    try:
        with open(case["file"], encoding="utf-8") as f:
            spec = pathspec.PathSpec.from_lines(pathspec.patterns.GitWildMatchPattern, f)
        return {"ignored": [bool(spec.match_file(p)) for p in case["paths"]]}
    except Exception as exc:  # noqa: BLE001 - any failure is what iscc-sum would die of
        return {"error": f"{type(exc).__name__}: {exc}"}


def walk(root):
    try:
        return {"files": [os.path.relpath(p, os.path.realpath(root)) for p in treewalk_iscc(root)]}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


def main():
    request = json.load(sys.stdin)
    for case in request.get("match", []):
        print(json.dumps(match(case)))
    for root in request.get("walk", []):
        print(json.dumps(walk(root)))


if __name__ == "__main__":
    main()
