"""Transform: unified customer profiles built from ``events``, and what is done with them.

One room per stage; each reads the tables ``cdp.storage`` defines and writes its own.
Nothing here talks to Kafka except the Kafka destination.

- ``stages/``: the profile build, stage by stage (identity, payloads, profiles, clv,
  rfm, segments), then one publish transaction (``stages/run.py``). Its package
  docstring names the temporary tables the stages hand each other.
- ``models/``: pure numpy/scipy models (BG/NBD, Gamma-Gamma) the clv stage fits.
- ``segmentation/``: the segment rule language (``rules``) and the segments file
  (``config``): definitions, destinations, consent channels.
- ``activation/``: exports to destinations (``export``, ``destinations``) and
  forgetting a customer (``privacy``).
- ``report/``: the HTML report (``html``) and its charts.
- ``jobs/``: what ``cdp run``, ``cdp build`` and ``cdp demo`` run: build + publish
  (``pipeline``) and the schedule (``scheduler``).
"""
