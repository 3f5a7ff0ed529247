/*
 * spin: the haquic spin harness (modelled on msquic's spinquic).
 *
 * Several threads make random calls through the public header on random live
 * handles: open and close (engines, listeners, connections, streams,
 * configurations), send and receive, reset and STOP_SENDING, GOAWAY, ref and
 * unref, and deliberate misuse (NULL, closed handles, the wrong thread, bad
 * arguments) whose documented error code is asserted. A client and a server
 * engine run in one process; their datagrams go through the harness, which
 * can drop, duplicate, reorder, corrupt or truncate them.
 *
 * Usage: spin-asan [-f fixtures] [--seed N] [--duration S] [--threads T]
 *                  [--hang S] [--gen-life S] [--allow-reset-fin] [--no-hooks]
 *                  [--verbose]
 *
 *   --seed N         every thread's sequence of operations (default: from the
 *                    clock, printed); thread interleavings still vary
 *   --duration S     seconds of random operations (10), then a graceful drain
 *   --threads T      spin threads, and workers per engine (4)
 *   --hang S         watchdog limit: a thread without progress for S s (20)
 *   --gen-life S     seconds between engine generations (random 8-25)
 *   --allow-reset-fin  count, instead of failing on, streams the server reset
 *                    that the client saw end with a clean FIN (a quiche 0.30
 *                    bug: STREAM+FIN sent after RESET_STREAM)
 *   --no-hooks       no test hooks (injected panics, raw stream aborts)
 *   SPIN_TRACE=1     trace client streams' events and reads on stderr
 *   SPIN_NO_GDB=1    no gdb stack dump in a hang report
 *   SPIN_QLOG=dir    a qlog per connection in dir (engine option qlog_dir)
 *
 * Exit status: 0 passed; 1 an invariant or an expected error code failed;
 * 3 a thread made no progress for --hang seconds (hang report printed).
 * The last line is "1 passed, 0 failed" or "0 passed, 1 failed".
 */
#ifndef HAQUIC_SPIN_H
#define HAQUIC_SPIN_H

#define SPIN_EXIT_FAIL 1
#define SPIN_EXIT_HANG 3

#define SPIN_MAX_THREADS 32
#define SPIN_MAX_SLOTS 4096
#define SPIN_MAX_GENS 4096
#define SPIN_MAX_ACTIVE 4
#define SPIN_MAX_CHURN 8

#endif
