"""Checksums that tell whether a split or class-list file is the one the published numbers used.

Copies of the CoOp files circulate with harmless byte differences (an extra trailing newline,
other JSON indentation), so a file is accepted when any pinned digest matches:

* ``sha256``: SHA-256 of the exact bytes;
* ``git_blob``: ``git hash-object`` of the bytes (the only digest known for the Food101 and
  SUN397 splits, from the public copy in linzhiqiu/cross_modal_adaptation);
* ``content``: SHA-256 of the parsed content in canonical form (JSON: sorted keys, no spaces;
  text: stripped non-empty lines joined by "\\n"), which ignores formatting entirely.

The bytes digests are also tried with the trailing newlines removed and with exactly one added.
"""
import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Checksum:
    """Pinned digests of one file; any one that matches verifies it (empty = not pinned)."""

    sha256: str = ""
    git_blob: str = ""
    content: str = ""

    def __bool__(self):
        return bool(self.sha256 or self.git_blob or self.content)


def git_blob_sha1(data):
    """The id ``git hash-object`` gives to ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def canonical_content(data, kind):
    """``data`` in a form that ignores formatting: ``kind`` is "json" or "text"."""
    if kind == "json":
        return json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    lines = (line.strip() for line in data.decode("utf-8").splitlines())
    return "\n".join(line for line in lines if line).encode()


def _kind(path):
    return "json" if path.endswith(".json") else "text"


def verify_bytes(data, checksum, path=""):
    """True if ``data`` matches ``checksum``, False if not, None if nothing is pinned."""
    if not checksum:
        return None
    stripped = data.rstrip(b"\r\n")
    for variant in (data, stripped, stripped + b"\n"):
        if checksum.sha256 and hashlib.sha256(variant).hexdigest() == checksum.sha256:
            return True
        if checksum.git_blob and git_blob_sha1(variant) == checksum.git_blob:
            return True
    if checksum.content:
        try:
            content = canonical_content(data, _kind(path))
        except (ValueError, UnicodeDecodeError):
            return False
        return hashlib.sha256(content).hexdigest() == checksum.content
    return False


def verify_file(path, checksum):
    """``verify_bytes`` on the file at ``path``."""
    with open(path, "rb") as f:
        return verify_bytes(f.read(), checksum, path)


def describe(path):
    """The digests of the file at ``path``, for a mismatch message."""
    with open(path, "rb") as f:
        data = f.read()
    return f"sha256 {hashlib.sha256(data).hexdigest()}, git blob {git_blob_sha1(data)}"
