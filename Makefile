# Two commands on a fresh Debian machine (as root, or with sudo):
#   make run    set up and start the instrument with the bundled model
#   make test   set up and run the whole test suite
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
APT_PACKAGES := libportaudio2 libfluidsynth3 jackd2 xvfb sox gcc python3-dev \
	libgl1 libegl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0 \
	libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xkb1 rt-tests
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system-packages soundfont clean

run: setup
	$(PY) main.py

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

setup: system-packages $(STAMP)

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# FluidR3_GM (148 MB) is only needed to rebuild the default model's training data.
soundfont:
	@dpkg -s fluid-soundfont-gm >/dev/null 2>&1 || \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fluid-soundfont-gm

# setup.py compiles the audio ring's C callback (engine/devices/aheadring.c), the generator's
# kernels (engine/gansynth/kernels.c) and the mixer's (engine/instrument/mixkernel.c) in place.
$(STAMP): pyproject.toml setup.py engine/devices/aheadring.c engine/devices/aheadring_build.py \
		engine/gansynth/kernels.c engine/gansynth/kernels_build.py \
		engine/instrument/mixkernel.c engine/instrument/mixkernel_build.py
	python3 -m venv $(VENV)
	# The CPU wheel first: a looser spec would pull a multi-GB CUDA build.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[all]'
	# torchcrepe's own dependency on PyPI's torchaudio breaks beside the CPU torch.
	$(VENV)/bin/pip install -q --no-deps torchcrepe==0.0.24
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info engine/devices/_aheadring*.so engine/gansynth/_kernels*.so \
		engine/instrument/_mixkernel*.so
