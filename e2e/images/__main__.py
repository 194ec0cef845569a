"""``python -m e2e.images {build,list,check-import} [NAME ...]``.

build         build (or reuse) the images and what they build FROM; prints ``name ref archive`` per image
list          print ``name ref cached|missing`` per image without building anything
check-import  build, then import every archive into a throwaway containerd and check each ref is listed

Progress goes to stderr. Any failure is one line on stderr (naming the image and its build log) and exit
status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from e2e.images.builder import BuiltImage, ImageBuildError, build_images, new_builder
from e2e.images.scratch_containerd import ContainerdError, ScratchContainerd


def _check_import(images: dict[str, BuiltImage]) -> None:
    with ScratchContainerd() as containerd:
        for image in images.values():
            containerd.import_archive(image.archive)
        missing = sorted(image.ref for image in images.values() if image.ref not in containerd.refs())
        if missing:
            raise ContainerdError(f"imported archives do not list {', '.join(missing)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("build", "list", "check-import"))
    parser.add_argument("names", nargs="*", metavar="NAME", help="images (default: all)")
    args = parser.parse_args(argv)
    names = args.names or None
    try:
        if args.command == "list":
            builder = new_builder()
            rows = [
                (name, builder.ref(name), builder.archive(name).is_file()) for name in builder.plan(names)
            ]
            for name, ref, cached in rows:
                print(f"{name} {ref} {'cached' if cached else 'missing'}")
            return 0
        images = build_images(names)
        if args.command == "check-import":
            _check_import(images)
        for image in images.values():
            print(f"{image.name} {image.ref} {image.archive}")
    except (ImageBuildError, ContainerdError) as exc:
        print(f"e2e.images: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("e2e.images: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
