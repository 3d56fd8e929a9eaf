"""uhlm — U-HLM: uncertainty-aware hybrid language model inference with a static threshold, no P2P
(FedHLM paper, sec. VI-D baseline; Oh et al.'s U-HLM).

Each draft x_t whose uncertainty u_t exceeds the fixed threshold goes to the cloud LLM, which accepts it
with probability 1 − β (eq. 3) or resamples from the residual; every other draft stays on the device.
The per-token machinery (uncertainty, wire formats, verdict) is netsim/policies/hlm.py.
"""

from __future__ import annotations

from netsim.policies.hlm import HlmPolicy
from netsim.policies.params import UhlmParams


class Uhlm(HlmPolicy[UhlmParams]):
    name = "uhlm"
    Params = UhlmParams

    def initial_threshold(self) -> float:
        return self.params.threshold
