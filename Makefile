# Makefile — build, test and lint the Raft teaching system.
#
#   make            build everything (libraft.a, raftsim, tests)
#   make test       install missing Debian packages, build, run every suite
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make lint       clang-format check, shellcheck, raft/core purity check
#   make lab LAB=N  a student's copy of the tree with lab N cut out of raft/core or kv/
#                   (labs/out/lab-N, or LABDIR=DIR); make grade LAB=N grades a tree
#   make fmt        reformat the C sources in place
#   make bench      benchmarks that print figures (never asserted)
#   make soak       more random simulator seeds (make soak SEEDS=100000 MAX_SECONDS=600),
#                   then make soak-cluster
#   make lincheck-bench  generate a 100,000-op history and check it for linearizability
#                   (LINCHECK_OPS=N), printing the times (docs/lincheck.md)
#   make soak-cluster  linearizability checks of real clusters under every nemesis
#                   (SOAK_CHECK_SECONDS=1800); kill -9 and restart nodes of a 5-node kvd
#                   cluster under load, hundreds of times (SOAK_SECONDS=900); every node
#                   must start again
#   make install    kvd, kvctl, kvring, raftsim, raft.h, libraft.a and raft.pc under PREFIX
#                   (default /usr/local)
#   make deps       install the Debian packages (apt-get; root or sudo)
#   make clean      remove build/
#
# Quiet by default; V=1 shows every command. CC=clang builds with clang
# (objects go to their own folder, so gcc and clang builds do not mix).

CC ?= cc
PREFIX ?= /usr/local
BUILD ?= build
V ?= 0

