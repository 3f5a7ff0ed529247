/*
 * spin: the haquic spin harness. See spin.h for what it does and how to run
 * it.
 *
 * Threads and ownership. Each of the T spin threads owns worker t of every
 * engine: it is the first to drive it (haquic_worker_process), so the library
 * binds that worker to it, and it alone acts on the connections and streams
 * of that worker. Everything the header allows from any thread (ref/unref,
 * queries, statistics, haquic_listener_recv, listener and configuration
 * calls) is also done from the other threads, and every action it reserves
 * to the owner is also tried from the wrong thread, asserting
 * HAQUIC_ERR_WRONG_THREAD.
 *
 * Generations. A generation is a server engine and a client engine (T
 * workers each, host-fed listeners) with their configurations and random
 * parameters (limits, pacing, congestion control, Retry, queue sizes, 0-RTT,
 * network impairments). The main thread starts a new one every 8-25 s and
 * retires the old one (graceful shutdown, listener shutdown or close, or
 * nothing), then, a few seconds later, drops its engine references while the
 * harness still holds connection and stream handles of it: actions on those
 * must then return HAQUIC_ERR_CLOSED from any thread.
 *
 * The handle table. Every connection, stream and listener handle the harness
 * keeps is in one table (under one lock) with the number of references the
 * harness holds on it (one, plus "extra" references any thread may add and
 * drop). A thread that uses a handle takes its own reference under the lock
 * first. Every reference taken is counted, and every one dropped: both
 * counts must agree at the end, and haquic_live_objects() must be 0.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include "haquic.h"
#include "spin.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#define SPIN_ASAN 1
#endif

/* ---- options and global state ------------------------------------------------ */

static uint64_t opt_seed;
static int opt_duration = 10;
static int opt_threads = 4;
static int opt_hang = 20;
static int opt_gen_life;          /* 0: random 8-25 s */
static int opt_hooks = 1;
static int opt_verbose;
static int opt_trace;      /* SPIN_TRACE=1: client streams' events and reads */
static int opt_allow_reset_fin;   /* count, not fail, FINs of streams the server reset */

/* Requests carry x-spin-id; the server marks the ids of streams it reset, so
 * that a client can tell a FIN that stands for a reset (quiche 0.30 sends an
 * empty STREAM frame with FIN after RESET_STREAM when the stream still had
 * unsent data) from other truncations. */
static _Atomic uint64_t next_req_id = 1;
#define RESET_BITS (1u << 22)
static _Atomic uint64_t reset_bits[RESET_BITS / 64];

/* The client's STOP_SENDING, by request id: the server can tell a send the
 * library refuses because the stream was stopped from other refusals. */
static _Atomic uint64_t stop_bits[RESET_BITS / 64];

/* A request id's bit in one of the sets above (0 is no request). */
static void bit_set(_Atomic uint64_t *bits, uint64_t id)
{
	if (id)
		atomic_fetch_or(&bits[(id % RESET_BITS) / 64], 1ull << (id % 64));
}

static int bit_get(_Atomic uint64_t *bits, uint64_t id)
{
	return id && (atomic_load(&bits[(id % RESET_BITS) / 64]) >> (id % 64)) & 1;
}

static void mark_server_reset(uint64_t id) { bit_set(reset_bits, id); }
static int server_did_reset(uint64_t id) { return bit_get(reset_bits, id); }
static void mark_client_stop(uint64_t id) { bit_set(stop_bits, id); }
static int client_did_stop(uint64_t id) { return bit_get(stop_bits, id); }
static const char *opt_fixtures = "build/c-tests/fixtures";

enum { PH_RUN, PH_DRAIN, PH_QUIT };
static _Atomic int phase = PH_RUN;
static long long start_ms;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* ---- PRNG: xoshiro256**, one per thread, seeded from (seed, thread) ------------ */

struct rng {
	uint64_t s[4];
};

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed ^ (0xD1B54A32D192ED03ULL * (stream + 1));

	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t res = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

/* uniform in [0, n) */
static uint32_t rnd(struct rng *r, uint32_t n)
{
	return n ? (uint32_t)(((rng_next(r) >> 32) * (uint64_t)n) >> 32) : 0;
}

/* true with probability permille/1000 */
static int chance(struct rng *r, uint32_t permille)
{
	return rnd(r, 1000) < permille;
}

/* ---- counters ---------------------------------------------------------------- */

#define COUNTERS(X) \
	X(OPS, "ops") X(ITERS, "iterations") X(EVENTS, "events") \
	X(CONNECTS, "connects") X(RESUMES, "resumed connects") X(CLI_EST, "client handshakes") \
	X(SRV_EST, "server handshakes") X(REQ_SENT, "requests sent") X(REQ_RECV, "requests received") \
	X(RESP_OK, "responses verified") X(BYTES_OK, "body bytes verified") X(UPLOAD, "bytes uploaded") \
	X(RST_SENT, "resets sent") X(RST_RECV, "resets received") X(STOP_SENT, "stop_sending sent") \
	X(STOP_RECV, "stop_sending received") X(GOAWAY_SENT, "shutdowns (GOAWAY) started") \
	X(GOAWAY_RECV, "GOAWAY received") X(CLOSE_CALLS, "conn_close calls") X(CLOSED_EV, "connections closed") \
	X(TRAILERS, "trailers received") X(MIS_NULL, "misuse: NULL") X(MIS_ARGS, "misuse: bad arguments") \
	X(MIS_WRONG, "misuse: wrong thread") X(MIS_CLOSED, "misuse: closed handle") \
	X(MIS_DEAD, "misuse: engine gone") X(MIS_STATE, "misuse: wrong state") \
	X(REF_EXTRA, "extra refs taken") X(UNREF_EXTRA, "extra refs dropped") X(DG_MOVED, "datagrams moved") \
	X(DG_DROP, "datagrams dropped (impairment)") X(DG_DUP, "datagrams duplicated") \
	X(DG_CORRUPT, "datagrams corrupted") X(DG_TRUNC, "datagrams truncated") X(DG_REORDER, "datagrams reordered") \
	X(DG_QFULL, "datagrams refused: queue full") X(REPLAYS, "replayed or forged datagrams") \
	X(LIS_NEW, "listeners opened") X(LIS_CLOSE, "listener close/shutdown calls") X(CONFIGS, "scratch configurations") \
	X(SCRATCH_ENG, "scratch engines") X(PANICS, "panics injected") X(RAW_ABORTS, "raw stream aborts") \
	X(MALFORMED, "malformed requests") X(STATS, "statistics checks") X(QUERIES, "queries") \
	X(RETIRED, "handles retired") X(UNEXPECTED, "legit calls with an unlisted code") \
	X(RESET_AS_FIN, "server resets seen as a clean FIN (quiche)") \
	X(LOST_STOP, "sends refused on a stopped stream, no STOP_SENDING event") \
	X(REFUSED_OTHER, "sends refused (INVALID_STATE/PROTOCOL), other")

enum {
#define X(id, text) C_##id,
	COUNTERS(X)
#undef X
	C_MAX
};

static const char *const counter_names[] = {
#define X(id, text) text,
	COUNTERS(X)
#undef X
};

/* ---- operations -------------------------------------------------------------- */

struct thr;
typedef void (*op_fn)(struct thr *t);

struct opdef {
	const char *name;
	int weight;
	op_fn fn;
	int hook;      /* needs the test hooks */
};

#define MAX_OPS 48
#define NCODES 25

/* calls of a legitimate operation that returned a code outside its list */
static _Atomic uint64_t unexpected[MAX_OPS][NCODES];

/* ---- generations -------------------------------------------------------------- */

enum { SRV = 0, CLI = 1 };
enum { GS_LIVE, GS_RETIRING, GS_DEAD, GS_FREED };

struct gen {
	int id;
	_Atomic int state;
	const haquic_config *cfg[2];
	const haquic_engine *eng[2];
	const haquic_listener *lis[2];
	struct sockaddr_in addr[2];
	_Atomic int bound[2][SPIN_MAX_THREADS];
	long borrows;                       /* under the table lock */
	/* churn listeners on the server engine (pointers stay valid while the
	 * engine lives: it keeps a reference on each) */
	const haquic_listener *churn[SPIN_MAX_CHURN];
	int nchurn;                          /* under the table lock */
	/* expectations for the engines' counters */
	_Atomic long wrong_exp[2], wrong_maybe[2], closed_exp[2], panics[2];
	_Atomic long srv_requests_seen, srv_est_seen, cli_est_seen, connects;
	_Atomic uint64_t wakes[2];
	/* parameters */
	uint32_t loss, dup, reorder, corrupt, trunc;   /* permille */
	int early, retry, pacing, max_streams, retire_action;
	uint64_t idle_ms;
	long long born_ms, retire_ms, dead_ms, life_ms;
};

/* ---- the handle table ---------------------------------------------------------- */

enum { SK_NONE, SK_CONN, SK_STREAM, SK_LISTENER };

struct app;

struct slot {
	int kind, side, owner;       /* owner: thread index, -1 for listeners */
	struct gen *g;
	const void *h;
	int extra;                   /* extra references, besides the table's one */
	uint64_t serial;
	struct app *app;             /* compared, dereferenced by the owner only */
	uint64_t sid;                /* stream id */
	const void *conn;            /* stream: its connection */
	int pos;                     /* index in dense[] */
};

static pthread_mutex_t tbl = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[SPIN_MAX_SLOTS];
static int dense[SPIN_MAX_SLOTS];
static int nused;
static uint64_t next_serial;
static struct gen *gens[SPIN_MAX_GENS];
static int ngens;
static struct gen *active[SPIN_MAX_ACTIVE];   /* not FREED, newest last */
static int nactive;

static _Atomic uint64_t refs_taken, refs_dropped;

/* ---- per-thread state ---------------------------------------------------------- */

#define HOLD_MAX 32
#define RING 32

struct held {
	struct gen *g;
	int to;            /* destination side */
	long long due;     /* iteration */
	size_t len;
	unsigned char *data;
};

struct laststats {
	int gen_id, side;
	haquic_stats st;
};

struct thr {
	int idx;
	pthread_t th;
	struct rng rng;
	_Atomic uint64_t ctr[C_MAX];
	_Atomic long long beat;
	_Atomic(const char *) op;
	_Atomic int opi;
	unsigned char *buf;                 /* 64 KiB */
	unsigned char *buf2;                /* 64 KiB */
	struct app **own;
	int nown, capown;
	int cli_conns_open, cli_streams_open;
	struct held hold[HOLD_MAX];
	int nhold;
	long long iter;
	unsigned char ring[RING][1500];
	size_t ring_len[RING];
	unsigned ring_next;
	unsigned char sess[8192];
	size_t sess_len;
	int sess_gen;
	struct laststats last[8];
	unsigned last_next;
	struct app *pend[256];      /* FINs to judge once the events are all in */
	long long pend_iter[256];
	int npend;
};

static struct thr thr[SPIN_MAX_THREADS];
static _Thread_local struct thr *me;
static _Atomic long long main_beat;
static _Atomic(const char *) main_op = "start";

static void set_op(struct thr *t, const char *name, int i)
{
	if (t) {
		atomic_store_explicit(&t->op, name, memory_order_relaxed);
		atomic_store_explicit(&t->opi, i, memory_order_relaxed);
	} else {
		atomic_store(&main_op, name);
	}
}

static void cnt(struct thr *t, int c, uint64_t n)
{
	if (t)
		atomic_fetch_add_explicit(&t->ctr[c], n, memory_order_relaxed);
}

static uint64_t total(int c)
{
	uint64_t n = 0;

	for (int i = 0; i < opt_threads; i++)
		n += atomic_load_explicit(&thr[i].ctr[c], memory_order_relaxed);
	return n;
}

/* ---- failures ------------------------------------------------------------------ */

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const code_names[NCODES] = {
	"OK", "NULL", "PANIC", "INVALID_ARGUMENT", "NOT_UTF8", "FILE_NOT_FOUND", "FILE_UNREADABLE",
	"BAD_CERTIFICATE", "BAD_PRIVATE_KEY", "KEY_MISMATCH", "BAD_ALPN", "OUT_OF_RANGE",
	"UNKNOWN_CC_ALGORITHM", "STRUCT_SIZE", "INCOMPLETE_CONFIG", "TLS", "CLOSED", "WRONG_THREAD",
	"BUFFER_TOO_SMALL", "WOULD_BLOCK", "QUEUE_FULL", "PROTOCOL", "IO", "LIMIT", "INVALID_STATE",
};

static const char *cname(int rc)
{
	return rc >= 0 && rc < NCODES ? code_names[rc] : "?";
}

static void final_line(int ok)
{
	printf("%s\n", ok ? "1 passed, 0 failed" : "0 passed, 1 failed");
	fflush(stdout);
}

static void fail_at(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

static void fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&fail_lock);
	fflush(stdout);
	fprintf(stderr, "spin: FAILED seed=%" PRIu64 " thread=%d op=%s (%s:%d): ", opt_seed, me ? me->idx : -1,
	        me ? atomic_load(&me->op) : atomic_load(&main_op), file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nspin: reproduce with --seed %" PRIu64 " --threads %d (thread interleavings vary)\n", opt_seed,
	        opt_threads);
	fflush(stderr);
	final_line(0);
	_exit(SPIN_EXIT_FAIL);
}

#define FAILF(...) fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define CHECKF(cond, fmt, ...) do { if (!(cond)) FAILF("check failed: %s: " fmt, #cond, ##__VA_ARGS__); } while (0)
#define CHECK(cond) do { if (!(cond)) FAILF("check failed: %s", #cond); } while (0)

#define M(c) (1ull << (c))
#define M_OK M(HAQUIC_OK)

static void mask_str(uint64_t mask, char *buf, size_t cap)
{
	size_t n = 0;

	buf[0] = 0;
	for (int i = 0; i < NCODES && n + 24 < cap; i++)
		if (mask & M(i))
			n += snprintf(buf + n, cap - n, "%s%s", n ? "|" : "", code_names[i]);
}

/* A misuse call: the code must be one of `mask`, exactly. */
static int expect_rc(int rc, uint64_t mask, const char *expr, const char *file, int line)
{
	if (rc < 0 || rc >= NCODES || !(mask & M(rc))) {
		char want[256];

		mask_str(mask, want, sizeof(want));
		fail_at(file, line, "%s returned %d (%s), expected %s", expr, rc, cname(rc), want);
	}
	return rc;
}

#define EXPECT(call, mask) expect_rc((int)(call), (mask), #call, __FILE__, __LINE__)

/* Codes that a correct call by the owner never gets: always a failure. */
#define HARD_FAIL (M(HAQUIC_ERR_PANIC) | M(HAQUIC_ERR_WRONG_THREAD) | M(HAQUIC_ERR_NULL) | \
                   M(HAQUIC_ERR_STRUCT_SIZE) | M(HAQUIC_ERR_OUT_OF_RANGE))

/* A legitimate call: a code outside `mask` is counted (and reported in the
 * summary), one of HARD_FAIL fails the run. */
static int legit_rc(int rc, uint64_t mask, const char *expr, const char *file, int line)
{
	if (rc < 0 || rc >= NCODES)
		fail_at(file, line, "%s returned %d, not a haquic_result", expr, rc);
	if (mask & M(rc))
		return rc;
	if (HARD_FAIL & M(rc))
		fail_at(file, line, "%s returned %d (%s)", expr, rc, cname(rc));
	if (me) {
		int op = atomic_load_explicit(&me->opi, memory_order_relaxed);

		atomic_fetch_add_explicit(&unexpected[op][rc], 1, memory_order_relaxed);
		cnt(me, C_UNEXPECTED, 1);
		if (opt_verbose)
			fprintf(stderr, "spin: thread %d: %s returned %s (%s:%d)\n", me->idx, expr, cname(rc), file, line);
	}
	return rc;
}

#define LEGIT(call, mask) legit_rc((int)(call), (mask), #call, __FILE__, __LINE__)

/* ---- counted references ------------------------------------------------------------ */

static void took(void) { atomic_fetch_add_explicit(&refs_taken, 1, memory_order_relaxed); }
static void dropped(void) { atomic_fetch_add_explicit(&refs_dropped, 1, memory_order_relaxed); }

static void h_ref(int kind, const void *h)
{
	const void *r = NULL;

	switch (kind) {
	case SK_CONN: r = haquic_conn_ref(h); break;
	case SK_STREAM: r = haquic_stream_ref(h); break;
	case SK_LISTENER: r = haquic_listener_ref(h); break;
	default: FAILF("h_ref: kind %d", kind);
	}
	if (r != h)
		FAILF("_ref(%p) returned %p", h, r);
	took();
}

static void h_unref(int kind, const void *h)
{
	switch (kind) {
	case SK_CONN: haquic_conn_unref(h); break;
	case SK_STREAM: haquic_stream_unref(h); break;
	case SK_LISTENER: haquic_listener_unref(h); break;
	default: FAILF("h_unref: kind %d", kind);
	}
	dropped();
}

static void eng_ref(const haquic_engine *e)
{
	if (haquic_engine_ref(e) != e)
		FAILF("haquic_engine_ref returned another pointer");
	took();
}

static void eng_unref(const haquic_engine *e)
{
	haquic_engine_unref(e);
	dropped();
}

/* ---- the test pattern -------------------------------------------------------------- */

static unsigned char pat(uint64_t off)
{
	return (unsigned char)(off * 31 + (off >> 8));
}

static void pattern_fill(unsigned char *b, size_t n, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pat(off + i);
}

static int pattern_ok(const unsigned char *b, size_t n, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != pat(off + i))
			return 0;
	return 1;
}

/* ---- applications: what the harness knows about an object it owns ------------------ */

enum { P_HELLO, P_SIZE, P_ECHO, P_TRAILERS, P_RESET, P_STOP, P_SILENT, P_GOAWAY, P_CLOSE, P_NPLANS };
static const char *const plan_names[P_NPLANS] = {
	"hello", "size", "echo", "trailers", "reset", "stop", "silent", "goaway", "close",
};

struct app {
	int kind, side, owner;
	struct gen *g;
	const void *h;
	int slot;
	uint64_t serial;
	long long born_ms, closed_ms, gone_ms;
	int closed_seen;
	int retire_after;     /* ms after close */
	/* connections */
	int established, closed_ev, goaway_recv, shutdown_called, raw, resumed, panic_injected, nreq;
	uint64_t close_code;
	uint64_t raw_next;
	int target_req;             /* client: requests before it may be closed */
	long long deadline_ms;      /* ... or this age */
	/* streams */
	const haquic_conn *conn;    /* borrowed: the stream holds its connection */
	uint64_t sid;
	int plan;
	uint64_t total;             /* body length the plan sends */
	uint64_t sent;
	int headers_sent, send_done, own_send_done, send_reset, stop_sent, stop_recv, reset_recv;
	int recv_done, req_fin, trailers_recv, got_response, status, finished, goaway_done;
	int fin_pending;            /* a FIN that does not end the body as planned: a reset? */
	uint64_t req_id;            /* x-spin-id */
	uint64_t recv_off;
	uint64_t upload_total, upload_off;
	int upload_fin;
	unsigned char *ebuf;        /* server echo: bytes read, not yet sent */
	size_t elen, eoff;
};

