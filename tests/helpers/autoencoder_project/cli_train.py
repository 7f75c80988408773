"""The autoencoder through trainer_core's LightningCLI: python cli_train.py fit --model.lr 0.01"""

from pkg.data import MNISTData
from pkg.models import LitAutoEncoder

from trainer_core.cli import LightningCLI


def main() -> None:
    LightningCLI(LitAutoEncoder, MNISTData)


if __name__ == "__main__":
    main()
