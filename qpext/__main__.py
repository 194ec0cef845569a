"""The ``qpext`` console script: ``qpext [--] [queue-proxy binary [args...]]``.

Configuration comes from the environment (see qpext.config); an invalid value stops the process with one
line on stderr and exit code 2, before anything is started.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from qpext.config import ConfigError, load_config
from qpext.supervisor import run


def main() -> None:
    level = os.environ.get("QPEXT_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        config = load_config(os.environ, sys.argv[1:])
    except ConfigError as err:
        print(f"qpext: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(run(config)))


if __name__ == "__main__":
    main()
