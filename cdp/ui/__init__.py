"""``cdp ui``: the customer explorer — a read-only web app over the analyst database
for the people who have no SQL: marketers checking a segment before a campaign,
support staff looking a customer up on the phone.

- :mod:`cdp.ui.snapshot` opens the analyst database read-only and reopens it when a
  publish replaced the file, so the app never needs a restart;
- :mod:`cdp.ui.queries` holds every query (values always bound; long ones in
  ``sql/``);
- :mod:`cdp.ui.app` is the Starlette app: GET/HEAD routes, the access token, pages
  rendered by Jinja2 from ``templates/``, assets from ``static/`` (nothing from the
  network);
- :mod:`cdp.ui.server` checks the bind address and runs uvicorn.
"""
