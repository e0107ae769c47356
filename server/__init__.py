"""fedrec.server: the Flower ServerApp side.

The server holds the global item model (:class:`fedrec.common.params.ItemParams`) and folds
devices' item updates into it. Never imports ``fedrec.client``; what both sides share lives in
``fedrec.common``.
"""
