#!/usr/bin/env python3
"""KServe's storage-initializer entrypoint: ``initializer-entrypoint SRC_URI DEST_PATH``.

The pod webhook runs it as the init container that fills /mnt/models before the model server starts, with
KServe's storage code (``kserve.storage.Storage.download``) doing the work. Unlike KServe 0.11's script,
which exits 0 after printing its usage, a wrong argument count exits 2: an init container that "succeeds"
without downloading anything leaves a model server to fail later with a far less useful message. A failed
download logs the reason and exits 1, so the pod shows Init:Error (KServe exits 1 with a traceback too).
"""

from __future__ import annotations

import logging
import sys

USAGE = "Usage: initializer-entrypoint src_uri dest_path"


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if len(argv) != 3:
        print(USAGE, file=sys.stderr)
        return 2
    src_uri, dest_path = argv[1], argv[2]
    logging.info("Initializing, args: src_uri [%s] dest_path [%s]", src_uri, dest_path)
    from kserve.storage import Storage  # type: ignore[import-not-found]

    try:
        Storage.download(src_uri, dest_path)
    except Exception:
        logging.exception("failed to download %s to %s", src_uri, dest_path)
        return 1
    logging.info("Downloaded %s to %s", src_uri, dest_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
