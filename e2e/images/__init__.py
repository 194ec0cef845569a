"""Offline images for the local node: built with buildah from a debootstrap base and PyPI, cached by content.

No Docker engine and no registry are needed. ``build_images()`` (or ``python -m e2e.images build``) returns
each image's ref (``localhost/kserve-py/<name>:<content hash>``) and a docker-archive that
``ctr -n k8s.io images import`` loads with that ref. See docs/images.md.
"""

from e2e.images.builder import BuiltImage, ImageBuildError, build_images, cache_root

__all__ = ["BuiltImage", "ImageBuildError", "build_images", "cache_root"]
