"""Package discovery for the folder-to-package mapping in pyproject.toml.

Every folder below a mapped root that has an __init__.py is a package, so a new
subpackage can never be left out of the wheel.
"""

from pathlib import Path

from setuptools import setup

ROOTS = {
    "mmgen": "core",
    "mmgen.plugins": "plugins",
    "mmgen.tokenizers": "tokenizers",
    "mmgen.objectives": "objectives",
    "mmgen.samplers": "samplers",
}


def discover() -> tuple[list[str], dict[str, str]]:
    here = Path(__file__).parent
    packages, package_dir = [], {}
    for package, folder in ROOTS.items():
        package_dir[package] = folder
        for init in sorted((here / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(here / folder)
            packages.append(".".join((package, *relative.parts)))
    return packages, package_dir


packages, package_dir = discover()
# static/: a web page's files (mmgen serve's), in a folder that is not a package.
package_data = {p: ["*.yaml", "*.json", "*.model", "static/*"] for p in packages}
setup(packages=packages, package_dir=package_dir, package_data=package_data)
