"""Protocols, one module each: its request body -> typed requests -> the one completion service -> its answer.

Adding a protocol: a module here with a ``@register_protocol(name, clients=..., example=...)`` mount
function and one import line below; the test matrix in tests/serve/test_protocols.py sends its example.
"""

from codetune.serve.protocols import copilot, fim, llamacpp, ollama, openai, tabby, tgi  # noqa: F401
from codetune.serve.protocols.base import PROTOCOLS, Mount, register_protocol

__all__ = ["PROTOCOLS", "Mount", "register_protocol"]
