"""Web: ``cl-plugin serve``, a live local dashboard over a store.

* :mod:`~cl_plugin.web.app`: :func:`create_app` (the Starlette app) and :func:`serve` (uvicorn);
* :mod:`~cl_plugin.web.overview`: the live overview, the report's sections per window and graph, kept and
  read again in the background as interactions arrive;
* :mod:`~cl_plugin.web.pages`: the interactions, one interaction, the A/B tests, the maintenance runs;
* :mod:`~cl_plugin.web.annotate`: the annotation queue and the resumption of a run paused for labels;
* :mod:`~cl_plugin.web.security`: the access token, CSRF, body bounds and security headers;
* :mod:`~cl_plugin.web.feedback`: :func:`~cl_plugin.web.feedback.feedback_app`, ``POST /api/feedback``
  (signed feedback tokens, idempotency keys, attachments), served by the dashboard and mountable in a
  user's own ASGI app.

Needs the ``web`` extra: ``pip install 'cl-plugin[web]'``.
"""

from cl_plugin.web.app import create_app, serve
from cl_plugin.web.security import check_bind

__all__ = ["check_bind", "create_app", "serve"]
