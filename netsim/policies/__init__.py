"""Collaboration policies, one module each (read top to bottom beside the paper).

`params.py` holds every policy's parameters (the scenario schema imports only that), `registry.py`
the name → class table, `base.py` the lifecycle every policy follows.
"""
