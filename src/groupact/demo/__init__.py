"""`groupact demo`: an interactive local page for a trained run (see :mod:`.server`, :mod:`.app`)."""

from groupact.demo.app import DemoApp, controls_for
from groupact.demo.server import make_server, url_of

__all__ = ["DemoApp", "controls_for", "make_server", "url_of"]
