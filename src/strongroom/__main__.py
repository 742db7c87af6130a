"""``python -m strongroom``: same as the ``strongroom`` command."""

from strongroom.entrypoints.cli.main import run

if __name__ == "__main__":
    run()
