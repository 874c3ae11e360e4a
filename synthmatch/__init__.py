"""synthmatch: Gymnasium environments and agents for synthesizer sound matching.

Importing the package registers every environment id (``SynthMatch-v0`` and family)::

    import gymnasium, synthmatch
    env = gymnasium.make("SynthMatch-v0")
"""

from synthmatch import envs as _envs  # noqa: F401  (registers the ids)

__version__ = "0.1.0"