static struct app *app_new(struct thr *t, int kind, int side, struct gen *g, const void *h)
{
	struct app *a = calloc(1, sizeof(*a));

	if (!a)
		FAILF("out of memory");
	a->kind = kind;
	a->side = side;
	a->owner = t->idx;
	a->g = g;
	a->h = h;
	a->slot = -1;
	a->born_ms = now_ms();
	a->retire_after = 100 + (int)rnd(&t->rng, 2000);
	a->target_req = 1 + (int)rnd(&t->rng, 40);
	a->deadline_ms = a->born_ms + 1000 + rnd(&t->rng, 9000);
	return a;
}

static void own_add(struct thr *t, struct app *a)
{
	if (t->nown == t->capown) {
		t->capown = t->capown ? t->capown * 2 : 256;
		t->own = realloc(t->own, t->capown * sizeof(*t->own));
		if (!t->own)
			FAILF("out of memory");
	}
	t->own[t->nown++] = a;
	if (a->kind == SK_CONN && a->side == CLI)
		t->cli_conns_open++;
	if (a->kind == SK_STREAM && a->side == CLI)
		t->cli_streams_open++;
}

/* Publishes a handle the caller holds one reference on (the table takes that
 * reference). Returns the slot, or -1 when the table is full. */
static int table_add(int kind, int side, int owner, struct gen *g, const void *h, struct app *a, uint64_t sid,
                     const void *conn)
{
	int idx = -1;

	pthread_mutex_lock(&tbl);
	if (nused < SPIN_MAX_SLOTS) {
		static int hint;

		for (int i = 0; i < SPIN_MAX_SLOTS; i++) {
			int k = (hint + i) % SPIN_MAX_SLOTS;

			if (slots[k].kind == SK_NONE) {
				idx = k;
				break;
			}
		}
		hint = idx + 1;
		struct slot *s = &slots[idx];

		s->kind = kind;
		s->side = side;
		s->owner = owner;
		s->g = g;
		s->h = h;
		s->extra = 0;
		s->serial = ++next_serial;
		s->app = a;
		s->sid = sid;
		s->conn = conn;
		s->pos = nused;
		dense[nused++] = idx;
		if (a) {
			a->slot = idx;
			a->serial = s->serial;
		}
	}
	pthread_mutex_unlock(&tbl);
	return idx;
}

static int table_load(void)
{
	int n;

	pthread_mutex_lock(&tbl);
	n = nused;
	pthread_mutex_unlock(&tbl);
	return n;
}

/* Removes a slot; the caller then drops the references it returns. */
static int table_remove_locked(int idx, uint64_t serial, const void **h, int *kind)
{
	struct slot *s = &slots[idx];
	int n, last;

	if (s->kind == SK_NONE || s->serial != serial)
		return 0;
	*h = s->h;
	*kind = s->kind;
	n = 1 + s->extra;
	last = dense[--nused];
	dense[s->pos] = last;
	slots[last].pos = s->pos;
	memset(s, 0, sizeof(*s));
	return n;
}

/* The owner retires an object: its userdata is cleared (no event can reach the
 * freed app), the table forgets it and every reference the harness held on
 * it is dropped. */
static void retire(struct thr *t, int own_i)
{
	struct app *a = t->own[own_i];
	const void *h = NULL;
	int kind = 0, n = 0;

	if (a->kind == SK_CONN)
		EXPECT(haquic_conn_set_userdata(a->h, NULL), M_OK);
	else
		EXPECT(haquic_stream_set_userdata(a->h, NULL), M_OK);
	if (a->slot >= 0) {
		pthread_mutex_lock(&tbl);
		n = table_remove_locked(a->slot, a->serial, &h, &kind);
		pthread_mutex_unlock(&tbl);
		CHECKF(n >= 1 && h == a->h, "slot %d of %p lost", a->slot, a->h);
	} else {
		h = a->h;
		kind = a->kind;
		n = 1;
	}
	for (int i = 0; i < n; i++)
		h_unref(kind, h);
	if (a->kind == SK_CONN && a->side == CLI && !a->closed_seen)
		t->cli_conns_open--;
	if (a->kind == SK_STREAM && a->side == CLI && !a->closed_seen)
		t->cli_streams_open--;
	for (int i = 0; i < t->npend; i++)
		if (t->pend[i] == a) {
			t->pend[i] = t->pend[--t->npend];
			t->pend_iter[i] = t->pend_iter[t->npend];
			break;
		}
	free(a->ebuf);
	free(a);
	t->own[own_i] = t->own[--t->nown];
	cnt(t, C_RETIRED, 1);
}

/* ---- generations ----------------------------------------------------------------- */

/* Borrows a generation that is not dead: its engines stay alive until
 * gen_release. Under the table lock. */
static int gen_borrow_locked(struct gen *g)
{
	int st = atomic_load(&g->state);

	if (st != GS_LIVE && st != GS_RETIRING)
		return 0;
	g->borrows++;
	return 1;
}

static void gen_release(struct gen *g)
{
	pthread_mutex_lock(&tbl);
	g->borrows--;
	pthread_mutex_unlock(&tbl);
}

/* The newest live generation, borrowed, or NULL. */
static struct gen *borrow_current(void)
{
	struct gen *g = NULL;

	pthread_mutex_lock(&tbl);
	for (int i = nactive - 1; i >= 0; i--)
		if (atomic_load(&active[i]->state) == GS_LIVE && gen_borrow_locked(active[i])) {
			g = active[i];
			break;
		}
	pthread_mutex_unlock(&tbl);
	return g;
}

static struct gen *borrow_any(struct thr *t)
{
	struct gen *g = NULL;

	pthread_mutex_lock(&tbl);
	if (nactive) {
		int k = (int)rnd(&t->rng, nactive);

		for (int i = 0; i < nactive && !g; i++)
			if (gen_borrow_locked(active[(k + i) % nactive]))
				g = active[(k + i) % nactive];
	}
	pthread_mutex_unlock(&tbl);
	return g;
}

static int gen_borrow(struct gen *g)
{
	int ok;

	pthread_mutex_lock(&tbl);
	ok = gen_borrow_locked(g);
	pthread_mutex_unlock(&tbl);
	return ok;
}

static void wake(void *userdata, uint32_t worker)
{
	_Atomic uint64_t *w = userdata;

	(void)worker;
	atomic_fetch_add_explicit(w, 1, memory_order_relaxed);
}

static _Thread_local char fixture_buf[4][4096];
static _Thread_local int fixture_next;

/* "<fixtures>/<name>" in a rotating buffer of the calling thread */
static const char *fixture_path(const char *name)
{
	char *b = fixture_buf[fixture_next++ % 4];

	snprintf(b, sizeof(fixture_buf[0]), "%s/%s", opt_fixtures, name);
	return b;
}

static const char *const cc_names[] = { "cubic", "reno", "bbr2", "CUBIC", "newreno", "bbr" };

static const haquic_config *make_config(struct rng *r, struct gen *g, int side)
{
	const haquic_config *c = haquic_config_new();
	haquic_limits lim;

	CHECK(c != NULL);
	took();
	if (side == SRV)
		EXPECT(haquic_config_load_cert_chain_and_key(c, fixture_path("leaf.crt"), fixture_path("leaf.key")), M_OK);
	else
		EXPECT(haquic_config_set_verify_peer(c, false, NULL), M_OK);
	EXPECT(HAQUIC_LIMITS_INIT(&lim), M_OK);
	lim.idle_timeout_ms = g->idle_ms;
	lim.max_streams_bidi = (uint64_t)g->max_streams;
	if (chance(r, 200)) {
		lim.initial_max_data = 16384 + rnd(r, 256 * 1024);
		lim.initial_max_stream_data_bidi_local = 4096 + rnd(r, 65536);
		lim.initial_max_stream_data_bidi_remote = 4096 + rnd(r, 65536);
	}
	if (chance(r, 100))
		lim.max_udp_payload_size = 1200 + rnd(r, 1400);
	EXPECT(haquic_config_set_limits(c, &lim), M_OK);
	EXPECT(haquic_config_set_cc_algorithm(c, cc_names[rnd(r, 6)]), M_OK);
	EXPECT(haquic_config_set_pacing(c, g->pacing), M_OK);
	EXPECT(haquic_config_set_early_data(c, g->early), M_OK);
	if (chance(r, 300)) {
		const unsigned char secret[] = "spin cluster secret";

		EXPECT(haquic_config_set_cluster_secret(c, secret, sizeof(secret)), M_OK);
	}
	return c;
}

static struct rng main_rng;

static struct gen *gen_new(void)
{
	struct rng *r = &main_rng;
	struct gen *g = calloc(1, sizeof(*g));
	haquic_engine_options o;

	CHECK(g != NULL);
	CHECK(ngens < SPIN_MAX_GENS);
	g->id = ngens;
	g->born_ms = now_ms();
	g->life_ms = opt_gen_life ? opt_gen_life * 1000LL : 8000 + rnd(r, 17000);
	g->idle_ms = 1500 + rnd(r, 6000);
	g->max_streams = chance(r, 300) ? 1 + (int)rnd(r, 8) : 100;
	g->pacing = chance(r, 700);
	g->early = chance(r, 500);
	g->retry = chance(r, 100);
	if (chance(r, 500)) {
		g->loss = rnd(r, 50);
		g->dup = rnd(r, 20);
		g->reorder = rnd(r, 50);
		g->corrupt = rnd(r, 10);
		g->trunc = rnd(r, 5);
	}
	g->retire_action = (int)rnd(r, 6);
	g->cfg[SRV] = make_config(r, g, SRV);
	g->cfg[CLI] = make_config(r, g, CLI);
	for (int s = 0; s < 2; s++) {
		EXPECT(HAQUIC_ENGINE_OPTIONS_INIT(&o), M_OK);
		o.workers = (uint32_t)opt_threads;
		if (chance(r, 200))
			o.dispatch_queue_capacity = 16 + rnd(r, 64);
		if (chance(r, 200))
			o.out_queue_capacity = 16 + rnd(r, 64);
		if (s == SRV) {
			if (chance(r, 50))
				o.max_connections_per_worker = 2 + rnd(r, 8);
			if (chance(r, 100))
				o.retry_threshold = 1 + rnd(r, 4);
			o.force_retry = (uint8_t)g->retry;
			o.stateless_resets_per_second = rnd(r, 200);
		}
		o.qlog_dir = getenv("SPIN_QLOG");    /* one qlog per connection there */
		EXPECT(haquic_engine_new(g->cfg[s], &o, wake, &g->wakes[s], &g->eng[s]), M_OK);
		took();
		CHECK(haquic_engine_worker_count(g->eng[s]) == (uint32_t)opt_threads);
	}
	for (int s = 0; s < 2; s++) {
		size_t len = 0;

		memset(&g->addr[s], 0, sizeof(g->addr[s]));
		g->addr[s].sin_family = AF_INET;
		g->addr[s].sin_port = htons(s == SRV ? 4433 : 50000);
		inet_pton(AF_INET, s == SRV ? "127.0.0.1" : "127.0.0.2", &g->addr[s].sin_addr);
		/* the client's listener gets the server configuration: it needs none */
		EXPECT(haquic_listener_new(g->eng[s], s == SRV ? NULL : g->cfg[SRV], &g->addr[s], sizeof(g->addr[s]),
		                           HAQUIC_LISTENER_HOST_FED, &g->lis[s]), M_OK);
		took();
		EXPECT(haquic_listener_address(g->lis[s], &g->addr[s], sizeof(g->addr[s]), &len), M_OK);
		CHECK(len == sizeof(struct sockaddr_in));
	}
	pthread_mutex_lock(&tbl);
	gens[ngens++] = g;
	CHECK(nactive < SPIN_MAX_ACTIVE);
	active[nactive++] = g;
	pthread_mutex_unlock(&tbl);
	if (opt_verbose)
		printf("spin: generation %d: idle %" PRIu64 " ms, streams %d, pacing %d, 0-RTT %d, retry %d, "
		       "loss %u dup %u reorder %u corrupt %u trunc %u (permille)\n",
		       g->id, g->idle_ms, g->max_streams, g->pacing, g->early, g->retry, g->loss, g->dup, g->reorder,
		       g->corrupt, g->trunc);
	return g;
}

static void stats_of(const haquic_engine *e, haquic_stats *st)
{
	EXPECT(HAQUIC_STATS_INIT(st), M_OK);
	EXPECT(haquic_engine_stats(e, st), M_OK);
}

#define STAT_FIELDS(st) ((const uint64_t *)&(st)->conns_open)
#define STAT_COUNT ((sizeof(haquic_stats) - offsetof(haquic_stats, conns_open)) / sizeof(uint64_t))

/* No counter is absurd (a wrapped subtraction, a torn value). */
static void stats_sane(const haquic_stats *st, const char *what)
{
	const uint64_t *f = STAT_FIELDS(st);

	CHECKF(st->struct_size == sizeof(*st), "%s: struct_size %u", what, st->struct_size);
	for (size_t i = 0; i < STAT_COUNT; i++)
		CHECKF(f[i] < (1ull << 50), "%s: counter #%zu is %" PRIu64, what, i, f[i]);
	CHECKF(st->handshakes <= st->conns_accepted, "%s: %" PRIu64 " handshakes, %" PRIu64 " accepted", what,
	       st->handshakes, st->conns_accepted);
}

/* With nothing driving the engine: exact relations between its counters. */
static void gen_check_quiescent(struct gen *g)
{
	for (int s = 0; s < 2; s++) {
		haquic_stats st, sum, ls;
		const uint64_t *f, *sf;
		long exp = atomic_load(&g->wrong_exp[s]), maybe = atomic_load(&g->wrong_maybe[s]);
		char what[64];

		snprintf(what, sizeof(what), "generation %d %s engine", g->id, s == SRV ? "server" : "client");
		stats_of(g->eng[s], &st);
		stats_sane(&st, what);
		CHECKF(st.conns_closed <= st.conns_accepted, "%s: %" PRIu64 " closed > %" PRIu64 " accepted", what,
		       st.conns_closed, st.conns_accepted);
		CHECKF(st.conns_open == st.conns_accepted - st.conns_closed, "%s: conns_open", what);
		CHECKF((long)st.wrong_thread_calls >= exp && (long)st.wrong_thread_calls <= exp + maybe,
		       "%s: wrong_thread_calls %" PRIu64 ", the harness made %ld (+%ld from next_timeout)", what,
		       st.wrong_thread_calls, exp, maybe);
		CHECKF((long)st.stale_handle_calls >= atomic_load(&g->closed_exp[s]),
		       "%s: stale_handle_calls %" PRIu64 " < %ld calls on closed handles", what, st.stale_handle_calls,
		       atomic_load(&g->closed_exp[s]));
		CHECKF((long)st.conn_panics <= atomic_load(&g->panics[s]), "%s: %" PRIu64 " connection panics, %ld injected",
		       what, st.conn_panics, atomic_load(&g->panics[s]));
		if (s == SRV) {
			CHECKF((long)st.requests >= atomic_load(&g->srv_requests_seen), "%s: requests", what);
			CHECKF((long)st.handshakes >= atomic_load(&g->srv_est_seen), "%s: handshakes", what);
		} else {
			CHECKF((long)st.handshakes >= atomic_load(&g->cli_est_seen), "%s: handshakes", what);
		}
		/* the workers add up to the engine */
		memset(&sum, 0, sizeof(sum));
		sf = STAT_FIELDS(&sum);
		for (int w = 0; w < opt_threads; w++) {
			haquic_stats ws;

			EXPECT(HAQUIC_STATS_INIT(&ws), M_OK);
			EXPECT(haquic_worker_stats(g->eng[s], (uint32_t)w, &ws), M_OK);
			stats_sane(&ws, what);
			for (size_t i = 0; i < STAT_COUNT; i++)
				((uint64_t *)sf)[i] += STAT_FIELDS(&ws)[i];
		}
		f = STAT_FIELDS(&st);
		for (size_t i = 1; i < STAT_COUNT; i++) {   /* 0 is conns_open */
			if (&f[i] == &st.drop_unparsable)
				CHECKF(f[i] >= sf[i], "%s: drop_unparsable below the workers' sum", what);
			else
				CHECKF(f[i] == sf[i], "%s: counter #%zu: engine %" PRIu64 ", workers' sum %" PRIu64, what, i,
				       f[i], sf[i]);
		}
		/* the listeners add up to the engine's connection counters */
		memset(&sum, 0, sizeof(sum));
		for (int k = -1; k < (s == SRV ? g->nchurn : 0); k++) {
			const haquic_listener *l = k < 0 ? g->lis[s] : g->churn[k];

			EXPECT(HAQUIC_STATS_INIT(&ls), M_OK);
			EXPECT(haquic_listener_stats(l, &ls), M_OK);
			stats_sane(&ls, what);
			sum.conns_accepted += ls.conns_accepted;
			sum.conns_closed += ls.conns_closed;
			sum.handshakes += ls.handshakes;
			sum.requests += ls.requests;
			sum.requests_rejected += ls.requests_rejected;
			sum.h3_message_errors += ls.h3_message_errors;
		}
		CHECKF(sum.conns_accepted == st.conns_accepted && sum.conns_closed == st.conns_closed &&
		       sum.handshakes == st.handshakes && sum.requests == st.requests &&
		       sum.requests_rejected == st.requests_rejected && sum.h3_message_errors == st.h3_message_errors,
		       "%s: listener counters (accepted %" PRIu64 "/%" PRIu64 ", closed %" PRIu64 "/%" PRIu64
		       ", handshakes %" PRIu64 "/%" PRIu64 ", requests %" PRIu64 "/%" PRIu64 ")",
		       what, sum.conns_accepted, st.conns_accepted, sum.conns_closed, st.conns_closed, sum.handshakes,
		       st.handshakes, sum.requests, st.requests);
	}
}

/* Graceful or abrupt retirement, chosen per generation. */
static void gen_retire(struct gen *g)
{
	static const char *const what[] = { "nothing", "engine_shutdown(server)", "listener_shutdown",
	                                    "engine_shutdown(client)", "listener_close", "engine_shutdown(both)" };

	atomic_store(&g->state, GS_RETIRING);
	g->retire_ms = now_ms();
	g->dead_ms = g->retire_ms + 500 + rnd(&main_rng, 4000);
	switch (g->retire_action) {
	case 1: EXPECT(haquic_engine_shutdown(g->eng[SRV]), M_OK); break;
	case 2: EXPECT(haquic_listener_shutdown(g->lis[SRV]), M_OK); break;
	case 3: EXPECT(haquic_engine_shutdown(g->eng[CLI]), M_OK); break;
	case 4: EXPECT(haquic_listener_close(g->lis[SRV]), M_OK); break;
	case 5:
		EXPECT(haquic_engine_shutdown(g->eng[SRV]), M_OK);
		EXPECT(haquic_engine_shutdown(g->eng[CLI]), M_OK);
		break;
	default: break;
	}
	if (opt_verbose)
		printf("spin: generation %d retiring (%s)\n", g->id, what[g->retire_action]);
}