CCNAME := $(notdir $(firstword $(CC)))
OBJ := $(BUILD)/$(CCNAME)$(if $(SAN),-san)
GEN := $(BUILD)/gen

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
OPT ?= -O2 -g
comma := ,
SANFLAGS := $(if $(SAN),-fsanitize=address$(comma)undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
CFLAGS_ALL := -std=c11 $(WARN) $(OPT) $(SANFLAGS) -MMD -MP -D_POSIX_C_SOURCE=200809L $(CFLAGS)
LDFLAGS_ALL := $(SANFLAGS) $(LDFLAGS)

ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @printf '  %-7s %s\n' $(1) $(2)
endif

PKGS_PROTO := libprotobuf-c
PKGS_IO := lmdb libuv libsodium
PKGS_KV := hiredis jansson libxxhash
LIBS_KV := -lhttp_parser

# ---------------------------------------------------------------------------
# Sources

CORE_SRC := $(wildcard raft/core/*.c)
IO_SRC := $(wildcard raft/io/*.c)
KV_SRC := $(filter-out kv/kvd.c kv/kvctl.c kv/kvbench.c kv/kvring.c kv/kvcheck.c,$(wildcard kv/*.c))
SIM_SRC := $(filter-out raft/sim/raftsim.c,$(wildcard raft/sim/*.c))
PROTO := proto/raft.proto proto/kv.proto
PROTO_C := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTO))
PROTO_H := $(PROTO_C:.c=.h)
UNIT_SRC := $(wildcard tests/unit/test_*.c)

CORE_OBJ := $(CORE_SRC:%.c=$(OBJ)/%.o)
IO_OBJ := $(IO_SRC:%.c=$(OBJ)/%.o)
# The dashboard's files (ui/), compiled into kvd and raftsim (kv/ui.h).
UI_FILES := $(sort $(wildcard ui/*.html ui/*.js ui/*.css))
UI_C := $(GEN)/ui_files.c
UI_OBJ := $(OBJ)/gen/ui_files.o
KV_OBJ := $(KV_SRC:%.c=$(OBJ)/%.o) $(UI_OBJ)
SIM_OBJ := $(SIM_SRC:%.c=$(OBJ)/%.o)
PROTO_OBJ := $(PROTO_C:$(GEN)/%.c=$(OBJ)/gen/%.o)
HARNESS_OBJ := $(OBJ)/tests/harness.o

LIBRAFT := $(OBJ)/libraft.a
LIBSIM := $(OBJ)/libraftsim.a
LIBPROTO := $(OBJ)/libproto.a
LIBIO := $(OBJ)/libraftio.a
LIBKV := $(OBJ)/libkv.a
RAFTSIM := $(OBJ)/raftsim
KVD := $(OBJ)/kvd
KVCTL := $(OBJ)/kvctl
KVRING := $(OBJ)/kvring
KVBENCH := $(OBJ)/kvbench
KVCHECK := $(OBJ)/kvcheck
NFQ_DELAY := $(OBJ)/nfq-delay
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(OBJ)/tests/%)

BINS := $(RAFTSIM) $(KVD) $(KVCTL) $(KVRING) $(KVBENCH) $(KVCHECK) $(NFQ_DELAY) $(UNIT_BIN)
# A test-only tool: rewrites a stored value as no read notices (test_corruption.sh).
KVREWRITE := $(OBJ)/kvrewrite
BINS += $(KVREWRITE)
# The trace schema's checker (docs/trace.schema.json): a test-only tool.
TRACECHECK := $(OBJ)/tracecheck
BINS += $(TRACECHECK)
# The linearizability checker (docs/lincheck.md): a library and its command line.
LINCHECK_SRC := $(filter-out tests/lincheck/lincheck.c,$(wildcard tests/lincheck/*.c))
LIBLINCHECK := $(OBJ)/liblincheck.a
LINCHECK := $(OBJ)/lincheck
BINS += $(LINCHECK)

FUZZ_SECONDS ?= 60
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_DIR)/%)

.PHONY: all test test-run asan lint fmt bench profile soak soak-cluster install clean deps deps-ensure bench-peers run fuzz
.DEFAULT_GOAL := all
.SECONDARY:

all: $(BINS)

# ---------------------------------------------------------------------------
# Build rules

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	$(call say,PROTOC,$<)
	@mkdir -p $(GEN)
	$(Q)protoc-c --c_out=$(GEN) -Iproto $<

$(OBJ)/gen/%.o: $(GEN)/%.c $(PROTO_H)
	$(call say,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes $$(pkg-config --cflags $(PKGS_PROTO)) -I$(GEN) -c $< -o $@

$(UI_C): $(UI_FILES) scripts/embed-ui.sh
	$(call say,EMBED,ui/)
	@mkdir -p $(GEN)
	$(Q)scripts/embed-ui.sh $@ $(UI_FILES)

$(UI_OBJ): $(UI_C) kv/ui.h
	$(call say,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) -Ikv -c $< -o $@

# raft/core sees only its own headers and libc.
$(OBJ)/raft/core/%.o: raft/core/%.c
	$(call say,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) -c $< -o $@

$(OBJ)/raft/io/%.o: raft/io/%.c | $(PROTO_H)
	$(call say,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) $$(pkg-config --cflags $(PKGS_PROTO) $(PKGS_IO)) -Iraft/include -I$(GEN) -c $< -o $@

$(OBJ)/%.o: %.c | $(PROTO_H)
	$(call say,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) -Iraft/include -Iraft/io -Ikv -I$(GEN) -Itests -c $< -o $@

$(LIBRAFT): $(CORE_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBSIM): $(SIM_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBIO): $(IO_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBKV): $(KV_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBPROTO): $(PROTO_OBJ)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

# The simulator writes JSON records with the runtime's writer (libc only), and
# checks its clients' history with lincheck's checker (check.c: libc only; the
# archive's JSON parts, which need jansson, are not linked in).
$(RAFTSIM): $(OBJ)/raft/sim/raftsim.o $(LIBSIM) $(LIBLINCHECK) $(OBJ)/raft/io/tracejson.o $(UI_OBJ) $(LIBRAFT)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) $^ -o $@

$(KVD): $(OBJ)/kv/kvd.o $(LIBKV) $(LIBIO) $(LIBRAFT) $(LIBPROTO)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $$(pkg-config --libs $(PKGS_PROTO) $(PKGS_IO) $(PKGS_KV)) $(LIBS_KV) -o $@

$(KVCTL): $(OBJ)/kv/kvctl.o
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $$(pkg-config --libs $(PKGS_KV)) -o $@

# The offline placement calculator: ring.c alone, no server.
$(KVRING): $(OBJ)/kv/kvring.o $(OBJ)/kv/ring.o
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $$(pkg-config --libs libxxhash) -lm -o $@

$(KVBENCH): $(OBJ)/kv/kvbench.o
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $$(pkg-config --libs $(PKGS_KV) libuv) $(LIBS_KV) -o $@

# The workload of cluster-scripts/check (docs/lincheck.md): hiredis, one thread a client.
$(KVCHECK): $(OBJ)/kv/kvcheck.o
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $$(pkg-config --libs hiredis) -lpthread -o $@

$(KVREWRITE): tests/integration/kvrewrite.c
	$(call say,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) $< $(LDFLAGS_ALL) $$(pkg-config --libs lmdb libxxhash) -o $@

$(TRACECHECK): $(OBJ)/tests/trace/tracecheck.o
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $$(pkg-config --libs jansson) -o $@

$(LIBLINCHECK): $(LINCHECK_SRC:%.c=$(OBJ)/%.o)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LINCHECK): $(OBJ)/tests/lincheck/lincheck.o $(LIBLINCHECK)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $$(pkg-config --libs jansson) -o $@

# test_lincheck links the checker too (the pattern rule below links every prerequisite).
$(OBJ)/tests/test_lincheck: $(LIBLINCHECK)

# The packet delayer of the cluster scripts' netns mode.
$(NFQ_DELAY): cluster-scripts/nfq-delay.c
	$(call say,CC,$<)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS_ALL) $< $(LDFLAGS_ALL) $$(pkg-config --libs libnetfilter_queue) -o $@

$(OBJ)/tests/%: $(OBJ)/tests/unit/%.o $(HARNESS_OBJ) $(LIBSIM) $(LIBLINCHECK) $(LIBKV) $(LIBIO) $(LIBRAFT) $(LIBPROTO)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDFLAGS_ALL) $^ $$(pkg-config --libs $(PKGS_PROTO) $(PKGS_IO) $(PKGS_KV)) $(LIBS_KV) -o $@

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------------------
# Tests

deps-ensure:
	@scripts/deps.sh ensure

# `make test` = make sure the packages are there, then build and run.
test: deps-ensure
	@$(MAKE) --no-print-directory test-run

test-run: all $(FUZZ_BIN)
	@OBJ=$(OBJ) FUZZ_DIR=$(FUZZ_DIR) tests/run.sh

asan: deps-ensure
	@$(MAKE) --no-print-directory SAN=1 OPT='-O1 -g' test-run

SEEDS ?= 20000
MAX_SECONDS ?= 300
soak: all
	@$(RAFTSIM) soak --seeds $(SEEDS) --max-seconds $(MAX_SECONDS)
	@$(MAKE) --no-print-directory soak-cluster

SOAK_SECONDS ?= 900
SOAK_CHECK_SECONDS ?= 1800
soak-cluster: all
	@KVD=$(OBJ)/kvd SOAK_CHECK_SECONDS=$(SOAK_CHECK_SECONDS) cluster-scripts/soak-check
	@KVD=$(OBJ)/kvd SOAK_SECONDS=$(SOAK_SECONDS) cluster-scripts/soak-kill
	@# The membership scenarios in both modes (make test runs disk-loss in loopback mode),
	@# and the process-fault scenarios in netns mode (make test runs them in loopback mode).
	@for t in grow-shrink disk-loss; do for m in loopback netns; do \
		KVD=$(OBJ)/kvd SCENARIO_OWN=1 CLUSTER_PORTS=10000 CLUSTER_NET=$$m timeout 600 \
			cluster-scripts/scenarios/$$t.sh || exit 1; \
	done; done
	@for t in kill-majority pause-leader rolling-restart sharded-kill; do \
		KVD=$(OBJ)/kvd SCENARIO_OWN=1 CLUSTER_PORTS=10000 CLUSTER_NET=netns timeout 300 \
			cluster-scripts/scenarios/$$t.sh || exit 1; \
	done
	@# And the long network-fault stories in loopback mode (make test runs them in netns mode).
	@for t in flapping bridge oneway-loss; do \
		KVD=$(OBJ)/kvd SCENARIO_OWN=1 CLUSTER_PORTS=10000 CLUSTER_NET=loopback timeout 300 \
			cluster-scripts/scenarios/$$t.sh || exit 1; \
	done

BENCH_SECONDS ?= 5
bench: deps-ensure
	@$(MAKE) --no-print-directory OBJ=$(BUILD)/bench OPT='-O2 -g -DNDEBUG' \
		$(BUILD)/bench/raftsim $(BUILD)/bench/kvd $(BUILD)/bench/kvbench
	@echo "== the Raft core alone (simulator, no I/O)"
	@$(BUILD)/bench/raftsim bench
	@echo "== kvd cluster"
	@scripts/bench.sh $(BUILD)/bench $(BENCH_SECONDS)

# Where a replicated SET's time and bytes go (docs/kvd.md, The write path's budget).
profile: deps-ensure
	@$(MAKE) --no-print-directory OBJ=$(BUILD)/bench OPT='-O2 -g -DNDEBUG' \
		$(BUILD)/bench/kvd $(BUILD)/bench/kvbench
	@scripts/profile-write.sh $(BUILD)/bench $(BENCH_SECONDS)

# The checker's performance goal: 100,000 ops of 5 clients over 20 keys in under 10 s.
LINCHECK_OPS ?= 100000
.PHONY: lincheck-bench
lincheck-bench: $(LINCHECK)
	@$(LINCHECK) --generate $(BUILD)/lincheck-bench.jsonl --ops $(LINCHECK_OPS) --clients 5 \
		--keys 20 --check

# libFuzzer targets (clang): `make fuzz FUZZ_SECONDS=300` runs each for that long.

FUZZ_CFLAGS := -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-D_POSIX_C_SOURCE=200809L -Iraft/include -Iraft/io -Ikv -I$(GEN)

$(FUZZ_DIR)/fuzz_codec: tests/fuzz/fuzz_codec.c raft/io/codec.c $(PROTO_C) $(PROTO_H)
	$(call say,FUZZ,$@)
	@mkdir -p $(FUZZ_DIR)
	$(Q)clang $(FUZZ_CFLAGS) $$(pkg-config --cflags $(PKGS_PROTO)) \
		$< raft/io/codec.c $(PROTO_C) $$(pkg-config --libs $(PKGS_PROTO)) -o $@

# The front doors' targets include their door's file whole (its static parser is what
# they drive) and link the rest of kvd.
FUZZ_KVD_SRC := $(KV_SRC) $(IO_SRC) $(CORE_SRC) $(PROTO_C) $(UI_C)
FUZZ_KVD_LIBS = $$(pkg-config --libs $(PKGS_PROTO) $(PKGS_IO) $(PKGS_KV)) $(LIBS_KV)
$(FUZZ_DIR)/fuzz_resp: tests/fuzz/fuzz_resp.c $(FUZZ_KVD_SRC) $(PROTO_H)
	$(call say,FUZZ,$@)
	@mkdir -p $(FUZZ_DIR)
	$(Q)clang $(FUZZ_CFLAGS) $< $(filter-out kv/resp.c,$(FUZZ_KVD_SRC)) $(FUZZ_KVD_LIBS) -o $@
$(FUZZ_DIR)/fuzz_http: tests/fuzz/fuzz_http.c $(FUZZ_KVD_SRC) $(PROTO_H)
	$(call say,FUZZ,$@)
	@mkdir -p $(FUZZ_DIR)
	$(Q)clang $(FUZZ_CFLAGS) $< $(filter-out kv/http.c,$(FUZZ_KVD_SRC)) $(FUZZ_KVD_LIBS) -o $@
$(FUZZ_DIR)/fuzz_snapshot: tests/fuzz/fuzz_snapshot.c $(FUZZ_KVD_SRC) $(PROTO_H)
	$(call say,FUZZ,$@)
	@mkdir -p $(FUZZ_DIR)
	$(Q)clang $(FUZZ_CFLAGS) $< $(FUZZ_KVD_SRC) $(FUZZ_KVD_LIBS) -o $@

fuzz: deps-ensure $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do echo "== $$f ($(FUZZ_SECONDS) s)"; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; done

# ---------------------------------------------------------------------------
# Labs (docs/labs.md): `make lab LAB=N` writes a student's copy of the tree with
# lab N's regions cut out (of raft/core for labs 1-5, of kv/ for labs 6-7; to
# labs/out/lab-N, or LABDIR=...); `make grade LAB=N` grades a tree (a copy, or
# this one): labs 1-5 with the simulator, labs 6-7 with unit tests and real kvd
# processes. In a copy, LAB defaults to its own lab.

LAB ?= $(shell cat labs/this-lab 2>/dev/null)
# What each lab's grade runs.
GRADE_NEEDS := $(if $(filter 6 7,$(LAB)),$(KVD) $(KVCTL) $(OBJ)/tests/test_ring \
	$(OBJ)/tests/test_rebalance,$(RAFTSIM))
.PHONY: lab grade
lab:
	@test -n "$(LAB)" || { echo "make lab LAB=N  (N: 1 to 7; docs/labs.md)"; exit 2; }
	@labs/make-lab.sh $(LAB) $(LABDIR)

grade: $(GRADE_NEEDS)
	@test -n "$(LAB)" || { echo "make grade LAB=N  (N: 1 to 7; docs/labs.md)"; exit 2; }
	@RAFTSIM=$(RAFTSIM) GRADE_BIN=$(OBJ) labs/grade.sh $(LAB)

# ---------------------------------------------------------------------------
# Lint and format

# Tracked files and new ones not yet added (but not ignored ones).
GIT_FILES = git ls-files --cached --others --exclude-standard
C_FILES = $(shell $(GIT_FILES) '*.c' '*.h' 2>/dev/null || find raft kv tests -name '*.[ch]')
SH_FILES = $(shell $(GIT_FILES) '*.sh' .ci/run 'cluster-scripts/*' 2>/dev/null | while read -r f; do [ -f "$$f" ] && head -c 64 "$$f" | grep -q '^#!.*sh' && echo "$$f"; done)

lint:
	@scripts/deps.sh ensure
	$(call say,FORMAT,check)
	$(Q)clang-format --dry-run --Werror $(C_FILES)
	$(call say,SHCHECK,scripts)
	$(Q)shellcheck $(SH_FILES)
	$(call say,PURITY,raft/core)
	$(Q)scripts/check-purity.sh raft/core

fmt:
	$(Q)clang-format -i $(C_FILES)

# ---------------------------------------------------------------------------
# Install

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(RAFTSIM) $(DESTDIR)$(PREFIX)/bin/raftsim
	install -m 755 $(KVD) $(DESTDIR)$(PREFIX)/bin/kvd
	install -m 755 $(KVCTL) $(DESTDIR)$(PREFIX)/bin/kvctl
	install -m 755 $(KVRING) $(DESTDIR)$(PREFIX)/bin/kvring
	install -m 755 $(LINCHECK) $(DESTDIR)$(PREFIX)/bin/lincheck
	install -m 644 raft/include/raft.h $(DESTDIR)$(PREFIX)/include/raft.h
	install -m 644 $(LIBRAFT) $(DESTDIR)$(PREFIX)/lib/libraft.a
	sed -e 's|@PREFIX@|$(PREFIX)|' raft/raft.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/raft.pc

clean:
	rm -rf $(BUILD)

deps:
	@scripts/deps.sh install

# What `make bench` compares against (etcd); not needed for anything else.
bench-peers:
	@scripts/deps.sh peers

run: deps-ensure
	@$(MAKE) --no-print-directory $(KVD) $(KVCTL)
	@scripts/run-cluster.sh $(KVD) $(or $(NODES),3) $(SHARDS)
