#!/usr/bin/env python3
"""Writes a container image, in the archive format `ctr images import` reads (docker save's),
from a directory that holds its root filesystem: no registry and no Docker engine involved.

    oci-image.py NAME:TAG[,NAME:TAG...] ROOTFS OUT.tar -- ENTRYPOINT...

Several names tag the same image (one layer written, one import).
"""
import hashlib
import io
import json
import os
import sys
import tarfile


def layer(rootfs: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in dirs + sorted(files):
                path = os.path.join(directory, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def main() -> None:
    if len(sys.argv) < 6 or sys.argv[4] != "--":
        sys.exit(__doc__)
    names, rootfs, out = sys.argv[1:4]
    entrypoint = sys.argv[5:]
    data = layer(rootfs)
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": entrypoint,
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "User": "65532:65532",
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": names.split(","), "Layers": ["layer/layer.tar"]}]
    ).encode()
    with tarfile.open(out, mode="w") as tar:
        for member, content in [
            (config_name, config),
            ("layer/layer.tar", data),
            ("manifest.json", manifest),
        ]:
            info = tarfile.TarInfo(member)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


if __name__ == "__main__":
    main()