static struct {
	long gens_freed;
	uint64_t srv_conns, cli_conns, srv_handshakes, requests, rejected, msg_errors, wrong, stale, panics;
	uint64_t drops_queue, drops_unknown, resets_sent, retries, paced, held, zero_rtt, drop_conn_limit;
} freed_totals;

/* DEAD: no new borrow; wait for the borrows to end; check the counters;
 * drop the harness's engine and listener references (the engines are freed
 * with connection and stream handles still held); FREED. */
static void gen_kill(struct gen *g)
{
	haquic_stats st;

	set_op(NULL, "gen_kill: wait for borrows", 0);
	pthread_mutex_lock(&tbl);
	atomic_store(&g->state, GS_DEAD);
	pthread_mutex_unlock(&tbl);
	for (;;) {
		long b;

		pthread_mutex_lock(&tbl);
		b = g->borrows;
		pthread_mutex_unlock(&tbl);
		CHECK(b >= 0);
		if (!b)
			break;
		usleep(200);
	}
	set_op(NULL, "gen_kill: check counters", 0);
	gen_check_quiescent(g);
	stats_of(g->eng[SRV], &st);
	freed_totals.srv_conns += st.conns_accepted;
	freed_totals.srv_handshakes += st.handshakes;
	freed_totals.requests += st.requests;
	freed_totals.rejected += st.requests_rejected;
	freed_totals.msg_errors += st.h3_message_errors;
	freed_totals.wrong += st.wrong_thread_calls;
	freed_totals.stale += st.stale_handle_calls;
	freed_totals.panics += st.conn_panics;
	freed_totals.drops_queue += st.drop_queue_full;
	freed_totals.drops_unknown += st.drop_unknown_cid;
	freed_totals.resets_sent += st.resets_sent;
	freed_totals.retries += st.retries_sent;
	freed_totals.zero_rtt += st.zero_rtt_accepted;
	freed_totals.drop_conn_limit += st.drop_conn_limit;
	freed_totals.paced += st.packets_paced;
	freed_totals.held += st.sends_held;
	stats_of(g->eng[CLI], &st);
	freed_totals.cli_conns += st.conns_accepted;
	freed_totals.wrong += st.wrong_thread_calls;
	freed_totals.stale += st.stale_handle_calls;
	freed_totals.panics += st.conn_panics;
	freed_totals.drops_queue += st.drop_queue_full;
	freed_totals.paced += st.packets_paced;
	set_op(NULL, "gen_kill: unref", 0);
	for (int s = 0; s < 2; s++) {
		haquic_listener_unref(g->lis[s]);
		dropped();
	}
	/* drop the engines in a random order; the configurations outlive them */
	if (chance(&main_rng, 500)) {
		eng_unref(g->eng[SRV]);
		eng_unref(g->eng[CLI]);
	} else {
		eng_unref(g->eng[CLI]);
		eng_unref(g->eng[SRV]);
	}
	for (int s = 0; s < 2; s++) {
		haquic_config_unref(g->cfg[s]);
		dropped();
	}
	pthread_mutex_lock(&tbl);
	atomic_store(&g->state, GS_FREED);
	for (int i = 0; i < nactive; i++)
		if (active[i] == g) {
			memmove(&active[i], &active[i + 1], (nactive - i - 1) * sizeof(active[0]));
			nactive--;
			break;
		}
	pthread_mutex_unlock(&tbl);
	freed_totals.gens_freed++;
	if (opt_verbose)
		printf("spin: generation %d freed\n", g->id);
}

/* ---- picking handles from the table ---------------------------------------------------- */

enum { WHO_ANY, WHO_OTHER };

struct pick {
	int idx, kind, side, owner;
	uint64_t serial, sid;
	struct gen *g;
	const void *h, *conn;
	struct app *app;
	int borrowed;     /* the generation is borrowed: its engines are alive */
	int freed;        /* the generation is FREED: its engines are gone */
};

/* Picks a random handle (kinds in kind_mask) that another thread (WHO_OTHER)
 * or any thread owns, takes a reference on it, and borrows its generation
 * unless that is FREED. need: 1 borrowed only, 2 FREED only, 0 either. */
static int pick_slot(struct thr *t, unsigned kind_mask, int who, int need, struct pick *p)
{
	int found = 0;

	pthread_mutex_lock(&tbl);
	if (nused) {
		int start = (int)rnd(&t->rng, nused);

		for (int i = 0; i < nused && !found; i++) {
			struct slot *s = &slots[dense[(start + i) % nused]];
			int st = atomic_load(&s->g->state);

			if (!(kind_mask & (1u << s->kind)))
				continue;
			if (who == WHO_OTHER && (s->owner == t->idx || s->owner < 0))
				continue;
			if (st == GS_DEAD || (need == 1 && st == GS_FREED) || (need == 2 && st != GS_FREED))
				continue;
			p->idx = dense[(start + i) % nused];
			p->kind = s->kind;
			p->side = s->side;
			p->owner = s->owner;
			p->serial = s->serial;
			p->sid = s->sid;
			p->g = s->g;
			p->h = s->h;
			p->conn = s->conn;
			p->app = s->app;
			p->freed = st == GS_FREED;
			p->borrowed = !p->freed && gen_borrow_locked(s->g);
			h_ref(s->kind, s->h);
			found = 1;
		}
	}
	pthread_mutex_unlock(&tbl);
	return found;
}

static void pick_release(struct pick *p)
{
	h_unref(p->kind, p->h);
	if (p->borrowed)
		gen_release(p->g);
}

/* A random object this thread owns that `ok` accepts. */
static struct app *own_pick(struct thr *t, int (*ok)(struct thr *, struct app *))
{
	if (!t->nown)
		return NULL;
	for (int i = 0; i < 8; i++) {
		struct app *a = t->own[rnd(&t->rng, t->nown)];

		if (ok(t, a))
			return a;
	}
	int start = (int)rnd(&t->rng, t->nown);

	for (int i = 0; i < t->nown; i++) {
		struct app *a = t->own[(start + i) % t->nown];

		if (ok(t, a))
			return a;
	}
	return NULL;
}

static int gen_alive(struct gen *g)
{
	int st = atomic_load(&g->state);

	return st == GS_LIVE || st == GS_RETIRING;
}

/* Refreshes what the owner knows of an object's closed state; is_closed can
 * never go back to false. */
static int app_closed(struct thr *t, struct app *a)
{
	bool c = a->kind == SK_CONN ? haquic_conn_is_closed(a->h) : haquic_stream_is_closed(a->h);

	if (a->closed_seen && !c)
		FAILF("%s %p: is_closed went back to false", a->kind == SK_CONN ? "connection" : "stream", a->h);
	if (c && !a->closed_seen) {
		a->closed_seen = 1;
		a->closed_ms = now_ms();
		if (a->kind == SK_CONN && a->side == CLI)
			t->cli_conns_open--;
		if (a->kind == SK_STREAM && a->side == CLI)
			t->cli_streams_open--;
	}
	return c;
}

/* ---- headers ---------------------------------------------------------------------------- */

static haquic_header hdr(const char *n, const char *v)
{
	return (haquic_header){ (const uint8_t *)n, strlen(n), (const uint8_t *)v, strlen(v) };
}

static int hdr_is(const haquic_header *h, const char *name)
{
	return h->name_len == strlen(name) && memcmp(h->name, name, h->name_len) == 0;
}

/* ---- the server application -------------------------------------------------------------- */

static void server_progress(struct thr *t, struct app *a);
static const char *app_dump(const struct app *a);

/* Reads what the request body has (into the echo buffer for an echo). */
static void server_take(struct thr *t, struct app *a)
{
	for (int i = 0; i < 64 && !a->recv_done; i++) {
		size_t n = 0, cap = 1 + rnd(&t->rng, 65536);
		bool fin = false;
		unsigned char *dst = t->buf;
		int rc;

		if (a->plan == P_ECHO) {
			if (a->elen - a->eoff > 65536)
				break;    /* backpressure: the echo is behind */
			if (a->eoff) {
				memmove(a->ebuf, a->ebuf + a->eoff, a->elen - a->eoff);
				a->elen -= a->eoff;
				a->eoff = 0;
			}
			a->ebuf = realloc(a->ebuf, a->elen + cap);
			if (!a->ebuf)
				FAILF("out of memory");
			dst = a->ebuf + a->elen;
		}
		rc = LEGIT(haquic_stream_recv(a->h, dst, cap, &n, &fin),
		           M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED));
		if (rc == HAQUIC_ERR_CLOSED) {
			a->recv_done = 1;
			break;
		}
		if (rc != HAQUIC_OK)
			break;
		if (a->stop_sent)
			CHECKF(n == 0 && fin, "server stream %" PRIu64 ": %zu bytes read after STOP_SENDING", a->sid, n);
		if (!pattern_ok(dst, n, a->recv_off))
			FAILF("server stream %" PRIu64 ": request body corrupt at offset %" PRIu64, a->sid, a->recv_off);
		a->recv_off += n;
		cnt(t, C_BYTES_OK, n);
		if (a->plan == P_ECHO)
			a->elen += n;
		if (fin) {
			a->recv_done = 1;
			a->req_fin = 1;
			break;
		}
		if (!n)
			break;
	}
}

static void server_read(struct thr *t, struct app *a)
{
	server_take(t, a);
	server_progress(t, a);
}

static void server_send_body(struct thr *t, struct app *a)
{
	while (a->sent < a->total && !a->send_done) {
		size_t n = a->total - a->sent, w = 0;
		int fin, rc;

		if (n > 16384)
			n = 16384;
		fin = a->sent + n == a->total && a->plan != P_TRAILERS;
		pattern_fill(t->buf2, n, a->sent);
		rc = LEGIT(haquic_stream_send(a->h, t->buf2, n, fin, &w),
		           M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED));
		if (rc == HAQUIC_ERR_CLOSED) {
			a->send_done = 1;
			return;
		}
		if (rc != HAQUIC_OK)
			return;
		CHECK(w <= n);
		a->sent += w;
		if (w < n)
			return;
		if (fin)
			a->send_done = a->own_send_done = 1;
	}
}

static void server_progress(struct thr *t, struct app *a)
{
	char len[32];
	haquic_header h[3];
	int nh = 1, rc;

	if (a->send_done || a->plan == P_SILENT)
		return;
	if (a->plan == P_STOP && !a->stop_sent && !a->recv_done) {
		rc = LEGIT(haquic_stream_stop_sending(a->h, H3_NO_ERROR), M_OK | M(HAQUIC_ERR_CLOSED));
		if (rc == HAQUIC_OK) {
			a->stop_sent = 1;
			cnt(t, C_STOP_SENT, 1);
		}
	}
	if (!a->headers_sent) {
		int fin = a->total == 0 && (a->plan == P_HELLO || a->plan == P_SIZE || a->plan == P_STOP ||
		                            a->plan == P_GOAWAY || a->plan == P_CLOSE);

		h[0] = hdr(":status", "200");
		if (a->plan != P_ECHO) {
			snprintf(len, sizeof(len), "%" PRIu64, a->total);
			h[nh++] = hdr("content-length", len);
		}
		if (chance(&t->rng, 300))
			h[nh++] = hdr("server", "spin");
		rc = LEGIT(haquic_stream_send_headers(a->h, h, nh, fin),
		           M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED));
		if (rc == HAQUIC_ERR_INVALID_STATE || rc == HAQUIC_ERR_PROTOCOL) {
			/* the headers can never be sent: classify, and give up on it */
			cnt(t, client_did_stop(a->req_id) && !a->stop_recv ? C_LOST_STOP : C_REFUSED_OTHER, 1);
			if (opt_verbose)
				fprintf(stderr, "spin: send_headers -> %s (client stopped: %d) on %s\n", cname(rc),
				        client_did_stop(a->req_id), app_dump(a));
			/* what a host does with a stream it cannot answer */
			mark_server_reset(a->req_id);
			LEGIT(haquic_stream_reset(a->h, H3_INTERNAL_ERROR), M_OK | M(HAQUIC_ERR_CLOSED));
			a->send_done = 1;
			return;
		}
		if (rc == HAQUIC_ERR_CLOSED)
			a->send_done = 1;
		if (rc != HAQUIC_OK)
			return;
		a->headers_sent = 1;
		if (fin)
			a->send_done = a->own_send_done = 1;
	}
	switch (a->plan) {
	case P_RESET:
		mark_server_reset(a->req_id);
		rc = LEGIT(haquic_stream_reset(a->h, H3_REQUEST_CANCELLED), M_OK | M(HAQUIC_ERR_CLOSED));
		a->send_done = 1;
		if (rc == HAQUIC_OK) {
			a->own_send_done = a->send_reset = 1;
			cnt(t, C_RST_SENT, 1);
		}
		return;
	case P_ECHO:
	echo_again:
		while (!a->send_done && (a->eoff < a->elen || a->req_fin)) {
			size_t n = a->elen - a->eoff, w = 0;

			rc = LEGIT(haquic_stream_send(a->h, a->ebuf ? a->ebuf + a->eoff : t->buf2, n, a->req_fin, &w),
			           M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED));
			if (rc == HAQUIC_ERR_CLOSED)
				a->send_done = 1;
			if (rc != HAQUIC_OK)
				break;
			a->eoff += w;
			a->sent += w;
			if (w < n)
				break;
			if (a->req_fin)
				a->send_done = a->own_send_done = 1;
		}
		if (!a->recv_done && a->elen - a->eoff <= 65536) {
			size_t before = a->elen - a->eoff;
			int fin_before = a->req_fin;

			server_take(t, a);   /* more of the request body */
			if (a->elen - a->eoff > before || a->req_fin != fin_before)
				goto echo_again;
		}
		break;
	default:
		server_send_body(t, a);
		if (a->plan == P_TRAILERS && a->sent == a->total && !a->send_done) {
			haquic_header tr[2] = { hdr("x-spin-trailer", "1"), hdr("x-count", "2") };

			rc = LEGIT(haquic_stream_send_trailers(a->h, tr, 1 + rnd(&t->rng, 2)),
			           M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED));
			if (rc == HAQUIC_OK || rc == HAQUIC_ERR_CLOSED)
				a->send_done = 1;
			if (rc == HAQUIC_OK)
				a->own_send_done = 1;
		}
		break;
	}
	if (a->send_done && !a->goaway_done && (a->plan == P_GOAWAY || a->plan == P_CLOSE)) {
		a->goaway_done = 1;
		if (a->plan == P_GOAWAY) {
			if (LEGIT(haquic_conn_shutdown(a->conn), M_OK | M(HAQUIC_ERR_CLOSED)) == HAQUIC_OK)
				cnt(t, C_GOAWAY_SENT, 1);
		} else {
			LEGIT(haquic_conn_close(a->conn, H3_NO_ERROR, (const uint8_t *)"spin", 4),
			      M_OK | M(HAQUIC_ERR_CLOSED));
			cnt(t, C_CLOSE_CALLS, 1);
		}
	}
}

static void server_request(struct thr *t, struct gen *g, const haquic_event *ev)
{
	const char *path = "";
	size_t path_len = 0;
	char pbuf[64] = "";
	uint64_t req_id = 0;
	struct app *a;
	int post = 0, i;

	CHECKF(ev->stream != NULL && ev->conn != NULL, "REQUEST without a stream or a connection");
	CHECKF(haquic_stream_userdata(ev->stream) == NULL, "a new request's stream already has userdata");
	CHECKF(haquic_stream_id(ev->stream) % 4 == 0, "request on stream %" PRIu64, haquic_stream_id(ev->stream));
	atomic_fetch_add(&g->srv_requests_seen, 1);
	cnt(t, C_REQ_RECV, 1);
	for (size_t k = 0; k < ev->headers_len; k++) {
		const haquic_header *h = &ev->headers[k];

		CHECK(h->name != NULL && (h->value != NULL || h->value_len == 0));
		if (hdr_is(h, ":path")) {
			path = (const char *)h->value;
			path_len = h->value_len;
		}
		if (hdr_is(h, ":method") && h->value_len == 4 && memcmp(h->value, "POST", 4) == 0)
			post = 1;
		if (hdr_is(h, "x-spin-id") && h->value_len < 24) {
			char v[24];

			memcpy(v, h->value, h->value_len);
			v[h->value_len] = 0;
			req_id = strtoull(v, NULL, 10);
		}
	}
	memcpy(pbuf, path, path_len < sizeof(pbuf) - 1 ? path_len : sizeof(pbuf) - 1);
	if (t->nown >= 4096 || table_load() > SPIN_MAX_SLOTS * 7 / 8) {
		mark_server_reset(req_id);
		LEGIT(haquic_stream_reset(ev->stream, H3_EXCESSIVE_LOAD), M_OK | M(HAQUIC_ERR_CLOSED));
		return;
	}
	h_ref(SK_STREAM, ev->stream);
	a = app_new(t, SK_STREAM, SRV, g, ev->stream);
	a->conn = ev->conn;
	a->sid = haquic_stream_id(ev->stream);
	a->req_fin = ev->fin;
	a->recv_done = ev->fin;
	a->req_id = req_id;
	a->plan = P_HELLO;
	a->total = 5;
	for (i = 0; i < P_NPLANS; i++) {
		size_t l = strlen(plan_names[i]);

		if (pbuf[0] == '/' && strncmp(pbuf + 1, plan_names[i], l) == 0 && (pbuf[1 + l] == '/' || !pbuf[1 + l])) {
			a->plan = i;
			if (pbuf[1 + l] == '/')
				a->total = strtoull(pbuf + 2 + l, NULL, 10);
			break;
		}
	}
	if (a->plan == P_ECHO)
		a->total = 0;
	if (post && a->plan != P_ECHO && a->plan != P_STOP && a->plan != P_RESET && a->plan != P_SILENT)
		a->plan = P_ECHO;
	EXPECT(haquic_stream_set_userdata(ev->stream, a), M_OK);
	own_add(t, a);
	if (table_add(SK_STREAM, SRV, t->idx, g, ev->stream, a, a->sid, ev->conn) < 0) {
		/* never published: the owner list keeps it, with slot -1 */
	}
	if (chance(&t->rng, 700))
		server_progress(t, a);
}

/* ---- the client application ---------------------------------------------------------------- */

/* The harness's view of a stream and the library's, for failure reports. */
static const char *app_dump(const struct app *a)
{
	static _Thread_local char b[512];
	haquic_conn_stats cs;

	HAQUIC_CONN_STATS_INIT(&cs);
	haquic_conn_get_stats(a->conn, &cs);
	snprintf(b, sizeof(b),
	         "[stream %" PRIu64 " %s plan %s total %" PRIu64 " recv_off %" PRIu64 " upload %" PRIu64 "/%" PRIu64
	         " fin_sent %d got_response %d status %d reset_recv %d stop_recv %d stop_sent %d send_reset %d"
	         " recv_done %d send_done %d trailers %d; library: stream closed %d, conn closed %d (code 0x%" PRIx64
	         " app %u), gen %d loss %u dup %u reorder %u corrupt %u trunc %u]",
	         a->sid, a->side == SRV ? "server" : "client", plan_names[a->plan], a->total, a->recv_off, a->upload_off,
	         a->upload_total, a->upload_fin, a->got_response, a->status, a->reset_recv, a->stop_recv, a->stop_sent,
	         a->send_reset, a->recv_done, a->send_done, a->trailers_recv, haquic_stream_is_closed(a->h),
	         haquic_conn_is_closed(a->conn), cs.close_code, cs.close_is_app, a->g->id, a->g->loss, a->g->dup,
	         a->g->reorder, a->g->corrupt, a->g->trunc);
	return b;
}

