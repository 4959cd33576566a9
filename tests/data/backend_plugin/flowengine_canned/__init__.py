"""A model backend that answers every request with one reply (``--canned-reply TEXT``)."""

from __future__ import annotations

from flowengine.kernel.backends.base import Capability
from flowengine.kernel.backends.registry import BackendPlugin, BackendSettings, Option
from flowengine.kernel.backends.scripted import Script, ScriptedBackend


class CannedBackend(ScriptedBackend):
    name = "canned"
    model_name = "canned"
    capabilities = frozenset({Capability.KV_REUSE})


def _open(settings: BackendSettings) -> CannedBackend:
    reply = settings.option("canned_reply", "canned")
    return CannedBackend(Script(rules=[], default=reply), settings.context_length)


PLUGIN = BackendPlugin(
    name="canned",
    help="the same reply to every request (--canned-reply TEXT)",
    capabilities=CannedBackend.capabilities,
    open=_open,
    model=None,
    options=(Option("--canned-reply", "what the model always says", metavar="TEXT"),),
)

CLASH = BackendPlugin(
    name="clash",
    help="never loaded",
    capabilities=frozenset(),
    open=_open,
    options=(Option("--max-batch", "not what llama-cpp means by it", kind="count"),),
)
