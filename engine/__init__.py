"""posestream's inference engine: a library with no sockets, frames in, typed poses out.

Public API: ``Engine`` (engine.engine), ``Poses`` (engine.results), ``DynamicBatcher`` (engine.batcher),
``Tracker`` / ``StreamTrackers`` / ``TrackerParams`` (engine.tracking), ``OneEuroParams`` (engine.smoothing),
``make_backend`` (engine.loading). ``Engine`` and the backends are imported lazily, so that
``import engine.results`` stays light (no torch).
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "Engine": "engine.engine",
    "Poses": "engine.results",
    "DynamicBatcher": "engine.batcher",
    "Tracker": "engine.tracking",
    "StreamTrackers": "engine.tracking",
    "TrackerParams": "engine.tracking",
    "OneEuroParams": "engine.smoothing",
    "RoiParams": "engine.roi",
    "make_backend": "engine.loading",
    "resolve_model": "engine.loading",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