/* Whether a FIN ends the body the plan promised. */
static int client_fin_ok(const struct app *a)
{
	if (!a->got_response || a->plan == P_RESET || a->plan == P_SILENT)
		return 0;
	if (a->plan == P_ECHO)
		return !a->upload_fin || a->send_reset || a->recv_off == a->upload_total;
	return a->recv_off == a->total;
}

/* The end of a response body. A FIN that does not match the plan is judged
 * once every pending event is polled (final): haquic_stream_recv also gives
 * FIN for a stream the peer reset, and the STREAM_RESET event may still be
 * queued behind the READABLE that led here. */
static void client_fin(struct thr *t, struct app *a, int final)
{
	if (a->stop_sent || a->finished || a->reset_recv)
		return;
	if (client_fin_ok(a)) {
		a->finished = 1;
		cnt(t, C_RESP_OK, 1);
		return;
	}
	if (!final) {
		if (!a->fin_pending && t->npend < 256) {
			a->fin_pending = 1;
			t->pend[t->npend] = a;
			t->pend_iter[t->npend++] = t->iter;
		}
		return;
	}
	if (opt_trace)
		fprintf(stderr, "trace: failing stream %p\n", a->h);
	if (server_did_reset(a->req_id)) {
		cnt(t, C_RESET_AS_FIN, 1);
		if (opt_allow_reset_fin)
			return;
		FAILF("a stream the server reset (RESET_STREAM) ended with a clean FIN and no STREAM_RESET event: "
		      "quiche sent an empty STREAM frame with FIN after RESET_STREAM (--allow-reset-fin counts these) %s",
		      app_dump(a));
	}
	if (!a->got_response)
		FAILF("body FIN and no response head (no STREAM_RESET either) %s", app_dump(a));
	if (a->plan == P_RESET || a->plan == P_SILENT)
		FAILF("FIN the server never sent (no STREAM_RESET either) %s", app_dump(a));
	FAILF("body of %" PRIu64 " bytes at FIN, %" PRIu64 " expected %s", a->recv_off,
	      a->plan == P_ECHO ? a->upload_total : a->total, app_dump(a));
}

/* Judges the pending FINs of generation g once its events are all polled. */
static void judge_fins(struct thr *t, struct gen *g)
{
	for (int i = 0; i < t->npend;) {
		struct app *a = t->pend[i];

		if (a->g == g && t->pend_iter[i] < t->iter) {
			t->pend[i] = t->pend[--t->npend];
			t->pend_iter[i] = t->pend_iter[t->npend];
			a->fin_pending = 0;
			client_fin(t, a, 1);
		} else {
			i++;
		}
	}
}

static void client_read(struct thr *t, struct app *a)
{
	for (int i = 0; i < 64 && !a->recv_done; i++) {
		size_t n = 0, cap = 1 + rnd(&t->rng, 65536);
		bool fin = false;
		int rc = LEGIT(haquic_stream_recv(a->h, t->buf, cap, &n, &fin),
		               M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED));

		if (opt_trace)
			fprintf(stderr, "trace: t%d it%lld %p sid %" PRIu64 " recv(op %s) -> %s n %zu fin %d\n", t->idx, t->iter,
			        a->h, a->sid, atomic_load(&t->op), cname(rc), n, fin);

		if (rc == HAQUIC_ERR_CLOSED) {
			a->recv_done = 1;
			break;
		}
		if (rc != HAQUIC_OK)
			break;
		if (a->stop_sent)
			CHECKF(n == 0 && fin, "client stream %" PRIu64 ": %zu bytes read after STOP_SENDING", a->sid, n);
		if (!pattern_ok(t->buf, n, a->recv_off))
			FAILF("client stream %" PRIu64 " (%s): response body corrupt at offset %" PRIu64, a->sid,
			      plan_names[a->plan], a->recv_off);
		a->recv_off += n;
		cnt(t, C_BYTES_OK, n);
		if (fin) {
			a->recv_done = 1;
			client_fin(t, a, 0);
			break;
		}
		if (!n)
			break;
	}
}

static void client_upload(struct thr *t, struct app *a)
{
	while (!a->send_done && a->upload_off < a->upload_total) {
		size_t n = a->upload_total - a->upload_off, w = 0;
		int fin, rc;

		if (n > 16384)
			n = 16384;
		fin = a->upload_off + n == a->upload_total;
		pattern_fill(t->buf2, n, a->upload_off);
		rc = LEGIT(haquic_stream_send(a->h, t->buf2, n, fin, &w),
		           M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED));
		if (rc == HAQUIC_ERR_INVALID_STATE || rc == HAQUIC_ERR_PROTOCOL) {
			/* the upload can never go on (see the server's send_headers) */
			cnt(t, a->stop_recv ? C_REFUSED_OTHER : C_LOST_STOP, 1);
			LEGIT(haquic_stream_reset(a->h, H3_REQUEST_CANCELLED), M_OK | M(HAQUIC_ERR_CLOSED));
			a->send_done = a->send_reset = 1;
			return;
		}
		if (rc == HAQUIC_ERR_CLOSED)
			a->send_done = 1;
		if (rc != HAQUIC_OK)
			return;
		CHECK(w <= n);
		a->upload_off += w;
		cnt(t, C_UPLOAD, w);
		if (w < n)
			return;
		if (fin)
			a->send_done = a->own_send_done = a->upload_fin = 1;
	}
	if (!a->send_done && a->upload_off == a->upload_total) {
		size_t w = 1;
		int rc = LEGIT(haquic_stream_send(a->h, NULL, 0, true, &w),
		               M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED));

		if (rc == HAQUIC_OK) {
			CHECK(w == 0);
			a->send_done = a->own_send_done = a->upload_fin = 1;
		} else if (rc == HAQUIC_ERR_CLOSED) {
			a->send_done = 1;
		}
	}
}

/* ---- events ------------------------------------------------------------------------------- */

static void handle_event(struct thr *t, struct gen *g, int side, const haquic_event *ev)
{
	struct app *ca = NULL, *sa = NULL;

	cnt(t, C_EVENTS, 1);
	CHECKF(ev->struct_size == sizeof(*ev), "event struct_size %u", ev->struct_size);
	if (ev->conn) {
		CHECKF(haquic_conn_worker(ev->conn) == (uint32_t)t->idx, "event of worker %u polled on worker %d",
		       haquic_conn_worker(ev->conn), t->idx);
		ca = haquic_conn_userdata(ev->conn);
		if (ca) {
			CHECKF(ca->owner == t->idx && ca->h == ev->conn && ca->kind == SK_CONN,
			       "connection userdata %p is not this thread's", (void *)ca);
			CHECKF(!ca->closed_ev, "event %d after CONN_CLOSED", ev->kind);
		}
	}
	if (ev->stream) {
		if (opt_trace && side == CLI)
			fprintf(stderr, "trace: t%d it%lld %p sid %" PRIu64 " event %d code 0x%" PRIx64 " fin %d\n", t->idx,
			        t->iter, ev->stream, haquic_stream_id(ev->stream), ev->kind, ev->code, ev->fin);
		CHECKF(haquic_stream_conn(ev->stream) == ev->conn, "stream event: the stream's connection is not ev.conn");
		if (ev->kind != HAQUIC_EVENT_REQUEST) {
			sa = haquic_stream_userdata(ev->stream);
			if (sa)
				CHECKF(sa->owner == t->idx && sa->h == ev->stream && sa->kind == SK_STREAM,
				       "stream userdata %p is not this thread's", (void *)sa);
		}
	}
	switch (ev->kind) {
	case HAQUIC_EVENT_CONN_ESTABLISHED:
		CHECK(ev->conn != NULL);
		if (side == SRV) {
			atomic_fetch_add(&g->srv_est_seen, 1);
			cnt(t, C_SRV_EST, 1);
			CHECKF(ca == NULL, "server connection established twice");
			if (t->nown < 4096 && table_load() < SPIN_MAX_SLOTS * 3 / 4) {
				h_ref(SK_CONN, ev->conn);
				ca = app_new(t, SK_CONN, SRV, g, ev->conn);
				ca->established = 1;
				EXPECT(haquic_conn_set_userdata(ev->conn, ca), M_OK);
				own_add(t, ca);
				table_add(SK_CONN, SRV, t->idx, g, ev->conn, ca, 0, NULL);
			}
		} else {
			atomic_fetch_add(&g->cli_est_seen, 1);
			cnt(t, C_CLI_EST, 1);
			if (ca) {
				CHECKF(!ca->established, "client connection established twice");
				ca->established = 1;
			}
		}
		break;
	case HAQUIC_EVENT_REQUEST:
		CHECKF(side == SRV, "REQUEST event on the client");
		server_request(t, g, ev);
		break;
	case HAQUIC_EVENT_RESPONSE:
		CHECKF(side == CLI, "RESPONSE event on the server");
		if (sa) {
			CHECKF(!sa->got_response, "stream %" PRIu64 ": two final responses", sa->sid);
			sa->got_response = 1;
			for (size_t k = 0; k < ev->headers_len; k++)
				if (hdr_is(&ev->headers[k], ":status")) {
					const uint8_t *v = ev->headers[k].value;

					sa->status = ev->headers[k].value_len == 3 ? (v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0')
					                                           : -1;
				}
			CHECKF(sa->status == 200, "stream %" PRIu64 ": status %d", sa->sid, sa->status);
			if (ev->fin) {
				sa->recv_done = 1;
				client_fin(t, sa, 1);
			} else if (sa->fin_pending) {
				/* the body was read (to a FIN) before this head was polled */
				client_fin(t, sa, 0);
			}
		}
		break;
	case HAQUIC_EVENT_TRAILERS:
		cnt(t, C_TRAILERS, 1);
		if (sa)
			sa->trailers_recv++;
		break;
	case HAQUIC_EVENT_STREAM_READABLE:
	case HAQUIC_EVENT_STREAM_FINISHED:
		if (sa)
			(side == SRV ? server_read : client_read)(t, sa);
		break;
	case HAQUIC_EVENT_STREAM_WRITABLE:
		if (sa)
			(side == SRV ? server_progress : client_upload)(t, sa);
		break;
	case HAQUIC_EVENT_STREAM_RESET:
		cnt(t, C_RST_RECV, 1);
		if (sa)
			sa->reset_recv = 1;
		break;
	case HAQUIC_EVENT_STOP_SENDING:
		cnt(t, C_STOP_RECV, 1);
		if (sa)
			sa->stop_recv = sa->send_done = 1;
		break;
	case HAQUIC_EVENT_GOAWAY:
		cnt(t, C_GOAWAY_RECV, 1);
		if (ca)
			ca->goaway_recv = 1;
		break;
	case HAQUIC_EVENT_CONN_CLOSED:
		CHECK(ev->conn != NULL);
		cnt(t, C_CLOSED_EV, 1);
		CHECKF(haquic_conn_is_closed(ev->conn), "CONN_CLOSED but haquic_conn_is_closed is false");
		CHECK(ev->reason != NULL || ev->reason_len == 0);
		{
			haquic_conn_stats cs;

			EXPECT(HAQUIC_CONN_STATS_INIT(&cs), M_OK);
			EXPECT(haquic_conn_get_stats(ev->conn, &cs), M_OK);
			CHECKF(cs.closed == 1, "CONN_CLOSED but the statistics say open");
		}
		if (ca) {
			ca->closed_ev = 1;
			ca->close_code = ev->code;
			app_closed(t, ca);
		}
		break;
	case HAQUIC_EVENT_FD_REGISTER:
	case HAQUIC_EVENT_FD_RELEASE:
		FAILF("fd event %d on a host-fed listener", ev->kind);
	default:
		FAILF("unknown event kind %d", ev->kind);
	}
}

/* ---- moving datagrams ------------------------------------------------------------------------ */

static void deliver(struct thr *t, struct gen *g, int to, const unsigned char *data, size_t len)
{
	int rc = EXPECT(haquic_listener_recv(g->eng[to], g->lis[to], data, len, &g->addr[1 - to], sizeof(g->addr[0])),
	                M_OK | M(HAQUIC_ERR_QUEUE_FULL) | M(HAQUIC_ERR_PROTOCOL));

	if (rc == HAQUIC_ERR_QUEUE_FULL)
		cnt(t, C_DG_QFULL, 1);
}

/* A datagram from side `from`, through the generation's impairments. */
static void route(struct thr *t, struct gen *g, int from, unsigned char *data, size_t len)
{
	int to = 1 - from;

	cnt(t, C_DG_MOVED, 1);
	if (from == CLI && len <= 1500) {
		memcpy(t->ring[t->ring_next % RING], data, len);
		t->ring_len[t->ring_next++ % RING] = len;
	}
	if (g->loss && chance(&t->rng, g->loss)) {
		cnt(t, C_DG_DROP, 1);
		return;
	}
	if (g->corrupt && len && chance(&t->rng, g->corrupt)) {
		data[rnd(&t->rng, (uint32_t)len)] ^= (unsigned char)(1 + rnd(&t->rng, 255));
		cnt(t, C_DG_CORRUPT, 1);
	}
	if (g->trunc && chance(&t->rng, g->trunc)) {
		len = rnd(&t->rng, (uint32_t)len);
		cnt(t, C_DG_TRUNC, 1);
	}
	if (g->reorder && t->nhold < HOLD_MAX && chance(&t->rng, g->reorder)) {
		struct held *h = &t->hold[t->nhold++];

		h->g = g;
		h->to = to;
		h->due = t->iter + 1 + rnd(&t->rng, 3);
		h->len = len;
		h->data = malloc(len ? len : 1);
		if (!h->data)
			FAILF("out of memory");
		memcpy(h->data, data, len);
		cnt(t, C_DG_REORDER, 1);
		return;
	}
	deliver(t, g, to, data, len);
	if (g->dup && chance(&t->rng, g->dup)) {
		deliver(t, g, to, data, len);
		cnt(t, C_DG_DUP, 1);
	}
}

static void release_held(struct thr *t, struct gen *g, int all)
{
	for (int i = 0; i < t->nhold;) {
		struct held *h = &t->hold[i];

		if (h->g == g && (all || h->due <= t->iter)) {
			if (!all)
				deliver(t, g, h->to, h->data, h->len);
			free(h->data);
			*h = t->hold[--t->nhold];
		} else {
			i++;
		}
	}
}

/* Drives this thread's worker of both engines of a borrowed generation. */
static void drive(struct thr *t, struct gen *g)
{
	struct sockaddr_storage peer;
	haquic_event ev;

	set_op(t, "drive", 0);
	for (int s = 0; s < 2; s++) {
		const haquic_engine *e = g->eng[s];
		uint32_t w = (uint32_t)t->idx;
		int n, rc;

		EXPECT(haquic_worker_process(e, w), M_OK);
		if (!atomic_load_explicit(&g->bound[s][w], memory_order_relaxed))
			atomic_store(&g->bound[s][w], 1);
		EXPECT(HAQUIC_EVENT_INIT(&ev), M_OK);
		for (n = 0; n < 1000000; n++) {
			rc = EXPECT(haquic_worker_poll(e, w, &ev), M_OK | M(HAQUIC_ERR_WOULD_BLOCK));
			if (rc != HAQUIC_OK)
				break;
			handle_event(t, g, s, &ev);
		}
		if (s == CLI)
			judge_fins(t, g);
		EXPECT(haquic_worker_process(e, w), M_OK);
		for (n = 0; n < 2048; n++) {
			size_t len = 0, plen = 0;

			rc = EXPECT(haquic_worker_pop_datagram(e, w, t->buf, 65536, &len, &peer, sizeof(peer), &plen),
			            M_OK | M(HAQUIC_ERR_WOULD_BLOCK));
			if (rc != HAQUIC_OK)
				break;
			CHECKF(len > 0 && len <= 65527, "datagram of %zu bytes", len);
			CHECKF(plen == sizeof(struct sockaddr_in), "peer address of %zu bytes", plen);
			route(t, g, s, t->buf, len);
		}
	}
	release_held(t, g, 0);
}

/* ---- legitimate operations ---------------------------------------------------------------- */

static int ok_cli_conn_for_request(struct thr *t, struct app *a)
{
	(void)t;
	return a->kind == SK_CONN && a->side == CLI && (a->established || (a->resumed && a->g->early)) &&
	       !a->closed_seen && !a->goaway_recv && !a->raw && gen_alive(a->g);
}

static void op_connect(struct thr *t)
{
	struct gen *g;
	const haquic_conn *c = NULL;
	const char *sni = chance(&t->rng, 900) ? "haquic.test" : NULL;
	int resume, rc;
	struct app *a;

	if (t->cli_conns_open >= 6 || t->nown >= 3000 || table_load() > SPIN_MAX_SLOTS * 3 / 4)
		return;
	if (!(g = borrow_current()))
		return;
	resume = t->sess_gen == g->id && t->sess_len && chance(&t->rng, 400);
	if (resume)
		rc = LEGIT(haquic_worker_connect_with_session(g->eng[CLI], (uint32_t)t->idx, g->lis[CLI], &g->addr[SRV],
		                                              sizeof(g->addr[SRV]), sni, t->sess, t->sess_len, &c),
		           M_OK);
	else
		rc = LEGIT(haquic_worker_connect(g->eng[CLI], (uint32_t)t->idx, g->lis[CLI], &g->addr[SRV],
		                                 sizeof(g->addr[SRV]), sni, &c),
		           M_OK);
	if (rc == HAQUIC_OK) {
		took();
		atomic_fetch_add(&g->connects, 1);
		cnt(t, resume ? C_RESUMES : C_CONNECTS, 1);
		CHECK(c != NULL);
		CHECK(haquic_conn_worker(c) == (uint32_t)t->idx);
		CHECK(haquic_conn_listener(c) == g->lis[CLI]);
		CHECK(haquic_conn_userdata(c) == NULL);
		a = app_new(t, SK_CONN, CLI, g, c);
		a->resumed = resume;
		EXPECT(haquic_conn_set_userdata(c, a), M_OK);
		own_add(t, a);
		table_add(SK_CONN, CLI, t->idx, g, c, a, 0, NULL);
	}
	gen_release(g);
}

static void op_request(struct thr *t)
{
	static const int weights[P_NPLANS] = { 2, 40, 20, 10, 7, 7, 4, 6, 4 };
	struct app *ca, *a;
	char path[64], up[32];
	haquic_header h[7];
	char idbuf[32];
	uint64_t req_id = atomic_fetch_add(&next_req_id, 1);
	const haquic_stream *s = NULL;
	int plan = 0, nh = 0, post, rc, r;
	uint64_t n = 0, upload = 0;

	if (t->cli_streams_open >= 48 || t->nown >= 3000 || table_load() > SPIN_MAX_SLOTS * 3 / 4)
		return;
	if (!(ca = own_pick(t, ok_cli_conn_for_request)))
		return;
	for (r = (int)rnd(&t->rng, 100); r >= weights[plan]; plan++)
		r -= weights[plan];
	n = chance(&t->rng, 100) ? rnd(&t->rng, 1u << 20) : rnd(&t->rng, 4096);
	post = plan == P_ECHO || ((plan == P_STOP || plan == P_RESET || plan == P_SILENT) && chance(&t->rng, 500));
	if (post)
		upload = chance(&t->rng, 100) ? rnd(&t->rng, 256 * 1024) : rnd(&t->rng, 8192);
	if (plan == P_HELLO || plan == P_STOP)
		n = 5;
	if (plan == P_ECHO)
		snprintf(path, sizeof(path), "/echo");
	else
		snprintf(path, sizeof(path), "/%s/%" PRIu64, plan_names[plan], n);
	h[nh++] = hdr(":method", post ? "POST" : "GET");
	h[nh++] = hdr(":scheme", "https");
	h[nh++] = hdr(":authority", "haquic.test");
	h[nh++] = hdr(":path", path);
	if (post && chance(&t->rng, 300)) {
		snprintf(up, sizeof(up), "%" PRIu64, upload);
		h[nh++] = hdr("content-length", up);
	}
	if (chance(&t->rng, 300))
		h[nh++] = hdr("user-agent", "haquic-spin");
	snprintf(idbuf, sizeof(idbuf), "%" PRIu64, req_id);
	h[nh++] = hdr("x-spin-id", idbuf);
	ca->nreq++;
	rc = LEGIT(haquic_conn_send_request(ca->h, h, nh, !post, &s),
	           M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED));
	if (rc != HAQUIC_OK)
		return;
	took();
	cnt(t, C_REQ_SENT, 1);
	CHECK(s != NULL);
	CHECK(haquic_stream_conn(s) == ca->h);
	CHECKF(haquic_stream_id(s) % 4 == 0, "client stream id %" PRIu64, haquic_stream_id(s));
	CHECK(haquic_stream_userdata(s) == NULL);
	a = app_new(t, SK_STREAM, CLI, ca->g, s);
	a->conn = ca->h;
	a->sid = haquic_stream_id(s);
	a->plan = plan;
	a->req_id = req_id;
	a->total = plan == P_ECHO ? 0 : n;
	a->headers_sent = 1;
	a->upload_total = upload;
	if (!post)
		a->send_done = a->own_send_done = a->upload_fin = 1;
	EXPECT(haquic_stream_set_userdata(s, a), M_OK);
	own_add(t, a);
	table_add(SK_STREAM, CLI, t->idx, ca->g, s, a, a->sid, ca->h);
	if (post)
		client_upload(t, a);
}

