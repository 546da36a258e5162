"""The compiled parts: the audio ring's device callback (engine/devices/aheadring.c), the
generator's fused CPU kernels (engine/gansynth/kernels.c) and the voice mixer's block kernel
(engine/instrument/mixkernel.c); the rest is pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["engine/devices/aheadring_build.py:ffibuilder", "engine/gansynth/kernels_build.py:ffibuilder",
                    "engine/instrument/mixkernel_build.py:ffibuilder"])
