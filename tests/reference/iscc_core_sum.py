"""Reference codes from iscc-core (and checksums from hashlib/zlib) for the Rust tests.

Usage: iscc_core_sum.py PATH...   (a PATH ending in "+" is read as the concatenation of the
paths separated by "+", like a group). Prints one JSON object per PATH.
"""

import base64
import hashlib
import io
import json
import sys
import zlib

import iscc_core


def read(arg: str) -> bytes:
    if arg.endswith("+"):
        return b"".join(open(p, "rb").read() for p in arg[:-1].split("+") if p)
    with open(arg, "rb") as f:
        return f.read()


def codes(data: bytes) -> dict:
    data_code = iscc_core.gen_data_code_v0(io.BytesIO(data), bits=256)["iscc"]
    instance = iscc_core.gen_instance_code_v0(io.BytesIO(data), bits=256)
    return {
        "narrow": iscc_core.gen_iscc_code_v0([data_code, instance["iscc"]], wide=False)["iscc"],
        "wide": iscc_core.gen_iscc_code_v0([data_code, instance["iscc"]], wide=True)["iscc"],
        "units": [data_code, instance["iscc"]],
        # The Data-Code's 256-bit body, base64: a plane's simprint as iscc-bio writes it.
        "data_b64": base64.b64encode(iscc_core.decode_base32(data_code.split(":")[1])[2:]).decode("ascii"),
        "datahash": instance["datahash"],
        "filesize": instance["filesize"],
        "checksums": {
            "SHA1-160": hashlib.sha1(data).hexdigest(),
            "MD5-128": hashlib.md5(data).hexdigest(),
            "CRC-32": zlib.crc32(data).to_bytes(4, "little").hex(),
            "Adler-32": zlib.adler32(data).to_bytes(4, "little").hex(),
            "File-Size-64": len(data).to_bytes(8, "little").hex(),
        },
    }


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(json.dumps({"arg": arg, **codes(read(arg))}))
