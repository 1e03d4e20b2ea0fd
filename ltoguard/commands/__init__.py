"""ltoguard's subcommands, one module each, named for the word that runs it.

``ltoguard explain|status|learned|report|init|run`` reach these through
``cli.SUBCOMMANDS``; ``ltoguard-link`` is ``link.main``. ``common`` is what they
share: error output, exit codes, tables and value formatting, the state view.
Nothing here is imported on the pass-through path, and this file stays empty of
imports so that importing one command loads only that command.
"""
