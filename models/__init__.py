"""posestream's networks and their codecs.

Public API (light to import: torch is loaded only when a network is built):

* :class:`ModelConfig` -- architecture, layout, input size, normalisation, codec and arch parameters;
* ``MODELS`` -- the plain table of factory name -> config (``hg1`` ... ``hg8``, width variants,
  ``spm_small``, ``spm_base``);
* :func:`build_model` -- name or config (+ overrides) -> ``torch.nn.Module`` with ``.config``.

Checkpoints live in :mod:`models.checkpoint`, layouts in :mod:`models.layouts`, codecs in
:mod:`models.codecs`.
"""

from models.config import ModelConfig
from models.factory import MODELS, build_model, model_config

__all__ = ["MODELS", "ModelConfig", "build_model", "model_config"]