static int ok_stream_open(struct thr *t, struct app *a)
{
	(void)t;
	return a->kind == SK_STREAM && !a->closed_seen && gen_alive(a->g);
}

static int ok_cli_upload(struct thr *t, struct app *a)
{
	return ok_stream_open(t, a) && a->side == CLI && !a->send_done;
}

static int ok_recv(struct thr *t, struct app *a)
{
	return ok_stream_open(t, a) && !a->recv_done;
}

static int ok_srv_pending(struct thr *t, struct app *a)
{
	return ok_stream_open(t, a) && a->side == SRV && !a->send_done;
}

static void op_upload(struct thr *t)
{
	struct app *a = own_pick(t, ok_cli_upload);

	if (a)
		client_upload(t, a);
}

static void op_recv(struct thr *t)
{
	struct app *a = own_pick(t, ok_recv);

	if (a)
		(a->side == SRV ? server_read : client_read)(t, a);
}

static void op_server_progress(struct thr *t)
{
	struct app *a = own_pick(t, ok_srv_pending);

	if (a)
		server_progress(t, a);
}

static const uint64_t codes[] = { H3_NO_ERROR, H3_GENERAL_PROTOCOL_ERROR, H3_INTERNAL_ERROR, H3_EXCESSIVE_LOAD,
                                  H3_REQUEST_REJECTED, H3_REQUEST_CANCELLED, 0x21, 0x1f21, (1ull << 62) - 1 };

static uint64_t rand_code(struct thr *t)
{
	return codes[rnd(&t->rng, sizeof(codes) / sizeof(codes[0]))];
}

/* RESET_STREAM on an open stream; afterwards a send must give CLOSED. */
static void op_stream_reset(struct thr *t)
{
	struct app *a = own_pick(t, ok_stream_open);
	size_t w = 7;
	int rc;

	if (!a)
		return;
	if (a->side == SRV)
		mark_server_reset(a->req_id);
	rc = LEGIT(haquic_stream_reset(a->h, rand_code(t)), M_OK | M(HAQUIC_ERR_CLOSED));
	a->send_done = 1;
	if (rc != HAQUIC_OK)
		return;
	a->own_send_done = a->send_reset = 1;
	cnt(t, C_RST_SENT, 1);
	if (a->side == SRV && !a->headers_sent)
		a->headers_sent = 1;    /* nothing may be sent any more */
	EXPECT(haquic_stream_send(a->h, (const uint8_t *)"x", 1, false, &w), M(HAQUIC_ERR_CLOSED));
	CHECK(w == 7);
	cnt(t, C_MIS_STATE, 1);
}

/* STOP_SENDING on an open stream; afterwards a read gives FIN at once, or
 * CLOSED. */
static void op_stream_stop(struct thr *t)
{
	struct app *a = own_pick(t, ok_recv);
	size_t n = 99;
	bool fin = false;
	int rc;

	if (!a)
		return;
	if (a->side == CLI)
		mark_client_stop(a->req_id);
	rc = LEGIT(haquic_stream_stop_sending(a->h, rand_code(t)), M_OK | M(HAQUIC_ERR_CLOSED));
	if (rc != HAQUIC_OK)
		return;
	a->stop_sent = 1;
	cnt(t, C_STOP_SENT, 1);
	rc = EXPECT(haquic_stream_recv(a->h, t->buf, 100, &n, &fin), M_OK | M(HAQUIC_ERR_CLOSED));
	if (rc == HAQUIC_OK)
		CHECKF(n == 0 && fin, "read after STOP_SENDING: %zu bytes, fin %d", n, fin);
	a->recv_done = 1;
	cnt(t, C_MIS_STATE, 1);
}

static int ok_conn_open(struct thr *t, struct app *a)
{
	(void)t;
	return a->kind == SK_CONN && !a->closed_seen && gen_alive(a->g);
}

/* An open connection that did its work (or has lived long enough): most
 * closes and shutdowns pick one of these, a few hit any connection,
 * handshake or not. */
static int ok_conn_done(struct thr *t, struct app *a)
{
	return ok_conn_open(t, a) && (a->side == CLI ? a->nreq >= a->target_req || now_ms() > a->deadline_ms
	                                             : now_ms() > a->deadline_ms);
}

static struct app *pick_conn_to_end(struct thr *t)
{
	return own_pick(t, chance(&t->rng, 100) ? ok_conn_open : ok_conn_done);
}

static void op_conn_shutdown(struct thr *t)
{
	struct app *a = pick_conn_to_end(t);

	if (!a)
		return;
	if (LEGIT(haquic_conn_shutdown(a->h), M_OK | M(HAQUIC_ERR_CLOSED)) == HAQUIC_OK) {
		a->shutdown_called = 1;
		cnt(t, C_GOAWAY_SENT, 1);
	}
}

/* Closes a connection; a second close before the worker runs is OK too. */
static void op_conn_close(struct thr *t)
{
	struct app *a = pick_conn_to_end(t);
	static const char reason[] = "spin says goodbye";
	int rc;

	if (!a)
		return;
	cnt(t, C_CLOSE_CALLS, 1);
	rc = LEGIT(haquic_conn_close(a->h, rand_code(t), (const uint8_t *)reason, rnd(&t->rng, sizeof(reason))),
	           M_OK | M(HAQUIC_ERR_CLOSED));
	if (rc == HAQUIC_OK && chance(&t->rng, 300)) {
		EXPECT(haquic_conn_close(a->h, H3_NO_ERROR, NULL, 0), M_OK);
		cnt(t, C_MIS_STATE, 1);
	}
}

/* A request the server must refuse (H3_MESSAGE_ERROR): missing or bad
 * pseudo-headers, uppercase names, no headers at all. */
static void op_malformed(struct thr *t)
{
	struct app *ca = own_pick(t, ok_cli_conn_for_request);
	haquic_header h[5];
	const haquic_stream *s = NULL;
	int nh = 0, k = (int)rnd(&t->rng, 4);

	if (!ca || t->cli_streams_open >= 48 || table_load() > SPIN_MAX_SLOTS * 3 / 4)
		return;
	h[nh++] = hdr(":method", "GET");
	h[nh++] = hdr(":scheme", "https");
	if (k != 0)
		h[nh++] = hdr(":authority", "haquic.test");
	if (k != 1)
		h[nh++] = hdr(":path", "/size/10");
	if (k == 2)
		h[nh++] = hdr("X-Upper", "case");
	if (k == 3)
		h[nh++] = hdr(":bogus", "pseudo");
	ca->nreq++;
	if (LEGIT(haquic_conn_send_request(ca->h, h, nh, true, &s),
	          M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_CLOSED)) != HAQUIC_OK)
		return;
	took();
	cnt(t, C_MALFORMED, 1);
	/* not tracked: drop the reference at once; the engine keeps the stream */
	haquic_stream_unref(s);
	dropped();
}

static int ok_cli_conn_established(struct thr *t, struct app *a)
{
	(void)t;
	return a->kind == SK_CONN && a->side == CLI && a->established && !a->closed_seen && gen_alive(a->g) &&
	       a->raw_next < (uint64_t)a->g->max_streams;
}

/* STOP_SENDING or RESET_STREAM as the first frame of a new stream (the
 * 3.0.2 h3_close crash): on a connection that sends nothing else from then. */
static void op_raw_abort(struct thr *t)
{
	struct app *a = own_pick(t, ok_cli_conn_established);

	if (!a)
		return;
	if (!a->raw) {
		/* only a connection with no request yet, so ids do not collide */
		if (a->nreq)
			return;
		a->raw = 1;
	}
	LEGIT(haquic_test_raw_stream_abort(a->h, 4 * a->raw_next++, chance(&t->rng, 500), H3_REQUEST_CANCELLED),
	      M_OK | M(HAQUIC_ERR_CLOSED) | M(HAQUIC_ERR_PROTOCOL));
	cnt(t, C_RAW_ABORTS, 1);
}

static void op_conn_panic(struct thr *t)
{
	struct app *a;

	/* each one prints a panic message: keep them rare */
	if (!chance(&t->rng, 20) || !(a = own_pick(t, ok_conn_open)) || a->panic_injected || !gen_borrow(a->g))
		return;
	if (LEGIT(haquic_test_conn_panic(a->h), M_OK | M(HAQUIC_ERR_CLOSED)) == HAQUIC_OK) {
		a->panic_injected = 1;
		atomic_fetch_add(&a->g->panics[a->side], 1);
		cnt(t, C_PANICS, 1);
	}
	gen_release(a->g);
}

/* ---- any-thread operations ---------------------------------------------------------------- */

static int is_gen_listener(struct gen *g, const haquic_listener *l, int side)
{
	int ok = l == g->lis[side];

	pthread_mutex_lock(&tbl);
	for (int i = 0; i < g->nchurn && !ok && side == SRV; i++)
		ok = l == g->churn[i];
	pthread_mutex_unlock(&tbl);
	return ok;
}

/* Queries any thread may make on any handle, open, closed or with its engine
 * gone. */
static void op_query(struct thr *t)
{
	struct pick p;
	unsigned char buf[64];
	size_t len = 0;

	if (!pick_slot(t, (1u << SK_CONN) | (1u << SK_STREAM) | (1u << SK_LISTENER), WHO_ANY, 0, &p))
		return;
	cnt(t, C_QUERIES, 1);
	if (p.kind == SK_CONN) {
		haquic_conn_stats cs;
		bool closed = haquic_conn_is_closed(p.h);
		void *ud = haquic_conn_userdata(p.h);

		CHECKF(ud == p.app || ud == NULL, "connection userdata %p, the owner set %p", ud, (void *)p.app);
		CHECK(haquic_conn_worker(p.h) == (uint32_t)p.owner);
		CHECK(is_gen_listener(p.g, haquic_conn_listener(p.h), p.side));
		EXPECT(HAQUIC_CONN_STATS_INIT(&cs), M_OK);
		EXPECT(haquic_conn_get_stats(p.h, &cs), M_OK);
		CHECK(cs.struct_size == sizeof(cs));
		CHECKF(!closed || cs.closed == 1, "closed connection, statistics say open");
		CHECK(cs.established <= 1 && cs.closed <= 1 && cs.close_is_app <= 1 && cs.resumed <= 1);
		CHECKF(cs.rtt_us < 600000000ull && cs.cwnd < (1ull << 32) && cs.open_streams < 1000000 &&
		       cs.packets_in < (1ull << 40) && cs.packets_out < (1ull << 40) && cs.lost <= cs.packets_out + 1,
		       "absurd connection statistics: rtt %" PRIu64 " cwnd %" PRIu64 " streams %" PRIu64 " in %" PRIu64
		       " out %" PRIu64 " lost %" PRIu64, cs.rtt_us, cs.cwnd, cs.open_streams, cs.packets_in,
		       cs.packets_out, cs.lost);
		EXPECT(haquic_conn_local_address(p.h, buf, sizeof(buf), &len), M_OK);
		CHECK(len == sizeof(struct sockaddr_in));
		EXPECT(haquic_conn_peer_address(p.h, buf, sizeof(buf), &len), M_OK | M(HAQUIC_ERR_INVALID_STATE));
		if (p.side == SRV) {
			EXPECT(haquic_conn_get_session(p.h, t->buf, 8192, &len), M(HAQUIC_ERR_WOULD_BLOCK));
		} else {
			int rc = EXPECT(haquic_conn_get_session(p.h, t->buf, 8192, &len),
			                M_OK | M(HAQUIC_ERR_WOULD_BLOCK) | M(HAQUIC_ERR_BUFFER_TOO_SMALL));

			if (rc == HAQUIC_OK && len <= sizeof(t->sess)) {
				memcpy(t->sess, t->buf, len);
				t->sess_len = len;
				t->sess_gen = p.g->id;
			}
		}
	} else if (p.kind == SK_STREAM) {
		void *ud = haquic_stream_userdata(p.h);

		(void)haquic_stream_is_closed(p.h);
		CHECKF(ud == p.app || ud == NULL, "stream userdata %p, the owner set %p", ud, (void *)p.app);
		CHECK(haquic_stream_id(p.h) == p.sid);
		CHECK(haquic_stream_conn(p.h) == p.conn);
		CHECK(haquic_conn_worker(p.conn) == (uint32_t)p.owner);
	} else {
		haquic_stats ls;
		int32_t fd = -7;
		uint32_t gen = 7;

		EXPECT(haquic_listener_address(p.h, buf, sizeof(buf), &len), M_OK);
		CHECK(len == sizeof(struct sockaddr_in));
		EXPECT(HAQUIC_STATS_INIT(&ls), M_OK);
		EXPECT(haquic_listener_stats(p.h, &ls), M_OK);
		stats_sane(&ls, "listener");
		EXPECT(haquic_listener_fd(p.h, 0, &fd, &gen), M(HAQUIC_ERR_INVALID_STATE));
		CHECK(fd == -7 && gen == 7);
	}
	pick_release(&p);
}

/* Takes an extra reference on any handle, or drops one. */
static void op_ref(struct thr *t)
{
	unsigned kinds = (1u << SK_CONN) | (1u << SK_STREAM) | (1u << SK_LISTENER);
	int drop = chance(&t->rng, 500);

	pthread_mutex_lock(&tbl);
	if (nused) {
		int start = (int)rnd(&t->rng, nused);

		for (int i = 0; i < nused; i++) {
			struct slot *s = &slots[dense[(start + i) % nused]];

			if (!(kinds & (1u << s->kind)))
				continue;
			if (drop && s->extra > 0) {
				s->extra--;
				h_unref(s->kind, s->h);   /* the table's own reference keeps it */
				cnt(t, C_UNREF_EXTRA, 1);
				break;
			}
			if (!drop && s->extra < 16) {
				h_ref(s->kind, s->h);
				s->extra++;
				cnt(t, C_REF_EXTRA, 1);
				break;
			}
		}
	}
	pthread_mutex_unlock(&tbl);
}

static void stats_monotonic(struct thr *t, struct gen *g, int side, const haquic_stats *st)
{
	struct laststats *l = NULL;

	for (int i = 0; i < 8; i++)
		if (t->last[i].gen_id == g->id && t->last[i].side == side && t->last[i].st.struct_size)
			l = &t->last[i];
	if (l) {
		const uint64_t *a = STAT_FIELDS(&l->st), *b = STAT_FIELDS(st);

		for (size_t i = 1; i < STAT_COUNT; i++)
			CHECKF(b[i] >= a[i], "generation %d side %d: counter #%zu went from %" PRIu64 " to %" PRIu64, g->id,
			       side, i, a[i], b[i]);
	} else {
		l = &t->last[t->last_next++ % 8];
		l->gen_id = g->id;
		l->side = side;
	}
	l->st = *st;
}

static void op_stats(struct thr *t)
{
	struct gen *g = borrow_any(t);

	if (!g)
		return;
	cnt(t, C_STATS, 1);
	for (int s = 0; s < 2; s++) {
		haquic_stats st, ws;
		uint32_t w = rnd(&t->rng, (uint32_t)opt_threads);

		stats_of(g->eng[s], &st);
		stats_sane(&st, "engine");
		stats_monotonic(t, g, s, &st);
		EXPECT(HAQUIC_STATS_INIT(&ws), M_OK);
		EXPECT(haquic_worker_stats(g->eng[s], w, &ws), M_OK);
		stats_sane(&ws, "worker");
	}
	gen_release(g);
}

static void op_next_timeout(struct thr *t)
{
	struct gen *g = borrow_any(t);
	int s = (int)rnd(&t->rng, 2);
	int64_t v;

	if (!g)
		return;
	v = haquic_worker_next_timeout(g->eng[s], (uint32_t)t->idx);
	CHECKF(v >= -1 && v <= 3600000, "next_timeout %" PRId64, v);
	gen_release(g);
}

/* Opens, closes, shuts down and forgets extra listeners of the server engine,
 * from any thread. */
