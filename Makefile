# Shoal: build, test, demo, bench.
#
#   make demo    build, then capture and deploy a generated ext4 disk
#   make test    every test: unit, property, and integration (root, loop
#                devices, FUSE)
#   make bench   capture/deploy figures beside partclone + zstd
#   make deps    install the Debian packages all of the above need
#   make fuzz    run every fuzz target for a while (needs cargo-fuzz)

CARGO ?= cargo
FUZZ_SECONDS ?= 60

.PHONY: all build deps demo test bench fuzz clean

all: build

build:
	$(CARGO) build --workspace --bins

deps:
	scripts/deps.sh

demo: deps
	$(CARGO) build --release --bin shoal
	scripts/demo.sh target/release/shoal

test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

bench: deps
	$(CARGO) build --release --bin shoal
	scripts/bench.sh target/release/shoal
	$(CARGO) build --release --bin shoal-pxe-bench && scripts/bench-pxe.sh target/release/shoal-pxe-bench

fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd proto/fuzz && for t in manifest chunk mcast; do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done
	cd pxe/fuzz && for t in tftp dhcp; do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

clean:
	$(CARGO) clean
