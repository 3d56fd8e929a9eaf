"""cloud_only — the prompt goes up, a cloud LLM prefills and decodes, tokens stream back one by one.

The reference point at the other end: the LLM's quality, paid for with an uplink of the prompt text, a
round trip before the first token, and a downlink message per token (the streaming is in remote.py).
"""

from __future__ import annotations

from netsim.policies.params import CloudOnlyParams
from netsim.policies.remote import ServerPolicy


class CloudOnly(ServerPolicy):
    name = "cloud_only"
    Params = CloudOnlyParams
    role = "cloud"