static void op_listener(struct thr *t)
{
	struct pick p;
	int what = (int)rnd(&t->rng, 4);

	if (what == 0) {
		struct gen *g = borrow_current();
		const haquic_listener *l = NULL;
		struct sockaddr_in a;
		int n;

		if (!g)
			return;
		pthread_mutex_lock(&tbl);
		n = g->nchurn < SPIN_MAX_CHURN ? g->nchurn++ : -1;
		pthread_mutex_unlock(&tbl);
		if (n >= 0) {
			memset(&a, 0, sizeof(a));
			a.sin_family = AF_INET;
			a.sin_port = htons((uint16_t)(6000 + n));
			inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
			EXPECT(haquic_listener_new(g->eng[SRV], chance(&t->rng, 500) ? g->cfg[SRV] : NULL, &a, sizeof(a),
			                           HAQUIC_LISTENER_HOST_FED, &l), M_OK);
			took();
			/* the generation keeps the pointer (for the counters; valid while
			 * the engine lives, which holds a reference), the table the
			 * reference */
			pthread_mutex_lock(&tbl);
			g->churn[n] = l;
			pthread_mutex_unlock(&tbl);
			if (table_add(SK_LISTENER, SRV, -1, g, l, NULL, 0, NULL) < 0)
				h_unref(SK_LISTENER, l);
			cnt(t, C_LIS_NEW, 1);
		}
		gen_release(g);
		return;
	}
	if (!pick_slot(t, 1u << SK_LISTENER, WHO_ANY, 0, &p))
		return;
	if (what == 1) {
		EXPECT(haquic_listener_close(p.h), M_OK);
		cnt(t, C_LIS_CLOSE, 1);
	} else if (what == 2) {
		EXPECT(haquic_listener_shutdown(p.h), M_OK);
		cnt(t, C_LIS_CLOSE, 1);
	} else {
		const void *h = NULL;
		int kind = 0, n;

		pthread_mutex_lock(&tbl);
		n = table_remove_locked(p.idx, p.serial, &h, &kind);
		pthread_mutex_unlock(&tbl);
		for (int i = 0; i < n; i++)
			h_unref(kind, h);
		cnt(t, C_RETIRED, n ? 1 : 0);
	}
	pick_release(&p);
}

/* Datagrams from nowhere: old client datagrams replayed from another port,
 * mutated ones, random bytes and forged Initials, to the primary listener or
 * an extra one. */
static void op_replay(struct thr *t)
{
	struct gen *g = borrow_any(t);
	const haquic_listener *l;
	struct sockaddr_in src;
	unsigned char d[1500];
	size_t len;
	int k, rc;

	if (!g)
		return;
	pthread_mutex_lock(&tbl);
	k = g->nchurn ? (int)rnd(&t->rng, (uint32_t)g->nchurn + 1) - 1 : -1;
	l = k >= 0 && g->churn[k] ? g->churn[k] : g->lis[SRV];
	pthread_mutex_unlock(&tbl);
	src = g->addr[CLI];
	if (chance(&t->rng, 500))
		src.sin_port = htons((uint16_t)(40000 + rnd(&t->rng, 1000)));
	switch (rnd(&t->rng, 4)) {
	case 0:
	case 1: {
		unsigned i = t->ring_next ? rnd(&t->rng, t->ring_next < RING ? t->ring_next : RING) : 0;

		len = t->ring_len[i];
		memcpy(d, t->ring[i], len);
		if (len && chance(&t->rng, 300))
			d[rnd(&t->rng, (uint32_t)len)] ^= 0x5a;
		break;
	}
	case 2:
		len = rnd(&t->rng, sizeof(d));
		for (size_t i = 0; i < len; i++)
			d[i] = (unsigned char)rng_next(&t->rng);
		break;
	default:
		/* a long header with a random DCID, padded like an Initial */
		len = 1200;
		for (size_t i = 0; i < len; i++)
			d[i] = (unsigned char)rng_next(&t->rng);
		d[0] = 0xc0 | (d[0] & 0x0f);
		d[1] = 0; d[2] = 0; d[3] = 0; d[4] = chance(&t->rng, 900) ? 1 : 0x1a;
		d[5] = (unsigned char)(chance(&t->rng, 900) ? 8 + rnd(&t->rng, 13) : 21 + rnd(&t->rng, 200));
		break;
	}
	rc = EXPECT(haquic_listener_recv(g->eng[SRV], l, d, len, &src, sizeof(src)),
	            M_OK | M(HAQUIC_ERR_QUEUE_FULL) | M(HAQUIC_ERR_PROTOCOL));
	if (rc == HAQUIC_ERR_QUEUE_FULL)
		cnt(t, C_DG_QFULL, 1);
	cnt(t, C_REPLAYS, 1);
	gen_release(g);
}

/* A configuration of one's own, misconfigured on purpose, and sometimes an
 * engine made of it (with a listener on engine-owned sockets) and freed at
 * once: objects opened and closed from any thread. */
static void op_config(struct thr *t)
{
	const haquic_config *c = haquic_config_new();
	const haquic_engine *e = NULL;
	const haquic_listener *l = NULL;
	haquic_limits lim;
	haquic_engine_options o;
	unsigned char wire[64];
	size_t len = 0;
	const char *alpn[2] = { "h3", "" };
	const unsigned char bad_wire[] = { 5, 'h', '3' };
	int rc;

	CHECK(c != NULL);
	took();
	cnt(t, C_CONFIGS, 1);
	EXPECT(haquic_config_set_idle_timeout(c, 0), M(HAQUIC_ERR_OUT_OF_RANGE));
	EXPECT(haquic_config_set_idle_timeout(c, 1000 + rnd(&t->rng, 10000)), M_OK);
	EXPECT(haquic_config_set_cc_algorithm(c, "vegas"), M(HAQUIC_ERR_UNKNOWN_CC_ALGORITHM));
	EXPECT(haquic_config_set_alpn(c, alpn, 0), M(HAQUIC_ERR_BAD_ALPN));
	EXPECT(haquic_config_set_alpn(c, alpn, 2), M(HAQUIC_ERR_BAD_ALPN));
	EXPECT(haquic_config_set_alpn_wire(c, bad_wire, sizeof(bad_wire)), M(HAQUIC_ERR_BAD_ALPN));
	EXPECT(haquic_config_get_alpn_wire(c, wire, 1, &len), M(HAQUIC_ERR_BUFFER_TOO_SMALL));
	EXPECT(haquic_config_get_alpn_wire(c, wire, sizeof(wire), &len), M_OK);
	CHECK(len == 3 && memcmp(wire, "\x02h3", 3) == 0);
	EXPECT(HAQUIC_LIMITS_INIT(&lim), M_OK);
	lim.max_streams_uni = 1;
	EXPECT(haquic_config_set_limits(c, &lim), M(HAQUIC_ERR_OUT_OF_RANGE));
	CHECK(haquic_config_last_error(c) != NULL && haquic_config_last_error(c)[0] != 0);
	lim.struct_size = 3;
	EXPECT(haquic_config_set_limits(c, &lim), M(HAQUIC_ERR_STRUCT_SIZE));
	EXPECT(haquic_config_check(c), M(HAQUIC_ERR_INCOMPLETE_CONFIG));
	EXPECT(haquic_config_load_cert_chain_and_key(c, fixture_path("no-such.crt"), fixture_path("leaf.key")),
	       M(HAQUIC_ERR_FILE_NOT_FOUND));
	EXPECT(haquic_config_load_cert_chain_and_key(c, fixture_path("leaf.crt"), fixture_path("other.key")),
	       M(HAQUIC_ERR_KEY_MISMATCH));
	EXPECT(haquic_config_set_curves(c, "X25519:P-257"), M(HAQUIC_ERR_INVALID_ARGUMENT));
	CHECK(haquic_config_get_cc_algorithm(c) != NULL);
	if (chance(&t->rng, 300)) {
		EXPECT(haquic_config_load_cert_chain_and_key(c, fixture_path("leaf.crt"), fixture_path("leaf.key")), M_OK);
		EXPECT(haquic_config_check(c), M_OK);
		EXPECT(HAQUIC_ENGINE_OPTIONS_INIT(&o), M_OK);
		o.workers = 0;
		EXPECT(haquic_engine_new(c, &o, NULL, NULL, &e), M(HAQUIC_ERR_OUT_OF_RANGE));
		o.workers = 1 + rnd(&t->rng, 3);
		o.struct_size = 8;
		EXPECT(haquic_engine_new(c, &o, NULL, NULL, &e), M(HAQUIC_ERR_STRUCT_SIZE));
		o.struct_size = sizeof(o);
		EXPECT(haquic_engine_new(c, &o, NULL, NULL, &e), M_OK);
		took();
		cnt(t, C_SCRATCH_ENG, 1);
		if (chance(&t->rng, 500)) {
			struct sockaddr_in a = { .sin_family = AF_INET };
			int32_t fd = -1;
			uint32_t gen = 0;

			inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
			rc = EXPECT(haquic_listener_new(e, NULL, &a, sizeof(a), chance(&t->rng, 500) ? 0 :
			                                HAQUIC_LISTENER_CONN_SOCKETS, &l), M_OK | M(HAQUIC_ERR_IO));
			if (rc == HAQUIC_OK) {
				took();
				EXPECT(haquic_listener_fd(l, 0, &fd, &gen), M_OK);
				CHECK(fd >= 0);
				if (chance(&t->rng, 500)) {
					/* drive it once: this thread becomes worker 0's owner */
					EXPECT(haquic_worker_process(e, 0), M_OK);
					EXPECT(haquic_worker_fd_ready(e, 0, fd, gen + 1), M(HAQUIC_ERR_CLOSED));
				}
				if (chance(&t->rng, 500))
					EXPECT(haquic_listener_close(l), M_OK);
				haquic_listener_unref(l);
				dropped();
			}
		}
		eng_unref(e);
	}
	if (opt_hooks && chance(&t->rng, 20)) {
		/* a panic while the configuration's lock is held poisons it */
		haquic_test_inject_config_panic();
		EXPECT(haquic_config_set_idle_timeout(c, 5000), M(HAQUIC_ERR_PANIC));
		LEGIT(haquic_config_set_pacing(c, true), M(HAQUIC_ERR_PANIC));
		cnt(t, C_PANICS, 1);
	}
	haquic_config_unref(c);
	dropped();
}

/* Settings of a live generation's configuration, rewritten with the values
 * they have, while its engines run. */
static void op_config_live(struct thr *t)
{
	struct gen *g = borrow_any(t);
	haquic_limits lim;
	int s = (int)rnd(&t->rng, 2);

	if (!g)
		return;
	EXPECT(HAQUIC_LIMITS_INIT(&lim), M_OK);
	EXPECT(haquic_config_get_limits(g->cfg[s], &lim), M_OK);
	CHECK(lim.idle_timeout_ms == g->idle_ms);
	EXPECT(haquic_config_set_limits(g->cfg[s], &lim), M_OK);
	EXPECT(haquic_config_set_pacing(g->cfg[s], g->pacing), M_OK);
	CHECK(haquic_config_get_cc_algorithm(g->cfg[s]) != NULL);
	CHECK(haquic_config_last_error(g->cfg[s]) != NULL);
	gen_release(g);
}

/* ---- misuse: every call here has one documented answer ------------------------------------- */

static void op_mis_null(struct thr *t)
{
	haquic_event ev;
	haquic_stats st;
	haquic_conn_stats cs;
	unsigned char b[16];
	size_t n = 0;
	bool fin;
	const haquic_conn *c = (const void *)1;
	const haquic_stream *s = (const void *)1;
	const haquic_listener *l = (const void *)1;
	const haquic_engine *e = (const void *)1;
	haquic_header h = hdr(":status", "200");
	/* every handle argument is NULL: nothing else may be dereferenced */
	struct sockaddr_in a = { .sin_family = AF_INET };

	cnt(t, C_MIS_NULL, 1);
	HAQUIC_EVENT_INIT(&ev);
	HAQUIC_STATS_INIT(&st);
	HAQUIC_CONN_STATS_INIT(&cs);
	switch (rnd(&t->rng, 30)) {
	case 0: EXPECT(haquic_conn_close(NULL, 0, NULL, 0), M(HAQUIC_ERR_NULL)); break;
	case 1: EXPECT(haquic_conn_shutdown(NULL), M(HAQUIC_ERR_NULL)); break;
	case 2: EXPECT(haquic_conn_send_request(NULL, &h, 1, true, &s), M(HAQUIC_ERR_NULL)); CHECK(s == (const void *)1); break;
	case 3: EXPECT(haquic_stream_recv(NULL, b, sizeof(b), &n, &fin), M(HAQUIC_ERR_NULL)); break;
	case 4: EXPECT(haquic_stream_send(NULL, b, 1, false, &n), M(HAQUIC_ERR_NULL)); break;
	case 5: EXPECT(haquic_stream_send_headers(NULL, &h, 1, false), M(HAQUIC_ERR_NULL)); break;
	case 6: EXPECT(haquic_stream_send_trailers(NULL, &h, 1), M(HAQUIC_ERR_NULL)); break;
	case 7: EXPECT(haquic_stream_reset(NULL, H3_NO_ERROR), M(HAQUIC_ERR_NULL)); break;
	case 8: EXPECT(haquic_stream_stop_sending(NULL, H3_NO_ERROR), M(HAQUIC_ERR_NULL)); break;
	case 9: EXPECT(haquic_worker_process(NULL, 0), M(HAQUIC_ERR_NULL)); break;
	case 10: EXPECT(haquic_worker_poll(NULL, 0, &ev), M(HAQUIC_ERR_NULL)); CHECK(ev.kind == HAQUIC_EVENT_NONE); break;
	case 11: EXPECT(haquic_worker_pop_datagram(NULL, 0, b, sizeof(b), &n, b, sizeof(b), &n), M(HAQUIC_ERR_NULL)); break;
	case 12: EXPECT(haquic_worker_connect(NULL, 0, NULL, &a, sizeof(a), NULL, &c), M(HAQUIC_ERR_NULL)); CHECK(c == (const void *)1); break;
	case 13: EXPECT(haquic_listener_recv(NULL, NULL, b, 1, &a, sizeof(a)), M(HAQUIC_ERR_NULL)); break;
	case 14: EXPECT(haquic_engine_stats(NULL, &st), M(HAQUIC_ERR_NULL)); break;
	case 15: EXPECT(haquic_conn_get_stats(NULL, &cs), M(HAQUIC_ERR_NULL)); break;
	case 16: CHECK(haquic_conn_is_closed(NULL) && haquic_stream_is_closed(NULL)); break;
	case 17: CHECK(haquic_stream_id(NULL) == 0 && haquic_stream_conn(NULL) == NULL && haquic_conn_worker(NULL) == 0); break;
	case 18: CHECK(haquic_conn_listener(NULL) == NULL && haquic_conn_userdata(NULL) == NULL && haquic_stream_userdata(NULL) == NULL); break;
	case 19: EXPECT(haquic_conn_set_userdata(NULL, b), M(HAQUIC_ERR_NULL)); EXPECT(haquic_stream_set_userdata(NULL, b), M(HAQUIC_ERR_NULL)); break;
	case 20:
		CHECK(haquic_conn_ref(NULL) == NULL && haquic_stream_ref(NULL) == NULL && haquic_listener_ref(NULL) == NULL &&
		      haquic_engine_ref(NULL) == NULL && haquic_config_ref(NULL) == NULL);
		haquic_conn_unref(NULL);
		haquic_stream_unref(NULL);
		haquic_listener_unref(NULL);
		haquic_engine_unref(NULL);
		haquic_config_unref(NULL);
		break;
	case 21: EXPECT(haquic_conn_local_address(NULL, b, sizeof(b), &n), M(HAQUIC_ERR_NULL)); break;
	case 22: CHECK(haquic_worker_next_timeout(NULL, 0) == -1 && haquic_engine_worker_count(NULL) == 0); break;
	case 23: EXPECT(haquic_engine_shutdown(NULL), M(HAQUIC_ERR_NULL)); EXPECT(haquic_listener_close(NULL), M(HAQUIC_ERR_NULL)); break;
	case 24: EXPECT(haquic_listener_shutdown(NULL), M(HAQUIC_ERR_NULL)); EXPECT(haquic_listener_stats(NULL, &st), M(HAQUIC_ERR_NULL)); break;
	case 25: EXPECT(haquic_worker_fd_ready(NULL, 0, 3, 1), M(HAQUIC_ERR_NULL)); EXPECT(haquic_worker_fd_released(NULL, 0, 3, 1), M(HAQUIC_ERR_NULL)); break;
	case 26: EXPECT(haquic_listener_new(NULL, NULL, &a, sizeof(a), HAQUIC_LISTENER_HOST_FED, &l), M(HAQUIC_ERR_NULL)); CHECK(l == (const void *)1); break;
	case 27: EXPECT(haquic_engine_new(NULL, NULL, NULL, NULL, &e), M(HAQUIC_ERR_NULL)); CHECK(e == (const void *)1); break;
	case 28: EXPECT(haquic_event_init(NULL, sizeof(ev)), M(HAQUIC_ERR_NULL)); EXPECT(haquic_stats_init(NULL, sizeof(st)), M(HAQUIC_ERR_NULL)); break;
	default: CHECK(haquic_strerror((int)rng_next(&t->rng)) != NULL && haquic_strerror(-1) != NULL); break;
	}
}

/* Valid handles, invalid arguments: answered before any thread or state
 * check, from any thread. */
