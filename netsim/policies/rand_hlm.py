"""rand_hlm — Rand-HLM: each draft goes to the cloud LLM with probability p, regardless of its uncertainty
(FedHLM paper, sec. VI-D: the naive baseline). The LLM's verdict is U-HLM's (eq. 3, residual resampling);
no uncertainty is computed, no peers or edge are asked. Machinery: netsim/policies/hlm.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsim.policies.hlm import ClientState, HlmPolicy
from netsim.policies.params import RandHlmParams

if TYPE_CHECKING:
    import numpy as np


class RandHlm(HlmPolicy[RandHlmParams]):
    name = "rand_hlm"
    Params = RandHlmParams
    uses_uncertainty = False

    def transmits(self, client: ClientState, u: float, rng: np.random.Generator) -> bool:
        """One uniform draw per draft from the request's `hlm.route` stream: offload with probability p."""
        return bool(rng.random() < self.params.p_offload)
