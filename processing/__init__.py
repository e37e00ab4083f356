"""Transform: unified customer profiles built from ``events`` on a schedule.

Identity resolution, profiles, CLV, RFM, segments and activation exports live here
as separate modules; each reads the tables ``cdp.storage`` defines and writes its
own. Nothing here talks to Kafka.
"""
