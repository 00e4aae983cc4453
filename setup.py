"""Packages of the wheel: everything under moleseg/, plus the shipped models.

The checkout keeps the models in the top-level ``models/`` folder; the wheel carries them as the package
data folder ``moleseg/models`` (the ``.keras`` files, their inference-ready ``.onnx`` files, their ``.json``
records and ``.md`` cards), where
:data:`moleseg.core.config.MODELS_DIR` finds them when moleseg is not run from a checkout; the study files
of ``studies/`` go to ``moleseg/studies`` the same way (:data:`moleseg.core.config.STUDIES_DIR`); the
published repeatability table ``moleseg/repeatability.json`` is package data of ``moleseg`` itself. The rest of the
metadata is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["moleseg", "moleseg.*"]) + ["moleseg.models", "moleseg.studies"],
    package_dir={"moleseg.models": "models", "moleseg.studies": "studies"},
    package_data={"moleseg": ["repeatability.json"], "moleseg.models": ["*.keras", "*.onnx", "*.json", "*.md"],
                  "moleseg.studies": ["*.yaml"]},
    include_package_data=False,
)
