"""fedrec.client: what runs on a shopper's device.

The device keeps its behaviour and its private user vector (``p_u``, ``b_u`` of
:class:`fedrec.common.params.UserParams`) and sends only item-side updates. Never imports
``fedrec.server``; what both sides share lives in ``fedrec.common``.
"""