static void op_mis_args(struct thr *t)
{
	struct pick p;
	unsigned char b[64];
	size_t n = 5;
	bool fin;
	haquic_header h = hdr(":method", "GET");
	haquic_conn_stats cs;

	if (!pick_slot(t, (1u << SK_CONN) | (1u << SK_STREAM), WHO_ANY, 0, &p))
		return;
	cnt(t, C_MIS_ARGS, 1);
	if (p.kind == SK_CONN) {
		const haquic_stream *s = (const void *)1;

		switch (rnd(&t->rng, 8)) {
		case 0: EXPECT(haquic_conn_send_request(p.h, &h, 1, true, NULL), M(HAQUIC_ERR_NULL)); break;
		case 1: EXPECT(haquic_conn_send_request(p.h, NULL, 3, true, &s), M(HAQUIC_ERR_NULL)); break;
		case 2: EXPECT(haquic_conn_close(p.h, 0, NULL, 5), M(HAQUIC_ERR_NULL)); break;
		case 3: EXPECT(haquic_conn_get_stats(p.h, NULL), M(HAQUIC_ERR_NULL)); break;
		case 4:
			memset(&cs, 0, sizeof(cs));
			cs.struct_size = 5;
			EXPECT(haquic_conn_get_stats(p.h, &cs), M(HAQUIC_ERR_STRUCT_SIZE));
			CHECK(cs.packets_in == 0);
			break;
		case 5: EXPECT(haquic_conn_local_address(p.h, b, 2, &n), M(HAQUIC_ERR_BUFFER_TOO_SMALL)); CHECK(n == 5); break;
		case 6: EXPECT(haquic_conn_local_address(p.h, NULL, 16, &n), M(HAQUIC_ERR_NULL)); break;
		default: EXPECT(haquic_conn_get_session(p.h, NULL, 16, &n), M(HAQUIC_ERR_NULL)); break;
		}
		CHECK(s == (const void *)1);
	} else {
		switch (rnd(&t->rng, 7)) {
		case 0: EXPECT(haquic_stream_recv(p.h, NULL, 10, &n, &fin), M(HAQUIC_ERR_NULL)); break;
		case 1: EXPECT(haquic_stream_recv(p.h, b, sizeof(b), NULL, &fin), M(HAQUIC_ERR_NULL)); break;
		case 2: EXPECT(haquic_stream_send(p.h, NULL, 5, false, &n), M(HAQUIC_ERR_NULL)); break;
		case 3: EXPECT(haquic_stream_send(p.h, b, 5, false, NULL), M(HAQUIC_ERR_NULL)); break;
		case 4: EXPECT(haquic_stream_send_headers(p.h, NULL, 2, false), M(HAQUIC_ERR_NULL)); break;
		case 5: EXPECT(haquic_stream_send_trailers(p.h, NULL, 1), M(HAQUIC_ERR_NULL)); break;
		default: EXPECT(haquic_stream_recv(p.h, b, sizeof(b), &n, NULL), M(HAQUIC_ERR_NULL)); break;
		}
		CHECK(n == 5);
	}
	pick_release(&p);
	/* engine- and worker-level arguments, on a live generation */
	struct gen *g = borrow_any(t);

	if (g) {
		haquic_event ev;
		haquic_stats st;
		struct sockaddr_in a = g->addr[SRV];
		const haquic_conn *c = (const void *)1;
		const haquic_listener *l = (const void *)1;
		int s = (int)rnd(&t->rng, 2);
		const char bad_utf8[] = { (char)0xc3, (char)0x28, 0 };

		HAQUIC_EVENT_INIT(&ev);
		HAQUIC_STATS_INIT(&st);
		switch (rnd(&t->rng, 12)) {
		case 0: EXPECT(haquic_worker_process(g->eng[s], 9999), M(HAQUIC_ERR_OUT_OF_RANGE)); break;
		case 1: EXPECT(haquic_worker_poll(g->eng[s], 9999, &ev), M(HAQUIC_ERR_OUT_OF_RANGE)); break;
		case 2:
			ev.struct_size = 7;
			EXPECT(haquic_worker_poll(g->eng[s], (uint32_t)t->idx, &ev), M(HAQUIC_ERR_STRUCT_SIZE));
			CHECK(ev.kind == HAQUIC_EVENT_NONE);
			break;
		case 3: EXPECT(haquic_worker_stats(g->eng[s], 9999, &st), M(HAQUIC_ERR_OUT_OF_RANGE)); break;
		case 4: CHECK(haquic_worker_next_timeout(g->eng[s], 9999) == -1); break;
		case 5: EXPECT(haquic_worker_connect(g->eng[CLI], (uint32_t)t->idx, g->lis[CLI], &a, 3, NULL, &c), M(HAQUIC_ERR_INVALID_ARGUMENT)); break;
		case 6: EXPECT(haquic_worker_connect(g->eng[CLI], 9999, g->lis[CLI], &a, sizeof(a), NULL, &c), M(HAQUIC_ERR_OUT_OF_RANGE)); break;
		case 7: EXPECT(haquic_worker_connect(g->eng[CLI], (uint32_t)t->idx, g->lis[CLI], &a, sizeof(a), bad_utf8, &c), M(HAQUIC_ERR_NOT_UTF8)); break;
		case 8: EXPECT(haquic_listener_recv(g->eng[s], g->lis[s], b, 10, &a, 3), M(HAQUIC_ERR_INVALID_ARGUMENT)); break;
		case 9: EXPECT(haquic_listener_new(g->eng[s], NULL, &a, sizeof(a), HAQUIC_LISTENER_HOST_FED | HAQUIC_LISTENER_CONN_SOCKETS, &l), M(HAQUIC_ERR_INVALID_ARGUMENT)); break;
		case 10: EXPECT(haquic_listener_new(g->eng[s], NULL, &a, sizeof(a), 0x80, &l), M(HAQUIC_ERR_INVALID_ARGUMENT)); break;
		default: EXPECT(haquic_worker_connect_with_session(g->eng[CLI], (uint32_t)t->idx, g->lis[CLI], &a, sizeof(a), NULL, NULL, 5, &c), M(HAQUIC_ERR_NULL)); break;
		}
		CHECK(c == (const void *)1 && l == (const void *)1);
		gen_release(g);
	}
}

/* Actions reserved to the owner thread, from another thread: WRONG_THREAD,
 * and nothing happens. */
static void op_mis_wrong(struct thr *t)
{
	unsigned char b[32];
	size_t n = 3;
	bool fin;
	haquic_header rq[4] = { hdr(":method", "GET"), hdr(":scheme", "https"), hdr(":authority", "haquic.test"),
	                        hdr(":path", "/wrong") };
	haquic_header tr = hdr("x-t", "1");

	if (opt_threads < 2)
		return;
	if (chance(&t->rng, 300)) {
		/* worker-level calls on another thread's worker */
		struct gen *g = borrow_any(t);
		int what = (int)rnd(&t->rng, 7), s = what == 3 ? CLI : (int)rnd(&t->rng, 2);
		uint32_t u = (uint32_t)((t->idx + 1 + (int)rnd(&t->rng, (uint32_t)opt_threads - 1)) % opt_threads);
		haquic_event ev;
		struct sockaddr_storage peer;
		const haquic_conn *c = (const void *)1;

		if (!g)
			return;
		if (atomic_load(&g->bound[s][u])) {
			HAQUIC_EVENT_INIT(&ev);
			cnt(t, C_MIS_WRONG, 1);
			switch (what) {
			case 0: EXPECT(haquic_worker_process(g->eng[s], u), M(HAQUIC_ERR_WRONG_THREAD)); break;
			case 1: EXPECT(haquic_worker_poll(g->eng[s], u, &ev), M(HAQUIC_ERR_WRONG_THREAD)); CHECK(ev.kind == HAQUIC_EVENT_NONE); break;
			case 2: EXPECT(haquic_worker_pop_datagram(g->eng[s], u, b, sizeof(b), &n, &peer, sizeof(peer), &n), M(HAQUIC_ERR_WRONG_THREAD)); break;
			case 3: EXPECT(haquic_worker_connect(g->eng[CLI], u, g->lis[CLI], &g->addr[SRV], sizeof(g->addr[SRV]), "haquic.test", &c), M(HAQUIC_ERR_WRONG_THREAD)); break;
			case 4: EXPECT(haquic_worker_fd_ready(g->eng[s], u, 1000, 1), M(HAQUIC_ERR_WRONG_THREAD)); break;
			case 5: EXPECT(haquic_worker_fd_released(g->eng[s], u, 1000, 1), M(HAQUIC_ERR_WRONG_THREAD)); break;
			default: {
				int64_t v = haquic_worker_next_timeout(g->eng[s], u);

				/* an i64 cannot say WRONG_THREAD: -1, or 0 when datagrams are queued
				 * (checked before the owner), and counted only in the first case */
				CHECKF(v == -1 || v == 0, "next_timeout from the wrong thread: %" PRId64, v);
				atomic_fetch_add(&g->wrong_maybe[s], 1);
				gen_release(g);
				return;
			}
			}
			atomic_fetch_add(&g->wrong_exp[s], 1);
			CHECK(c == (const void *)1 && n == 3);
		}
		gen_release(g);
		return;
	}
	struct pick p;

	if (!pick_slot(t, (1u << SK_CONN) | (1u << SK_STREAM), WHO_OTHER, 1, &p))
		return;
	if (!p.borrowed) {
		pick_release(&p);
		return;
	}
	cnt(t, C_MIS_WRONG, 1);
	if (p.kind == SK_CONN) {
		const haquic_stream *s = (const void *)1;

		switch (rnd(&t->rng, 4)) {
		case 0: EXPECT(haquic_conn_close(p.h, H3_NO_ERROR, NULL, 0), M(HAQUIC_ERR_WRONG_THREAD)); break;
		case 1: EXPECT(haquic_conn_shutdown(p.h), M(HAQUIC_ERR_WRONG_THREAD)); break;
		case 2: EXPECT(haquic_conn_send_request(p.h, rq, 4, true, &s), M(HAQUIC_ERR_WRONG_THREAD)); break;
		default:
			if (opt_hooks)
				EXPECT(haquic_test_conn_panic(p.h), M(HAQUIC_ERR_WRONG_THREAD));
			else
				EXPECT(haquic_conn_shutdown(p.h), M(HAQUIC_ERR_WRONG_THREAD));
			break;
		}
		CHECK(s == (const void *)1);
	} else {
		switch (rnd(&t->rng, 6)) {
		case 0: EXPECT(haquic_stream_recv(p.h, b, sizeof(b), &n, &fin), M(HAQUIC_ERR_WRONG_THREAD)); break;
		case 1: EXPECT(haquic_stream_send(p.h, b, 4, false, &n), M(HAQUIC_ERR_WRONG_THREAD)); break;
		case 2: EXPECT(haquic_stream_send_headers(p.h, rq, 1, false), M(HAQUIC_ERR_WRONG_THREAD)); break;
		case 3: EXPECT(haquic_stream_send_trailers(p.h, &tr, 1), M(HAQUIC_ERR_WRONG_THREAD)); break;
		case 4: EXPECT(haquic_stream_reset(p.h, H3_NO_ERROR), M(HAQUIC_ERR_WRONG_THREAD)); break;
		default: EXPECT(haquic_stream_stop_sending(p.h, H3_NO_ERROR), M(HAQUIC_ERR_WRONG_THREAD)); break;
		}
		CHECK(n == 3);
	}
	atomic_fetch_add(&p.g->wrong_exp[p.side], 1);
	pick_release(&p);
}

static int ok_own_closed(struct thr *t, struct app *a)
{
	return gen_alive(a->g) && app_closed(t, a);
}

/* Actions on closed objects, by their owner: CLOSED. On handles whose engine
 * is gone, from any thread: CLOSED. */
static void do_closed_actions(struct thr *t, int kind, const void *h, int side)
{
	unsigned char b[32];
	size_t n = 3;
	bool fin;
	haquic_header rq[4] = { hdr(":method", "GET"), hdr(":scheme", "https"), hdr(":authority", "haquic.test"),
	                        hdr(":path", "/closed") };
	haquic_header tr = hdr("x-t", "1");

	if (kind == SK_CONN) {
		const haquic_stream *s = (const void *)1;

		switch (rnd(&t->rng, 3)) {
		case 0: EXPECT(haquic_conn_close(h, H3_NO_ERROR, (const uint8_t *)"x", 1), M(HAQUIC_ERR_CLOSED)); break;
		case 1: EXPECT(haquic_conn_shutdown(h), M(HAQUIC_ERR_CLOSED)); break;
		default:
			EXPECT(haquic_conn_send_request(h, rq, side == SRV ? 1 : 4, true, &s), M(HAQUIC_ERR_CLOSED));
			break;
		}
		CHECK(s == (const void *)1);
	} else {
		switch (rnd(&t->rng, 6)) {
		case 0: EXPECT(haquic_stream_recv(h, b, sizeof(b), &n, &fin), M(HAQUIC_ERR_CLOSED)); break;
		case 1: EXPECT(haquic_stream_send(h, b, 4, true, &n), M(HAQUIC_ERR_CLOSED)); break;
		case 2: EXPECT(haquic_stream_send_headers(h, rq, 1, true), M(HAQUIC_ERR_CLOSED)); break;
		case 3: EXPECT(haquic_stream_send_trailers(h, &tr, 1), M(HAQUIC_ERR_CLOSED)); break;
		case 4: EXPECT(haquic_stream_reset(h, H3_NO_ERROR), M(HAQUIC_ERR_CLOSED)); break;
		default: EXPECT(haquic_stream_stop_sending(h, H3_NO_ERROR), M(HAQUIC_ERR_CLOSED)); break;
		}
		CHECK(n == 3);
	}
}

static void op_mis_closed(struct thr *t)
{
	if (chance(&t->rng, 700)) {
		struct app *a = own_pick(t, ok_own_closed);

		if (!a || !gen_borrow(a->g))
			return;
		cnt(t, C_MIS_CLOSED, 1);
		do_closed_actions(t, a->kind, a->h, a->side);
		atomic_fetch_add(&a->g->closed_exp[a->side], 1);
		CHECK(app_closed(t, a));
		gen_release(a->g);
		return;
	}
	struct pick p;

	if (!pick_slot(t, (1u << SK_CONN) | (1u << SK_STREAM), WHO_ANY, 2, &p))
		return;
	cnt(t, C_MIS_DEAD, 1);
	do_closed_actions(t, p.kind, p.h, p.side);
	/* its queries still answer */
	if (p.kind == SK_STREAM) {
		CHECK(haquic_stream_id(p.h) == p.sid && haquic_stream_conn(p.h) == p.conn);
	} else {
		haquic_conn_stats cs;

		CHECK(haquic_conn_worker(p.h) == (uint32_t)p.owner);
		EXPECT(HAQUIC_CONN_STATS_INIT(&cs), M_OK);
		EXPECT(haquic_conn_get_stats(p.h, &cs), M_OK);
	}
	pick_release(&p);
}

static int ok_own_open_alive(struct thr *t, struct app *a)
{
	return gen_alive(a->g) && !app_closed(t, a);
}

/* Calls the object's state does not allow, by its owner. */
static void op_mis_state(struct thr *t)
{
	struct app *a = own_pick(t, ok_own_open_alive);
	haquic_header rq[4] = { hdr(":method", "GET"), hdr(":scheme", "https"), hdr(":authority", "haquic.test"),
	                        hdr(":path", "/state") };
	haquic_header st = hdr(":status", "200");
	haquic_header bad_tr = hdr(":status", "204");
	size_t w = 3;

	if (!a || !gen_borrow(a->g))
		return;
	if (app_closed(t, a)) {   /* cannot change: checked again under the borrow */
		gen_release(a->g);
		return;
	}
	cnt(t, C_MIS_STATE, 1);
	if (a->kind == SK_CONN) {
		const haquic_stream *s = (const void *)1;

		if (a->side == SRV) {
			EXPECT(haquic_conn_send_request(a->h, rq, 4, true, &s), M(HAQUIC_ERR_INVALID_STATE));
		} else if (!a->established && !a->resumed) {
			a->nreq++;
			/* before the handshake: WOULD_BLOCK, unless it completed in the
			 * last pass and the event is not polled yet */
			int rc = EXPECT(haquic_conn_send_request(a->h, rq, 4, true, &s),
			                M(HAQUIC_ERR_WOULD_BLOCK) | M_OK);

			if (rc == HAQUIC_OK) {
				took();
				haquic_stream_unref(s);
				dropped();
				s = (const void *)1;
			}
		} else {
			EXPECT(haquic_conn_get_stats(a->h, NULL), M(HAQUIC_ERR_NULL));
		}
		CHECK(s == (const void *)1);
	} else if (a->side == CLI) {
		EXPECT(haquic_stream_send_headers(a->h, &st, 1, false), M(HAQUIC_ERR_INVALID_STATE) | M(HAQUIC_ERR_CLOSED));
		if (a->own_send_done)
			EXPECT(haquic_stream_send(a->h, (const uint8_t *)"x", 1, false, &w), M(HAQUIC_ERR_CLOSED));
	} else if (!a->headers_sent) {
		EXPECT(haquic_stream_send(a->h, (const uint8_t *)"x", 1, false, &w),
		       M(HAQUIC_ERR_INVALID_STATE) | M(HAQUIC_ERR_CLOSED));
		EXPECT(haquic_stream_send_trailers(a->h, &bad_tr, 1), M(HAQUIC_ERR_INVALID_STATE) | M(HAQUIC_ERR_CLOSED));
	} else if (a->own_send_done) {
		EXPECT(haquic_stream_send(a->h, (const uint8_t *)"x", 1, false, &w), M(HAQUIC_ERR_CLOSED));
		EXPECT(haquic_stream_send_headers(a->h, &st, 1, false), M(HAQUIC_ERR_CLOSED));
	} else {
		EXPECT(haquic_stream_send_headers(a->h, &st, 1, false), M(HAQUIC_ERR_INVALID_STATE) | M(HAQUIC_ERR_CLOSED));
		EXPECT(haquic_stream_send_trailers(a->h, &bad_tr, 1), M(HAQUIC_ERR_INVALID_ARGUMENT) | M(HAQUIC_ERR_CLOSED));
	}
	CHECK(w == 3);
	/* worker-level: a session the TLS library cannot parse, stale fds, a
	 * short buffer */
	switch (rnd(&t->rng, 4)) {
	case 0: {
		const haquic_conn *c = (const void *)1;
		unsigned char junk[64];

		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (unsigned char)rng_next(&t->rng);
		EXPECT(haquic_worker_connect_with_session(a->g->eng[CLI], (uint32_t)t->idx, a->g->lis[CLI], &a->g->addr[SRV],
		                                          sizeof(a->g->addr[SRV]), NULL, junk, sizeof(junk), &c),
		       M(HAQUIC_ERR_INVALID_ARGUMENT));
		CHECK(c == (const void *)1);
		break;
	}
	case 1:
		EXPECT(haquic_worker_fd_ready(a->g->eng[a->side], (uint32_t)t->idx, 1000 + (int)rnd(&t->rng, 1000), 1),
		       M(HAQUIC_ERR_CLOSED));
		break;
	case 2:
		EXPECT(haquic_worker_fd_released(a->g->eng[a->side], (uint32_t)t->idx, 1000 + (int)rnd(&t->rng, 1000), 1),
		       M(HAQUIC_ERR_INVALID_STATE));
		break;
	default: {
		unsigned char small[8];
		struct sockaddr_storage peer;
		size_t len = 0, plen = 0;
		int rc = EXPECT(haquic_worker_pop_datagram(a->g->eng[a->side], (uint32_t)t->idx, small, sizeof(small), &len,
		                                           &peer, sizeof(peer), &plen),
		                M(HAQUIC_ERR_BUFFER_TOO_SMALL) | M(HAQUIC_ERR_WOULD_BLOCK));

		CHECK(len == 0 && plen == 0);
		(void)rc;
		break;
	}
	}
	gen_release(a->g);
}

static void op_test_panic(struct thr *t)
{
	if (!chance(&t->rng, 20))
		return;
	cnt(t, C_MIS_ARGS, 1);
	EXPECT(haquic_test_panic(), M(HAQUIC_ERR_PANIC));
}

/* ---- the operation table --------------------------------------------------------------------- */

static const struct opdef ops[] = {
	{ "connect", 40, op_connect, 0 },
	{ "request", 120, op_request, 0 },
	{ "upload", 40, op_upload, 0 },
	{ "recv", 60, op_recv, 0 },
	{ "server_progress", 80, op_server_progress, 0 },
	{ "stream_reset", 25, op_stream_reset, 0 },
	{ "stream_stop_sending", 25, op_stream_stop, 0 },
	{ "conn_shutdown", 12, op_conn_shutdown, 0 },
	{ "conn_close", 15, op_conn_close, 0 },
	{ "malformed_request", 8, op_malformed, 0 },
	{ "raw_stream_abort", 6, op_raw_abort, 1 },
	{ "conn_panic", 1, op_conn_panic, 1 },
	{ "query", 60, op_query, 0 },
	{ "ref_unref", 40, op_ref, 0 },
	{ "stats", 15, op_stats, 0 },
	{ "next_timeout", 10, op_next_timeout, 0 },
	{ "listener", 6, op_listener, 0 },
	{ "replay", 20, op_replay, 0 },
	{ "config", 4, op_config, 0 },
	{ "config_live", 4, op_config_live, 0 },
	{ "misuse_null", 30, op_mis_null, 0 },
	{ "misuse_args", 30, op_mis_args, 0 },
	{ "misuse_wrong_thread", 50, op_mis_wrong, 0 },
	{ "misuse_closed", 40, op_mis_closed, 0 },
	{ "misuse_state", 30, op_mis_state, 0 },
	{ "test_panic", 1, op_test_panic, 1 },
};
#define NOPS ((int)(sizeof(ops) / sizeof(ops[0])))
static int weight_total;

