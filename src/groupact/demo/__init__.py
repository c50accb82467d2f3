"""`groupact demo`: an interactive local page for a trained run (see :mod:`.server`, :mod:`.app`)."""

from groupact.demo.app import DemoApp, controls_for
from groupact.demo.server import base_url, is_loopback, make_server, url_of

__all__ = ["DemoApp", "base_url", "controls_for", "is_loopback", "make_server", "url_of"]
