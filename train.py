"""Train, validate or test an action classifier: ``python train.py fit --config configs/weizmann.yaml``.

A LightningCLI (see ``python train.py fit --help``); the wiring lives in ``pipeline/cli.py``.
"""

from pipeline.cli import main
from pipeline.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
