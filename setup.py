"""The package list, beside pyproject.toml (which holds everything else): every `autointerp*` package
found in the tree, plus `autointerp.prompt_templates`, which is the top-level `prompts/` folder mapped into
the package (pyproject's package-dir). pyproject.toml alone cannot add a mapped package to a `find`."""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["autointerp*"]), "autointerp.prompt_templates"])
