"""The signed message of a manifest, written from the README's description alone.

An independent second implementation: `tests/manifest.rs` runs it on the committed
vector and on fresh manifests, and compares with ota-core's bytes. Reads a manifest as
JSON on stdin, prints the message in hex.
"""
import json
import struct
import sys

CHIP_IDS = {"esp32": 0, "esp32s2": 2, "esp32c3": 5, "esp32s3": 9, "esp32c2": 12,
            "esp32c6": 13, "esp32h2": 16, "esp32p4": 18, "esp32c61": 20, "esp32c5": 23}


def message(m):
    out = bytearray(b"clockrel manifest signature v1\n")

    def field(name, tag=None, payload=b""):
        out.append(len(name))
        out.extend(name.encode())
        out.append(0 if tag is None else tag)
        out.extend(payload)

    def text(name, value):
        if value is None:
            field(name)
        else:
            data = value.encode()
            field(name, 1, struct.pack("<I", len(data)) + data)

    def integer(name, value):
        field(name) if value is None else field(name, 2, struct.pack("<Q", value))

    def boolean(name, value):
        field(name) if value is None else field(name, 3, bytes([1 if value else 0]))

    chip = m.get("chip")
    integer("format", m.get("format"))
    text("version", m["version"].removeprefix("v"))
    integer("chip", None if chip is None else CHIP_IDS[chip])
    integer("secure_version", m.get("secure_version"))
    text("file", m.get("file"))
    field("sha256", 4, bytes.fromhex(m["sha256"]))
    integer("firmware_size", m["firmware_size"])
    boolean("requires_restart", m.get("requires_restart"))
    for name in ["build_date", "commit_hash", "title", "description", "release_date",
                 "esp_idf_version"]:
        text(name, m.get(name))
    patches = m.get("patches", [])
    if patches:
        field("patches", 5, struct.pack("<I", len(patches)))
        for p in patches:
            text("from", p["from"].removeprefix("v"))
            field("base_digest", 4, bytes.fromhex(p["base_digest"]))
            text("file", p["file"])
            integer("size", p["size"])
            field("sha256", 4, bytes.fromhex(p["sha256"]))
    return bytes(out)


print(message(json.load(sys.stdin)).hex())
