"""Editor protocols, one thin adapter each: request -> the one engine -> response in that protocol's shape.

Adding a protocol: a module here with a ``@register_protocol(name, clients=...)`` mount function, one
import line below, and one row in tests/serve/test_protocols.py.
"""

from codetune.serve.protocols import copilot, fim, llamacpp, ollama, tabby, tgi  # noqa: F401
from codetune.serve.protocols.base import PROTOCOLS, EditorRequest, Engine, mount_protocols, register_protocol

__all__ = ["PROTOCOLS", "EditorRequest", "Engine", "mount_protocols", "register_protocol"]
