# The spin harness (c-tests/spin.c): several threads make random calls
# through the public header on random live handles of an in-process client
# and server, misuse included, and check invariants as they go.
#
#   make spin [SEED=n] [DURATION=s] [THREADS=t] [SPIN_ARGS=...]
#
# Without SEED the harness picks one from the clock and prints it; the same
# SEED gives every thread the same sequence of operations (thread
# interleavings still vary). Exit status 1: an invariant or an expected error
# code failed; 3: a hang (the watchdog prints each thread's last operation
# and, with gdb, every thread's stack); 23: a sanitizer report. The last line
# is "1 passed, 0 failed" or "0 passed, 1 failed".

SPIN_SRCS := c-tests/spin.c
SPIN_HDRS := c-tests/spin.h include/haquic.h
DURATION  ?= 10
THREADS   ?= 4
SPIN_ARGS ?=
# SEED is shared with mk/interop.mk, whose default is 1: only a SEED given on
# the command line or in the environment seeds the harness.
SPIN_SEED ?= $(if $(filter command% environment% override,$(origin SEED)),$(SEED))
# For `make stress`: DURATION when given, else STRESS_SECONDS.
SPIN_STRESS_DURATION = $(if $(filter command% environment% override,$(origin DURATION)),$(DURATION),$(STRESS_SECONDS))
SPIN_ENV  := RUST_BACKTRACE=0 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=23 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: spin

$(BUILD)/c-tests/spin-asan: $(SPIN_SRCS) $(SPIN_HDRS) $(STAGE_TEST)/$(SONAME)
	@mkdir -p $(dir $@)
	$(CC) $(C_WARN) -g -O1 $(C_SANITIZE) -DHAQUIC_TEST_HOOKS -Iinclude \
	  $(SPIN_SRCS) -o $@ -L$(STAGE_TEST) -lhaquic -lpthread -ldl \
	  -Wl,-rpath,$(CURDIR)/$(STAGE_TEST)

spin: $(BUILD)/c-tests/spin-asan $(FIXTURES)/.complete
	$(SPIN_ENV) $< -f $(FIXTURES) $(if $(strip $(SPIN_SEED)),--seed $(SPIN_SEED)) \
	  --duration $(DURATION) --threads $(THREADS) $(SPIN_ARGS)
