"""`kserve-manager`: the KServe controller manager process.

Wires the domain (controllers, webhooks) onto the generic runtime in `manager/`; everything about flags,
signals and exit codes lives in `manager.cli`.
"""

from __future__ import annotations

import sys

from manager.cli import run_manager
from manager.manager import Manager


def setup(manager: Manager) -> None:
    """Register every controller and webhook of the KServe manager."""
    del manager


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_manager(setup))


if __name__ == "__main__":
    main()
