"""The manager with one of its issue-13 mechanisms turned off, for the "before" rows of `manager_scale`.

    python -m benchmarks.manager_variant {no-fanout-limit|no-cache-transforms} <kserve-manager flags>

It imports nothing but the controllers, so that it also runs in a tree whose `manager/` runtime is an
older one (the benchmark's "before" runtime, which has no cache transforms).
"""

from __future__ import annotations

import sys

import controllers.inferenceservice as isvc_controller
import controllers.main as manager_module

VARIANTS = ("no-fanout-limit", "no-cache-transforms")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in VARIANTS:
        sys.exit(f"usage: python -m benchmarks.manager_variant {{{'|'.join(VARIANTS)}}} <manager flags>")
    if sys.argv[1] == "no-fanout-limit":
        isvc_controller.FANOUT_LIMIT = None
    else:
        manager_module.CACHE_TRANSFORMS = False
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    manager_module.main()


if __name__ == "__main__":
    main()
