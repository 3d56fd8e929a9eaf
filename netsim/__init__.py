"""netsim: discrete-event simulation of collaborative LLM inference over networks."""

__version__ = "0.1.0"
