"""``bureaucrat-web``: the web console. Server-rendered pages and a JSON API over the store,
and operations sent to the engine as control messages (``create_app``; README, "Web console").
"""

from bureaucrat.web.app import create_app

__all__ = ["create_app"]
