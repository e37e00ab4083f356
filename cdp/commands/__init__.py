"""One module per command of ``cdp`` (grouped where a command has actions: ``topics``,
``dlq``, ``segments``; ``sql`` and ``shell`` both open the analyst database).

Each handler takes the parsed arguments and the settings, calls one function of the
library and prints what it returns; :mod:`cdp.cli` parses the command line and loads
only the module of the command it runs, so ``cdp --help`` imports none of them.
Printing that several commands share is in :mod:`cdp.commands.common`.
"""
