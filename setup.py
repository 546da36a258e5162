"""The one compiled part, the audio ring's device callback (engine/devices/aheadring.c); the rest is pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["engine/devices/aheadring_build.py:ffibuilder"])
