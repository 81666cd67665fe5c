"""The web console: server-rendered pages over the API's services (docs/console.md).

`mount(app)` adds it to the service built by `esmongo.api.create_app`; the API does not
know it exists.
"""

from esmongo.console.app import mount

__all__ = ["mount"]
