"""Ship compose.yaml and docker/ inside the package (pgharness/resources/) so an installed wheel needs no checkout.

Everything else is in pyproject.toml. An editable install (``pip install -e .``) finds them
in the checkout instead (pgharness.compose.COMPOSE_FILE).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithResources(build_py):
    def run(self) -> None:
        # pip builds in the checkout (build/): a module deleted since an earlier build would still be there
        # and ship in the wheel. Start from an empty package folder.
        shutil.rmtree(Path(self.build_lib) / "pgharness", ignore_errors=True)
        super().run()
        resources = Path(self.build_lib) / "pgharness" / "resources"
        (resources / "docker").mkdir(parents=True)
        shutil.copy2(ROOT / "compose.yaml", resources / "compose.yaml")
        for path in sorted((ROOT / "docker").iterdir()):
            if path.is_file():
                shutil.copy2(path, resources / "docker" / path.name)


setup(cmdclass={"build_py": BuildPyWithResources})
