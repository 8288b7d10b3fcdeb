"""`snapmatch serve`: one catalog over HTTP for mobile backends and admin tools (needs snapmatch[serve]).

>>> from snapmatch.serve import create_app, Limits
>>> app = create_app("my-catalog", token="...", limits=Limits(max_queue=32))   # any ASGI server runs it
"""

from snapmatch.serve.uploads import Limits

__all__ = ["Limits", "create_app"]


def __getattr__(name: str):
    if name == "create_app":  # FastAPI loads only when an app is made: Limits stays cheap to import
        from snapmatch.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'snapmatch.serve' has no attribute {name!r}")