static void do_op(struct thr *t)
{
	int r = (int)rnd(&t->rng, (uint32_t)weight_total), i;

	for (i = 0; i < NOPS; i++) {
		if (ops[i].hook && !opt_hooks)
			continue;
		if (r < ops[i].weight)
			break;
		r -= ops[i].weight;
	}
	if (i == NOPS)
		i = 0;
	set_op(t, ops[i].name, i + 1);
	ops[i].fn(t);
	cnt(t, C_OPS, 1);
}

/* ---- the spin thread ---------------------------------------------------------------------- */

/* Retires what is closed (after a random linger, so that misuse calls hit
 * closed handles), what belongs to a freed generation, or everything. */
static void reap(struct thr *t, int all)
{
	long long now = now_ms();

	set_op(t, "reap", 0);
	for (int k = 0, n = all ? t->nown : (t->nown < 8 ? t->nown : 8); k < n && t->nown; k++) {
		int i = all ? t->nown - 1 : (int)rnd(&t->rng, (uint32_t)t->nown);
		struct app *a = t->own[i];
		int st = atomic_load(&a->g->state);

		if (st == GS_DEAD && !all)
			continue;
		if (st == GS_FREED) {
			if (!a->gone_ms)
				a->gone_ms = now;
			if (now - a->gone_ms >= a->retire_after || all)
				retire(t, i);
			continue;
		}
		if (all) {
			retire(t, i);
			continue;
		}
		if (app_closed(t, a) && now - a->closed_ms >= a->retire_after)
			retire(t, i);
		else if (t->nown > 3000 && a->closed_seen)
			retire(t, i);
	}
}

/* While draining: finish or cancel what the server still owes, finish uploads. */
static void drain_actions(struct thr *t)
{
	set_op(t, "drain", 0);
	for (int i = 0; i < t->nown; i++) {
		struct app *a = t->own[i];

		if (a->kind != SK_STREAM || !gen_alive(a->g) || a->closed_seen)
			continue;
		if (a->side == SRV && !a->send_done) {
			if (a->plan == P_SILENT) {
				mark_server_reset(a->req_id);
				if (LEGIT(haquic_stream_reset(a->h, H3_REQUEST_CANCELLED), M_OK | M(HAQUIC_ERR_CLOSED)) == HAQUIC_OK)
					cnt(t, C_RST_SENT, 1);
				a->send_done = a->own_send_done = 1;
			} else {
				server_progress(t, a);
			}
		}
		if (a->side == CLI && !a->send_done)
			client_upload(t, a);
	}
}

static void *spin_thread(void *arg)
{
	struct thr *t = arg;

	me = t;
	t->buf = malloc(65536);
	t->buf2 = malloc(65536);
	CHECK(t->buf && t->buf2);
	t->sess_gen = -1;
	while (atomic_load(&phase) != PH_QUIT) {
		struct gen *gs[SPIN_MAX_ACTIVE];
		int n = 0, ph = atomic_load(&phase);

		atomic_store_explicit(&t->beat, now_ms(), memory_order_relaxed);
		t->iter++;
		cnt(t, C_ITERS, 1);
		pthread_mutex_lock(&tbl);
		for (int i = 0; i < nactive; i++)
			if (gen_borrow_locked(active[i]))
				gs[n++] = active[i];
		pthread_mutex_unlock(&tbl);
		for (int i = 0; i < n; i++) {
			eng_ref(gs[i]->eng[SRV]);
			eng_ref(gs[i]->eng[CLI]);
			drive(t, gs[i]);
			eng_unref(gs[i]->eng[CLI]);
			eng_unref(gs[i]->eng[SRV]);
		}
		for (int i = 0; i < n; i++)
			gen_release(gs[i]);
		/* datagrams held for a generation that is going away */
		for (int i = 0; i < t->nhold;) {
			if (!gen_alive(t->hold[i].g)) {
				free(t->hold[i].data);
				t->hold[i] = t->hold[--t->nhold];
			} else {
				i++;
			}
		}
		reap(t, 0);
		if (ph == PH_RUN) {
			for (int k = 1 + (int)rnd(&t->rng, 4); k > 0; k--) {
				atomic_store_explicit(&t->beat, now_ms(), memory_order_relaxed);
				do_op(t);
			}
		} else {
			drain_actions(t);
			if (!n)
				usleep(1000);
		}
	}
	set_op(t, "quit", 0);
	reap(t, 1);
	CHECK(t->nown == 0);
	for (int i = 0; i < t->nhold; i++)
		free(t->hold[i].data);
	t->nhold = 0;
	free(t->own);
	free(t->buf);
	free(t->buf2);
	return NULL;
}

/* ---- the watchdog ------------------------------------------------------------------------- */

static void hang_report(int who, long long stalled)
{
	char cmd[128];

	pthread_mutex_lock(&fail_lock);
	fflush(stdout);
	fprintf(stderr, "spin: HANG seed=%" PRIu64 ": %s made no progress for %lld ms (limit %d s)\n", opt_seed,
	        who < 0 ? "the main thread" : "a spin thread", stalled, opt_hang);
	if (who >= 0)
		fprintf(stderr, "spin: stalled thread: %d\n", who);
	fprintf(stderr, "spin:   main: last step %s, %lld ms ago\n", atomic_load(&main_op), now_ms() - atomic_load(&main_beat));
	for (int i = 0; i < opt_threads; i++)
		fprintf(stderr, "spin:   thread %d: last operation %s, %" PRIu64 " ops, last progress %lld ms ago\n", i,
		        atomic_load(&thr[i].op), (uint64_t)atomic_load(&thr[i].ctr[C_OPS]),
		        now_ms() - atomic_load(&thr[i].beat));
	fflush(stderr);
	if (!getenv("SPIN_NO_GDB") && access("/usr/bin/gdb", X_OK) == 0) {
		fprintf(stderr, "spin: stacks (gdb):\n");
		fflush(stderr);
		snprintf(cmd, sizeof(cmd), "timeout 120 gdb -p %d -batch -ex 'thread apply all bt 40' 1>&2 2>/dev/null",
		         (int)getpid());
		if (system(cmd) != 0)
			fprintf(stderr, "spin: gdb failed\n");
	}
	fprintf(stderr, "spin: reproduce with --seed %" PRIu64 " --threads %d\n", opt_seed, opt_threads);
	final_line(0);
	_exit(SPIN_EXIT_HANG);
}

static void *watchdog(void *arg)
{
	(void)arg;
	for (;;) {
		long long now = now_ms(), limit = opt_hang * 1000LL, m = now - atomic_load(&main_beat);

		if (m > limit)
			hang_report(-1, m);
		for (int i = 0; i < opt_threads; i++) {
			long long b = atomic_load(&thr[i].beat);

			if (b && now - b > limit && atomic_load(&phase) != PH_QUIT)
				hang_report(i, now - b);
		}
		usleep(250000);
	}
	return NULL;
}

/* ---- main ---------------------------------------------------------------------------------- */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;   /* the directory's own fd */
}

static void progress_line(long long t0, long long now, uint64_t *last_ops, long long *last_ms)
{
	uint64_t o = total(C_OPS);
	double rate = now > *last_ms ? (double)(o - *last_ops) * 1000.0 / (double)(now - *last_ms) : 0;

	printf("spin: %3llds  ops %" PRIu64 " (%.0f/s)  handshakes %" PRIu64 "  requests %" PRIu64 "  responses %" PRIu64
	       "  resets %" PRIu64 "/%" PRIu64 "  goaway %" PRIu64 "  misuse %" PRIu64 "  gens %d  handles %d  live %zu\n",
	       (now - t0) / 1000, o, rate, total(C_CLI_EST), total(C_REQ_SENT), total(C_RESP_OK), total(C_RST_SENT),
	       total(C_RST_RECV), total(C_GOAWAY_RECV),
	       total(C_MIS_NULL) + total(C_MIS_ARGS) + total(C_MIS_WRONG) + total(C_MIS_CLOSED) + total(C_MIS_DEAD) +
	               total(C_MIS_STATE),
	       ngens, table_load(), haquic_live_objects());
	fflush(stdout);
	*last_ops = o;
	*last_ms = now;
}

#ifdef SPIN_ASAN
static void on_sanitizer_death(void)
{
	fprintf(stderr, "spin: sanitizer report (seed=%" PRIu64 ", threads=%d)\n", opt_seed, opt_threads);
	final_line(0);
}
#endif

static void usage(void)
{
	fprintf(stderr, "usage: spin [-f fixtures] [--seed N] [--duration S] [--threads T] [--hang S] [--gen-life S]\n"
	                "            [--allow-reset-fin] [--no-hooks] [--verbose]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	pthread_t wd;
	int seeded = 0, fds0, fds1;
	long long end, next_print, last_ms;
	uint64_t last_ops = 0;
	int drained = 1;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "-f") && v) {
			opt_fixtures = v;
			i++;
		} else if (!strcmp(a, "--seed") && v) {
			opt_seed = strtoull(v, NULL, 0);
			seeded = 1;
			i++;
		} else if (!strcmp(a, "--duration") && v) {
			opt_duration = atoi(v);
			i++;
		} else if (!strcmp(a, "--threads") && v) {
			opt_threads = atoi(v);
			i++;
		} else if (!strcmp(a, "--hang") && v) {
			opt_hang = atoi(v);
			i++;
		} else if (!strcmp(a, "--gen-life") && v) {
			opt_gen_life = atoi(v);
			i++;
		} else if (!strcmp(a, "--allow-reset-fin")) {
			opt_allow_reset_fin = 1;
		} else if (!strcmp(a, "--no-hooks")) {
			opt_hooks = 0;
		} else if (!strcmp(a, "--verbose")) {
			opt_verbose = 1;
		} else {
			usage();
		}
	}
	if (opt_threads < 1 || opt_threads > SPIN_MAX_THREADS || opt_duration < 0 || opt_hang < 1)
		usage();
	if (!seeded) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		opt_seed = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
		opt_seed %= 10000000000ull;
	}
#ifdef SPIN_ASAN
	__sanitizer_set_death_callback(on_sanitizer_death);
#endif
	setvbuf(stdout, NULL, _IOLBF, 0);
	opt_trace = getenv("SPIN_TRACE") != NULL;
	printf("spin: seed %" PRIu64 ", %d s, %d threads, hang limit %d s, test hooks %s (%s)\n", opt_seed, opt_duration,
	       opt_threads, opt_hang, opt_hooks ? "on" : "off", haquic_build_info());
	CHECK(haquic_version() == HAQUIC_VERSION_NUMBER);
	CHECK(haquic_live_objects() == 0);
	fds0 = count_fds();
	for (int i = 0; i < NOPS; i++)
		if (!ops[i].hook || opt_hooks)
			weight_total += ops[i].weight;
	rng_seed(&main_rng, opt_seed, 1000);
	start_ms = now_ms();
	atomic_store(&main_beat, start_ms);
	set_op(NULL, "gen_new", 0);
	gen_new();
	for (int i = 0; i < opt_threads; i++) {
		thr[i].idx = i;
		rng_seed(&thr[i].rng, opt_seed, (uint64_t)i);
		atomic_store(&thr[i].op, "start");
		atomic_store(&thr[i].beat, now_ms());
	}
	for (int i = 0; i < opt_threads; i++)
		if (pthread_create(&thr[i].th, NULL, spin_thread, &thr[i]) != 0)
			FAILF("pthread_create");
	if (pthread_create(&wd, NULL, watchdog, NULL) != 0)
		FAILF("pthread_create");
	pthread_detach(wd);

	end = start_ms + opt_duration * 1000LL;
	next_print = start_ms + 10000;
	last_ms = start_ms;
	while (now_ms() < end) {
		long long now = now_ms();
		struct gen *cur = NULL;

		atomic_store(&main_beat, now);
		set_op(NULL, "main loop", 0);
		pthread_mutex_lock(&tbl);
		for (int i = nactive - 1; i >= 0 && !cur; i--)
			if (atomic_load(&active[i]->state) == GS_LIVE)
				cur = active[i];
		pthread_mutex_unlock(&tbl);
		if (cur && now - cur->born_ms >= cur->life_ms && nactive < SPIN_MAX_ACTIVE && now + 3000 < end) {
			set_op(NULL, "gen_new", 0);
			gen_new();
			gen_retire(cur);
		}
		for (int i = 0; i < ngens; i++) {
			struct gen *g = gens[i];

			if (atomic_load(&g->state) == GS_RETIRING && now >= g->dead_ms)
				gen_kill(g);
		}
		if (now >= next_print) {
			progress_line(start_ms, now, &last_ops, &last_ms);
			next_print += 10000;
		}
		usleep(50000);
	}

	/* drain: every engine shuts down gracefully; the threads drive them until
	 * no connection is open */
	set_op(NULL, "drain", 0);
	atomic_store(&phase, PH_DRAIN);
	for (int i = 0; i < nactive; i++)
		for (int s = 0; s < 2; s++)
			EXPECT(haquic_engine_shutdown(active[i]->eng[s]), M_OK);
	{
		long long dl = now_ms() + 30000;

		for (;;) {
			uint64_t open = 0;

			atomic_store(&main_beat, now_ms());
			for (int i = 0; i < nactive; i++)
				for (int s = 0; s < 2; s++) {
					haquic_stats st;

					stats_of(active[i]->eng[s], &st);
					open += st.conns_open;
				}
			if (!open)
				break;
			if (now_ms() > dl) {
				drained = 0;
				fprintf(stderr, "spin: %" PRIu64 " connection(s) still open 30 s after engine_shutdown\n", open);
				break;
			}
			usleep(20000);
		}
	}
	set_op(NULL, "quit", 0);
	atomic_store(&phase, PH_QUIT);
	for (int i = 0; i < opt_threads; i++)
		pthread_join(thr[i].th, NULL);
	atomic_store(&main_beat, now_ms());
	if (!drained)
		FAILF("graceful shutdown did not complete within 30 s (idle timeouts are at most 7.5 s)");
	while (nactive) {
		struct gen *g = active[0];

		if (atomic_load(&g->state) == GS_LIVE)
			atomic_store(&g->state, GS_RETIRING);
		gen_kill(g);
		atomic_store(&main_beat, now_ms());
	}
	/* the listeners left in the table */
	pthread_mutex_lock(&tbl);
	while (nused) {
		int idx = dense[0], n, kind = 0;
		const void *h = NULL;
		uint64_t serial = slots[idx].serial;

		CHECKF(slots[idx].kind == SK_LISTENER, "a %s handle was left in the table", slots[idx].kind == SK_CONN ?
		       "connection" : "stream");
		n = table_remove_locked(idx, serial, &h, &kind);
		for (int i = 0; i < n; i++)
			h_unref(kind, h);
	}
	pthread_mutex_unlock(&tbl);

	/* the invariants */
	{
		uint64_t taken = atomic_load(&refs_taken), gone = atomic_load(&refs_dropped);
		size_t live = haquic_live_objects();
		long long ms = now_ms() - start_ms;
		uint64_t ops_n = total(C_OPS), mis = 0;

		fds1 = count_fds();
		for (int c = C_MIS_NULL; c <= C_MIS_STATE; c++)
			mis += total(c);
		printf("spin: summary: seed %" PRIu64 ", %d threads, %.1f s\n", opt_seed, opt_threads, ms / 1000.0);
		printf("spin:   %-40s %" PRIu64 " (%.0f/s)\n", "operations", ops_n, ops_n * 1000.0 / (ms ? ms : 1));
		printf("spin:   %-40s %" PRIu64 "\n", "misuse calls checked", mis);
		for (int c = 1; c < C_MAX; c++)
			printf("spin:   %-40s %" PRIu64 "\n", counter_names[c], total(c));
		printf("spin:   %-40s %d created, %ld freed\n", "generations", ngens, freed_totals.gens_freed);
		printf("spin:   %-40s server %" PRIu64 " accepted, %" PRIu64 " handshakes, %" PRIu64 " requests, %" PRIu64
		       " rejected after GOAWAY, %" PRIu64 " malformed; client %" PRIu64 " started\n",
		       "engine counters (all generations)", freed_totals.srv_conns, freed_totals.srv_handshakes,
		       freed_totals.requests, freed_totals.rejected, freed_totals.msg_errors, freed_totals.cli_conns);
		printf("spin:   %-40s wrong-thread %" PRIu64 ", stale handle %" PRIu64 ", connection panics %" PRIu64
		       ", 0-RTT %" PRIu64 ", retries %" PRIu64 "\n", "", freed_totals.wrong, freed_totals.stale,
		       freed_totals.panics, freed_totals.zero_rtt, freed_totals.retries);
		printf("spin:   %-40s queue-full %" PRIu64 ", unknown CID %" PRIu64 ", conn limit %" PRIu64
		       ", stateless resets %" PRIu64 ", paced %" PRIu64 ", held %" PRIu64 "\n", "",
		       freed_totals.drops_queue, freed_totals.drops_unknown, freed_totals.drop_conn_limit,
		       freed_totals.resets_sent, freed_totals.paced, freed_totals.held);
		for (int o = 0; o < MAX_OPS; o++)
			for (int c = 0; c < NCODES; c++)
				if (atomic_load(&unexpected[o][c]))
					printf("spin:   unlisted code: %s -> %s: %" PRIu64 "\n", o ? ops[o - 1].name : "drive/events",
					       code_names[c], (uint64_t)atomic_load(&unexpected[o][c]));
		printf("spin:   %-40s taken %" PRIu64 ", dropped %" PRIu64 "\n", "references", taken, gone);
		printf("spin:   %-40s %zu\n", "live objects at the end", live);
		printf("spin:   %-40s %d before, %d after\n", "open fds", fds0, fds1);
		CHECKF(taken == gone, "%" PRIu64 " references taken, %" PRIu64 " dropped", taken, gone);
		CHECKF(live == 0, "%zu haquic object(s) still alive", live);
		CHECKF(fds1 == fds0, "fd leak: %d open before, %d after", fds0, fds1);
		if (opt_duration >= 5) {
			CHECKF(total(C_CLI_EST) > 0, "no handshake completed");
			CHECKF(total(C_RESP_OK) > 0, "no response completed");
			CHECKF(mis > 0, "no misuse call made");
		}
	}
	for (int i = 0; i < ngens; i++)
		free(gens[i]);
#ifdef SPIN_ASAN
	/* leaks fail the run here, through the death callback's last line */
	__lsan_do_leak_check();
#endif
	final_line(1);
	return 0;
}
