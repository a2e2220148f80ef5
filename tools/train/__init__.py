"""Training: ``python -m tools.train --config FILE.toml`` (config: :mod:`tools.train.config`; loop:
:mod:`tools.train.loop`; losses: :mod:`tools.train.losses`; resumable state: :mod:`tools.train.state`)."""
