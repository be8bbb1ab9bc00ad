"""The signed feature dashboard: a static HTML site over a latent-statistics folder.

* :mod:`.load` — reads the statistics folder (``abstopk-latent-stats`` v1) as plain JSON;
* :mod:`.parts` — context lines (focus token highlighted ∝ |z|), ± logit tables, histogram;
* :mod:`.pages` — a page per latent (both signs side by side) and per direction;
* :mod:`.assets` — the stylesheet and the index page's script;
* :mod:`.site` — :func:`build_site`, the whole site;
* :mod:`.server` — :func:`serve_site`, the site on 127.0.0.1 (stdlib ``http.server``).

Like all of :mod:`abstopk.report`, it imports only the bottom modules. See docs/dashboard.md.
"""

from __future__ import annotations

from .site import SiteSummary, build_site

__all__ = ["SiteSummary", "build_site"]
