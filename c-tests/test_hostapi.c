/*
 * The host-side API HAProxy's bridge relies on: a connection's listener and
 * local address, host userdata on connections and streams, per-listener
 * statistics, and the early release of a shutting-down listener's socket
 * when its connections have sockets of their own.
 *
 * The pair's hooks (pair.h) show every event to the test before the pair's
 * small application handles it; a hook cannot jump to a test's cleanup, so
 * it counts what it saw and reports mismatches in `errors`, which the test
 * then checks.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include "pair.h"

#define TRACK_MAX 16

struct hook_state {
	int errors;
	/* userdata */
	int srv_conn_tag, cli_conn_tag;
	int srv_tags[TRACK_MAX], cli_tags[TRACK_MAX];
	uint64_t srv_ids[TRACK_MAX];
	const haquic_stream *srv_streams[TRACK_MAX];  /* references */
	int nsrv;
	int srv_later[TRACK_MAX];     /* later server events that read the stream's tag back */
	int cli_later[TRACK_MAX];     /* same on the client, by client stream index */
	int srv_conn_checked;         /* server events whose conn carried the tag */
	int cli_conn_checked;
	int srv_closed_with_tag;
	const haquic_conn *srv_conn;  /* a reference */
	/* listeners */
	const haquic_listener *l1, *l2;
	int on_l1, on_l2;             /* server requests seen per listener */
	const haquic_conn *c2;        /* a second client connection (borrowed) */
	int est1, est2;
	/* client GOAWAY and CONN_CLOSED events, [0] on p->conn, [1] on c2,
	 * numbered in order of arrival (from 1) */
	int cli_seq;
	int goaway_seq[2], goaways[2], closed_seq[2], closes[2];
	uint64_t goaway_id[2], close_code[2];
	int close_is_app[2];
	/* sockets */
	int conn_fd;                  /* the server connection's own socket */
	uint32_t conn_gen;
	int listener_fd;
	int listener_released;        /* FD_RELEASE of listener_fd seen */
	int conn_open_at_release;     /* the server connection was still open then */
	int cli_closed_at_release;
	int conn_released;
};

static void hook_fail(struct hook_state *h, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "    %s:%d (hook): ", __FILE__, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	h->errors++;
}

#define HOOK_FAIL(h, ...) hook_fail((h), __LINE__, __VA_ARGS__)

static int addr_equals(const void *a, size_t alen, const struct sockaddr_in *b)
{
	const struct sockaddr_in *x = a;

	return alen == sizeof(*b) && x->sin_family == AF_INET && x->sin_port == b->sin_port &&
	       x->sin_addr.s_addr == b->sin_addr.s_addr;
}

static const char *addr_text(const void *a, char *buf, size_t cap)
{
	const struct sockaddr_in *x = a;
	char ip[INET_ADDRSTRLEN] = "?";

	inet_ntop(AF_INET, &x->sin_addr, ip, sizeof(ip));
	snprintf(buf, cap, "%s:%u (family %d)", ip, ntohs(x->sin_port), x->sin_family);
	return buf;
}

/* ---- NULL arguments and buffer sizes --------------------------------------- */

static int hostapi_null_arguments(void)
{
	struct pair p;
	struct sockaddr_storage ss;
	union { haquic_stats st; unsigned char raw[sizeof(haquic_stats) + 8]; } old;
	size_t st_old = offsetof(haquic_stats, conn_sockets_opened);
	haquic_stats st;
	size_t len = 12345;
	int tag = 0;
	int rc = 1;

	CHECK(pair_init(&p, 1, NULL) == 0);
	CHECK(pair_connect(&p) == 0);
	CHECK(PAIR_UNTIL(&p, p.established, 5000));

	CHECK(haquic_conn_listener(NULL) == NULL);
	CHECK_RESULT(haquic_conn_set_userdata(NULL, &tag), HAQUIC_ERR_NULL);
	CHECK(haquic_conn_userdata(NULL) == NULL);
	CHECK_RESULT(haquic_stream_set_userdata(NULL, &tag), HAQUIC_ERR_NULL);
	CHECK(haquic_stream_userdata(NULL) == NULL);

	CHECK_RESULT(haquic_conn_local_address(NULL, &ss, sizeof(ss), &len), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_conn_local_address(p.conn, NULL, sizeof(ss), &len), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_conn_local_address(p.conn, &ss, sizeof(ss), NULL), HAQUIC_ERR_NULL);
	CHECK(len == 12345);
	/* too small: an error, and nothing is written */
	memset(&ss, 0xab, sizeof(ss));
	CHECK_RESULT(haquic_conn_local_address(p.conn, &ss, sizeof(struct sockaddr_in) - 1, &len),
	             HAQUIC_ERR_BUFFER_TOO_SMALL);
	CHECK_RESULT(haquic_conn_local_address(p.conn, &ss, 0, &len), HAQUIC_ERR_BUFFER_TOO_SMALL);
	CHECK(len == 12345 && ((unsigned char *)&ss)[0] == 0xab);
	CHECK_RESULT(haquic_conn_local_address(p.conn, &ss, sizeof(struct sockaddr_in), &len), HAQUIC_OK);
	CHECK(len == sizeof(struct sockaddr_in));

	CHECK_RESULT(HAQUIC_STATS_INIT(&st), HAQUIC_OK);
	CHECK_RESULT(haquic_listener_stats(NULL, &st), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_listener_stats(p.sl, NULL), HAQUIC_ERR_NULL);
	st.struct_size = 4;
	CHECK_RESULT(haquic_listener_stats(p.sl, &st), HAQUIC_ERR_STRUCT_SIZE);
	st.struct_size = sizeof(st) + 8;
	CHECK_RESULT(haquic_listener_stats(p.sl, &st), HAQUIC_ERR_STRUCT_SIZE);
	CHECK_RESULT(HAQUIC_STATS_INIT(&st), HAQUIC_OK);
	CHECK(PAIR_UNTIL(&p, haquic_listener_stats(p.sl, &st) == HAQUIC_OK && st.handshakes == 1, 5000));
	/* a host built against the older, shorter haquic_stats: nothing is
	 * written past the size it gave */
	memset(&old, 0xab, sizeof(old));
	CHECK_RESULT(haquic_stats_init(&old.st, st_old), HAQUIC_OK);
	CHECK_RESULT(haquic_listener_stats(p.sl, &old.st), HAQUIC_OK);
	CHECK(old.st.handshakes == 1 && old.st.conns_accepted == 1 && old.raw[st_old] == 0xab);
	rc = 0;
cleanup:
	pair_free(&p);
	return rc;
}

/* ---- userdata ------------------------------------------------------------------ */

static int srv_index_of(struct hook_state *h, const haquic_stream *s)
{
	uint64_t id = haquic_stream_id(s);

	for (int i = 0; i < h->nsrv; i++)
		if (h->srv_ids[i] == id)
			return i;
	return -1;
}

/* Server side: the connection's userdata is set on its first REQUEST and read
 * back on every later event; each request stream gets its own tag on
 * REQUEST, read back on that stream's later events. */
static void userdata_srv_hook(struct pair *p, uint32_t w, const haquic_event *ev)
{
	struct hook_state *h = p->hook_arg;
	void *cud;
	int i;

	(void)w;
	if (!ev->conn)
		return;
	cud = haquic_conn_userdata(ev->conn);
	if (ev->kind == HAQUIC_EVENT_REQUEST) {
		if (h->nsrv == 0) {
			if (cud != NULL)
				HOOK_FAIL(h, "server connection has userdata %p before any was set", cud);
			if (haquic_conn_set_userdata(ev->conn, &h->srv_conn_tag) != HAQUIC_OK)
				HOOK_FAIL(h, "haquic_conn_set_userdata failed");
			h->srv_conn = haquic_conn_ref(ev->conn);
		} else if (cud == &h->srv_conn_tag) {
			h->srv_conn_checked++;
		} else {
			HOOK_FAIL(h, "REQUEST: connection userdata %p, expected %p", cud, (void *)&h->srv_conn_tag);
		}
		if (haquic_stream_userdata(ev->stream) != NULL)
			HOOK_FAIL(h, "a new request stream has userdata %p", haquic_stream_userdata(ev->stream));
		if (h->nsrv >= TRACK_MAX) {
			HOOK_FAIL(h, "too many requests");
			return;
		}
		i = h->nsrv++;
		h->srv_ids[i] = haquic_stream_id(ev->stream);
		h->srv_streams[i] = haquic_stream_ref(ev->stream);
		if (haquic_stream_set_userdata(ev->stream, &h->srv_tags[i]) != HAQUIC_OK)
			HOOK_FAIL(h, "haquic_stream_set_userdata failed");
		if (haquic_stream_userdata(ev->stream) != &h->srv_tags[i])
			HOOK_FAIL(h, "stream userdata not read back at once");
		return;
	}
	if (h->nsrv == 0) {
		if (cud != NULL)
			HOOK_FAIL(h, "event %d before the first request: connection userdata %p", ev->kind, cud);
		return;
	}
	if (cud == &h->srv_conn_tag)
		h->srv_conn_checked++;
	else
		HOOK_FAIL(h, "event %d: connection userdata %p, expected %p", ev->kind, cud, (void *)&h->srv_conn_tag);
	if (ev->kind == HAQUIC_EVENT_CONN_CLOSED && cud == &h->srv_conn_tag)
		h->srv_closed_with_tag++;
	if (ev->stream) {
		void *sud = haquic_stream_userdata(ev->stream);

		i = srv_index_of(h, ev->stream);
		if (i < 0)
			HOOK_FAIL(h, "event %d on an untracked stream", ev->kind);
		else if (sud == &h->srv_tags[i])
			h->srv_later[i]++;
		else
			HOOK_FAIL(h, "event %d on stream %llu: userdata %p, expected %p", ev->kind,
			          (unsigned long long)h->srv_ids[i], sud, (void *)&h->srv_tags[i]);
	}
}

/* Client side: the tags were set on the connection right after connect and
 * on each stream right after haquic_conn_send_request. */
static void userdata_cli_hook(struct pair *p, const haquic_event *ev)
{
	struct hook_state *h = p->hook_arg;

	if (!ev->conn)
		return;
	if (ev->conn != p->conn)
		HOOK_FAIL(h, "client event %d for a connection handle that is not p->conn", ev->kind);
	if (haquic_conn_userdata(ev->conn) == &h->cli_conn_tag)
		h->cli_conn_checked++;
	else
		HOOK_FAIL(h, "client event %d: connection userdata %p", ev->kind, haquic_conn_userdata(ev->conn));
	if (ev->stream) {
		int i;

		for (i = 0; i < p->ncs && p->cs[i].s != ev->stream; i++)
			;
		if (i == p->ncs)
			HOOK_FAIL(h, "client event %d on an unknown stream", ev->kind);
		else if (haquic_stream_userdata(ev->stream) == &h->cli_tags[i])
			h->cli_later[i]++;
		else
			HOOK_FAIL(h, "client event %d on stream %d: userdata %p", ev->kind, i, haquic_stream_userdata(ev->stream));
	}
}

/* A request, retried while the client cannot open it yet (an upload before
 * it may fill the congestion window: HAQUIC_ERR_WOULD_BLOCK). The new
 * stream has no userdata; it gets `tag` at once, before any of its events
 * can arrive. */
static int request_retry(struct pair *p, const char *method, const char *path, const unsigned char *up, size_t len,
                         void *tag)
{
	long long deadline = pair_now_ms() + 5000;
	int i;

	while ((i = pair_request(p, method, path, up, len)) < 0 && pair_now_ms() < deadline)
		if (!pair_pump(p, 1))
			pair_idle(p);
	if (i >= 0 && haquic_stream_userdata(p->cs[i].s) != NULL)
		return -2;
	if (i >= 0 && haquic_stream_set_userdata(p->cs[i].s, tag) != HAQUIC_OK)
		return -3;
	return i;
}

struct thread_set {
	const haquic_conn *conn;
	const haquic_stream *stream;
	void *value;
	haquic_result r1, r2;
};

static void *set_from_thread(void *v)
{
	struct thread_set *t = v;

	t->r1 = haquic_conn_set_userdata(t->conn, t->value);
	t->r2 = haquic_stream_set_userdata(t->stream, t->value);
	return NULL;
}

static int hostapi_userdata_round_trip(void)
{
	struct pair p;
	struct hook_state h;
	size_t up0 = 100000, up1 = 50000;
	unsigned char *body = malloc(up0);
	const haquic_conn *keep = NULL;
	int other = 0, k[4], rc = 1;

	memset(&h, 0, sizeof(h));
	CHECK(body != NULL);
	pattern_fill(body, up0, 11);
	CHECK(pair_init(&p, 1, NULL) == 0);
	p.srv_hook = userdata_srv_hook;
	p.cli_hook = userdata_cli_hook;
	p.hook_arg = &h;
	CHECK(pair_connect(&p) == 0);
	CHECK(haquic_conn_userdata(p.conn) == NULL);
	CHECK_RESULT(haquic_conn_set_userdata(p.conn, &other), HAQUIC_OK);
	CHECK(haquic_conn_userdata(p.conn) == &other);
	/* a second set replaces the first */
	CHECK_RESULT(haquic_conn_set_userdata(p.conn, &h.cli_conn_tag), HAQUIC_OK);
	CHECK(haquic_conn_userdata(p.conn) == &h.cli_conn_tag);
	CHECK(PAIR_UNTIL(&p, p.established, 5000));

	/* two uploads (READABLE events after REQUEST), a download larger than
	 * the client's stream window (WRITABLE events), and a short GET */
	k[0] = request_retry(&p, "POST", "/echo", body, up0, &h.cli_tags[0]);
	k[1] = request_retry(&p, "POST", "/echo", body, up1, &h.cli_tags[1]);
	k[2] = request_retry(&p, "GET", "/size/2500000", NULL, 0, &h.cli_tags[2]);
	k[3] = request_retry(&p, "GET", "/", NULL, 0, &h.cli_tags[3]);
	for (int i = 0; i < 4; i++)
		CHECK(k[i] == i);
	if (!PAIR_UNTIL(&p, p.cs[0].fin && p.cs[1].fin && p.cs[2].fin && p.cs[3].fin, 30000))
		FAILF("not all responses: fin %d %d %d %d", p.cs[0].fin, p.cs[1].fin, p.cs[2].fin, p.cs[3].fin);
	CHECK(p.cs[0].body_len == up0 && memcmp(p.cs[0].body, body, up0) == 0);
	CHECK(p.cs[1].body_len == up1 && memcmp(p.cs[1].body, body, up1) == 0);
	CHECK(p.cs[2].body_len == 2500000 && p.cs[3].body_len == 5);
	CHECK(h.errors == 0);
	CHECK(h.nsrv == 4 && h.srv_conn != NULL);
	/* every stream saw its own tag on later events: body events for the
	 * uploads, write credit for the download */
	if (h.srv_later[0] < 1 || h.srv_later[1] < 1 || h.srv_later[2] < 1)
		FAILF("later server events with the stream's tag: %d %d %d", h.srv_later[0], h.srv_later[1], h.srv_later[2]);
	for (int i = 0; i < 4; i++) {
		/* the tags are distinct per stream, and stay on the handles */
		CHECK(haquic_stream_userdata(h.srv_streams[i]) == &h.srv_tags[i]);
		for (int j = 0; j < i; j++)
			CHECK(haquic_stream_userdata(h.srv_streams[i]) != haquic_stream_userdata(h.srv_streams[j]));
		CHECK(h.cli_later[i] >= 1);  /* at least the RESPONSE */
		CHECK(haquic_stream_userdata(p.cs[i].s) == &h.cli_tags[i]);
	}
	CHECK(h.srv_conn_checked >= 3 && h.cli_conn_checked >= 5);
	/* the server's stream and connection handles are not the client's */
	CHECK(haquic_conn_userdata(h.srv_conn) == &h.srv_conn_tag);
	CHECK(haquic_conn_userdata(p.conn) == &h.cli_conn_tag);

	/* any thread may set them */
	{
		struct thread_set t = { h.srv_conn, h.srv_streams[3], &other, HAQUIC_ERR_PANIC, HAQUIC_ERR_PANIC };
		pthread_t th;

		CHECK(pthread_create(&th, NULL, set_from_thread, &t) == 0);
		pthread_join(th, NULL);
		CHECK_RESULT(t.r1, HAQUIC_OK);
		CHECK_RESULT(t.r2, HAQUIC_OK);
		CHECK(haquic_conn_userdata(h.srv_conn) == &other);
		CHECK(haquic_stream_userdata(h.srv_streams[3]) == &other);
		CHECK_RESULT(haquic_conn_set_userdata(h.srv_conn, &h.srv_conn_tag), HAQUIC_OK);
	}

	/* the server's CONN_CLOSED still carries the tag */
	CHECK_RESULT(haquic_conn_close(p.conn, 0x100, NULL, 0), HAQUIC_OK);
	CHECK(PAIR_UNTIL(&p, p.srv_closed == 1, 10000));
	CHECK(h.srv_closed_with_tag == 1);
	CHECK(h.errors == 0);
	/* a closed connection and its streams keep their userdata, and the host
	 * may clear it when it frees its context */
	CHECK(haquic_conn_is_closed(h.srv_conn));
	CHECK(haquic_conn_userdata(h.srv_conn) == &h.srv_conn_tag);
	CHECK(haquic_stream_userdata(h.srv_streams[0]) == &h.srv_tags[0]);
	CHECK_RESULT(haquic_conn_set_userdata(h.srv_conn, NULL), HAQUIC_OK);
	CHECK(haquic_conn_userdata(h.srv_conn) == NULL);
	CHECK_RESULT(haquic_stream_set_userdata(h.srv_streams[0], NULL), HAQUIC_OK);
	CHECK(haquic_stream_userdata(h.srv_streams[0]) == NULL);
	/* and once the engine is gone, the handles still answer */
	keep = haquic_conn_ref(p.conn);
	haquic_engine_unref(p.cli);
	p.cli = NULL;
	CHECK(haquic_conn_userdata(keep) == &h.cli_conn_tag);
	CHECK(haquic_stream_userdata(p.cs[2].s) == &h.cli_tags[2]);
	rc = 0;
cleanup:
	haquic_conn_unref(keep);
	haquic_conn_unref(h.srv_conn);
	for (int i = 0; i < TRACK_MAX; i++)
		haquic_stream_unref(h.srv_streams[i]);
	free(body);
	pair_free(&p);
	return rc;
}

/* ---- haquic_conn_listener ---------------------------------------------------- */

static void listener_srv_hook(struct pair *p, uint32_t w, const haquic_event *ev)
{
	struct hook_state *h = p->hook_arg;
	const haquic_listener *l;

	(void)w;
	if (!ev->conn)
		return;
	l = haquic_conn_listener(ev->conn);
	if (l == h->l1)
		h->on_l1 += ev->kind == HAQUIC_EVENT_REQUEST;
	else if (h->l2 && l == h->l2)
		h->on_l2 += ev->kind == HAQUIC_EVENT_REQUEST;
	else
		HOOK_FAIL(h, "event %d: haquic_conn_listener gave %p, not a listener of the server", ev->kind, (void *)l);
	if (ev->kind == HAQUIC_EVENT_REQUEST && !h->srv_conn)
		h->srv_conn = haquic_conn_ref(ev->conn);
}

static int hostapi_conn_listener(void)
{
	struct pair p;
	struct hook_state h;
	struct sockaddr_in a;
	size_t len = 0;
	const haquic_conn *keep_cli = NULL, *keep_srv = NULL;
	const haquic_listener *cl = NULL, *sl = NULL, *r = NULL;
	int i, rc = 1;

	memset(&h, 0, sizeof(h));
	CHECK(pair_init(&p, 1, NULL) == 0);
	h.l1 = p.sl;
	p.srv_hook = listener_srv_hook;
	p.hook_arg = &h;
	CHECK(pair_connect(&p) == 0);
	/* the client's connection: the listener it was started from */
	CHECK(haquic_conn_listener(p.conn) == p.cl);
	CHECK(PAIR_UNTIL(&p, p.established, 5000));
	i = pair_request(&p, "GET", "/", NULL, 0);
	CHECK(i >= 0 && PAIR_UNTIL(&p, p.cs[i].fin, 5000));
	CHECK(h.errors == 0 && h.on_l1 == 1 && h.srv_conn != NULL);
	CHECK(haquic_conn_listener(h.srv_conn) == p.sl);
	/* a stream's connection gives the same listener */
	CHECK(haquic_conn_listener(haquic_stream_conn(p.cs[i].s)) == p.cl);
	/* the borrowed listener is a full handle: it can be queried and
	 * referenced */
	CHECK_RESULT(haquic_listener_address(haquic_conn_listener(h.srv_conn), &a, sizeof(a), &len), HAQUIC_OK);
	CHECK(addr_equals(&a, len, &p.saddr));
	r = haquic_listener_ref(haquic_conn_listener(h.srv_conn));
	CHECK(r == p.sl);
	haquic_listener_unref(r);
	r = NULL;

	/* held connections keep their listeners valid after everything else is
	 * released */
	keep_cli = haquic_conn_ref(p.conn);
	keep_srv = h.srv_conn;
	h.srv_conn = NULL;
	cl = p.cl;
	sl = p.sl;
	pair_free(&p);
	CHECK(haquic_conn_listener(keep_cli) == cl);
	CHECK(haquic_conn_listener(keep_srv) == sl);
	CHECK_RESULT(haquic_listener_address(haquic_conn_listener(keep_srv), &a, sizeof(a), &len), HAQUIC_OK);
	CHECK(ntohs(a.sin_port) == 4433);
	CHECK_RESULT(haquic_listener_address(haquic_conn_listener(keep_cli), &a, sizeof(a), &len), HAQUIC_OK);
	CHECK(ntohs(a.sin_port) == 50000);
	rc = 0;
cleanup:
	haquic_conn_unref(keep_cli);
	haquic_conn_unref(keep_srv);
	haquic_conn_unref(h.srv_conn);
	pair_free(&p);
	return rc;
}

/* ---- haquic_conn_local_address ------------------------------------------------- */

static void address_srv_hook(struct pair *p, uint32_t w, const haquic_event *ev)
{
	struct hook_state *h = p->hook_arg;

	(void)w;
	if (ev->kind == HAQUIC_EVENT_FD_REGISTER && ev->conn) {
		h->conn_fd = ev->fd;
		h->conn_gen = ev->fd_generation;
	}
	if (ev->kind == HAQUIC_EVENT_REQUEST && !h->srv_conn)
		h->srv_conn = haquic_conn_ref(ev->conn);
}

/* Host-fed listeners: the local address is the one the listener was given. */
static int hostapi_local_address_host_fed(void)
{
	struct pair p;
	struct hook_state h;
	struct sockaddr_storage ss;
	size_t len = 0;
	char t[64];
	int i, rc = 1;

	memset(&h, 0, sizeof(h));
	CHECK(pair_init(&p, 1, NULL) == 0);
	p.srv_hook = address_srv_hook;
	p.hook_arg = &h;
	CHECK(pair_connect(&p) == 0);
	CHECK(PAIR_UNTIL(&p, p.established, 5000));
	i = pair_request(&p, "GET", "/", NULL, 0);
	CHECK(i >= 0 && PAIR_UNTIL(&p, p.cs[i].fin, 5000));
	CHECK(h.srv_conn != NULL);
	CHECK_RESULT(haquic_conn_local_address(h.srv_conn, &ss, sizeof(ss), &len), HAQUIC_OK);
	if (!addr_equals(&ss, len, &p.saddr))
		FAILF("server connection's local address %s, expected 127.0.0.1:4433", addr_text(&ss, t, sizeof(t)));
	CHECK_RESULT(haquic_conn_peer_address(h.srv_conn, &ss, sizeof(ss), &len), HAQUIC_OK);
	CHECK(addr_equals(&ss, len, &p.caddr));
	CHECK_RESULT(haquic_conn_local_address(p.conn, &ss, sizeof(ss), &len), HAQUIC_OK);
	if (!addr_equals(&ss, len, &p.caddr))
		FAILF("client connection's local address %s, expected 127.0.0.2:50000", addr_text(&ss, t, sizeof(t)));
	/* still answered once closed */
	CHECK_RESULT(haquic_conn_close(p.conn, 0x100, NULL, 0), HAQUIC_OK);
	CHECK(PAIR_UNTIL(&p, p.srv_closed == 1, 10000));
	CHECK_RESULT(haquic_conn_local_address(h.srv_conn, &ss, sizeof(ss), &len), HAQUIC_OK);
	CHECK(addr_equals(&ss, len, &p.saddr));
	rc = 0;
cleanup:
	haquic_conn_unref(h.srv_conn);
	pair_free(&p);
	return rc;
}

/* Engine-owned sockets, with and without per-connection sockets: the local
 * address is the listener's bound address (the port the kernel picked), and
 * that of the connection's own socket. */
static int local_address_sockets_case(int mode)
{
	struct pair p;
	struct hook_state h;
	struct sockaddr_storage ss, own;
	socklen_t own_len = sizeof(own);
	haquic_stats st;
	size_t len = 0;
	char t[64], u[64];
	int i, rc = 1;

	memset(&h, 0, sizeof(h));
	h.conn_fd = -1;
	CHECK(pair_init_mode(&p, 1, NULL, mode) == 0);
	p.srv_hook = address_srv_hook;
	p.hook_arg = &h;
	CHECK(p.saddr.sin_port != 0 && p.caddr.sin_port != 0);
	CHECK(pair_connect(&p) == 0);
	CHECK(PAIR_UNTIL(&p, p.established, 5000));
	i = pair_request(&p, "GET", "/size/20000", NULL, 0);
	CHECK(i >= 0 && PAIR_UNTIL(&p, p.cs[i].fin, 5000));
	CHECK(h.srv_conn != NULL);
	CHECK_RESULT(haquic_conn_local_address(h.srv_conn, &ss, sizeof(ss), &len), HAQUIC_OK);
	if (!addr_equals(&ss, len, &p.saddr))
		FAILF("server connection's local address %s, listener bound to %s", addr_text(&ss, t, sizeof(t)),
		      addr_text(&p.saddr, u, sizeof(u)));
	if (mode & PAIR_CONN_SOCKETS) {
		/* and it is where the connection's own socket is bound */
		CHECK(h.conn_fd >= 0);
		CHECK(getsockname(h.conn_fd, (struct sockaddr *)&own, &own_len) == 0);
		CHECK(addr_equals(&ss, len, (struct sockaddr_in *)&own));
		/* the packets read on that socket come from the same path: no
		 * migration, and the socket stays the connection's */
		HAQUIC_STATS_INIT(&st);
		CHECK_RESULT(haquic_engine_stats(p.srv, &st), HAQUIC_OK);
		CHECK(st.conn_sockets_opened == 1 && st.migrations == 0 && st.fds_released == 0);
		CHECK(p.nfds == 2);
	} else {
		CHECK(h.conn_fd == -1);
	}
	CHECK_RESULT(haquic_conn_local_address(p.conn, &ss, sizeof(ss), &len), HAQUIC_OK);
	if (!addr_equals(&ss, len, &p.caddr))
		FAILF("client connection's local address %s, its listener bound to %s", addr_text(&ss, t, sizeof(t)),
		      addr_text(&p.caddr, u, sizeof(u)));
	rc = 0;
cleanup:
	haquic_conn_unref(h.srv_conn);
	pair_free(&p);
	return rc;
}

static int hostapi_local_address_sockets(void)
{
	return local_address_sockets_case(PAIR_SOCKETS);
}

static int hostapi_local_address_conn_sockets(void)
{
	return local_address_sockets_case(PAIR_SOCKETS | PAIR_CONN_SOCKETS);
}

/* ---- haquic_listener_stats ------------------------------------------------------ */

static void stats_cli_hook(struct pair *p, const haquic_event *ev)
{
	struct hook_state *h = p->hook_arg;
	int k = ev->conn == p->conn ? 0 : ev->conn == h->c2 ? 1 : -1;

	switch (ev->kind) {
	case HAQUIC_EVENT_CONN_ESTABLISHED:
		if (k == 0)
			h->est1++;
		else if (k == 1)
			h->est2++;
		else
			HOOK_FAIL(h, "CONN_ESTABLISHED for an unknown client connection");
		break;
	case HAQUIC_EVENT_GOAWAY:
		if (k < 0) {
			HOOK_FAIL(h, "GOAWAY for an unknown client connection");
			break;
		}
		h->cli_seq++;
		if (h->closed_seq[k])
			HOOK_FAIL(h, "GOAWAY after CONN_CLOSED on client connection %d", k + 1);
		if (!h->goaways[k]++) {
			h->goaway_seq[k] = h->cli_seq;
			h->goaway_id[k] = ev->code;
		}
		break;
	case HAQUIC_EVENT_CONN_CLOSED:
		if (k < 0) {
			HOOK_FAIL(h, "CONN_CLOSED for an unknown client connection");
			break;
		}
		h->cli_seq++;
		if (!h->closes[k]++) {
			h->closed_seq[k] = h->cli_seq;
			h->close_code[k] = ev->code;
			h->close_is_app[k] = ev->is_app_error;
		}
		break;
	default:
		break;
	}
}

static void stats_of(const haquic_listener *l, haquic_stats *st)
{
	HAQUIC_STATS_INIT(st);
	if (haquic_listener_stats(l, st) != HAQUIC_OK)
		memset(st, 0xff, sizeof(*st));
}

#define CHECK_LSTATS(st, acc, open, closed, hs, req, rej, merr) do { \
	if ((st).conns_accepted != (acc) || (st).conns_open != (open) || (st).conns_closed != (closed) || \
	    (st).handshakes != (hs) || (st).requests != (req) || (st).requests_rejected != (rej) || \
	    (st).h3_message_errors != (merr)) \
		FAILF("%s: accepted %llu open %llu closed %llu handshakes %llu requests %llu rejected %llu " \
		      "message errors %llu; expected %d %d %d %d %d %d %d", #st, \
		      (unsigned long long)(st).conns_accepted, (unsigned long long)(st).conns_open, \
		      (unsigned long long)(st).conns_closed, (unsigned long long)(st).handshakes, \
		      (unsigned long long)(st).requests, (unsigned long long)(st).requests_rejected, \
		      (unsigned long long)(st).h3_message_errors, acc, open, closed, hs, req, rej, merr); \
	if ((st).packets_in || (st).packets_out || (st).bytes_in || (st).bytes_out || (st).fds_released) \
		FAILF("%s: datagram and socket counters are not 0", #st); \
} while (0)

static const haquic_header echo_head[4] = {
	{ (const uint8_t *)":method", 7, (const uint8_t *)"POST", 4 },
	{ (const uint8_t *)":scheme", 7, (const uint8_t *)"https", 5 },
	{ (const uint8_t *)":authority", 10, (const uint8_t *)"haquic.test", 11 },
	{ (const uint8_t *)":path", 5, (const uint8_t *)"/echo", 5 },
};

/* The server application's streams on connections of `l` that are not
 * closed yet. (The application keeps a stream the engine reset while it was
 * reading its body, the content-length case below, but that one is closed.) */
static int open_app_streams_on(const struct pair *p, const haquic_listener *l)
{
	int n = 0;

	for (int i = 0; i < APP_MAX_STREAMS; i++)
		n += p->app[i].s && haquic_conn_listener(haquic_stream_conn(p->app[i].s)) == l &&
		     !haquic_stream_is_closed(p->app[i].s);
	return n;
}

static int send_raw_request(struct pair *p, const haquic_conn *c, const haquic_header *hs, size_t n, bool fin)
{
	if (p->ncs >= APP_MAX_STREAMS || haquic_conn_send_request(c, hs, n, fin, &p->cs[p->ncs].s) != HAQUIC_OK)
		return -1;
	return p->ncs++;
}

/* Two listeners on one server engine, a connection on each: every listener
 * counts its own connections, handshakes, requests, malformed messages and
 * refusals; the engine's totals are their sums. */
static int hostapi_listener_stats_two_listeners(void)
{
	struct pair p;
	struct hook_state h;
	const haquic_listener *sl2 = NULL;
	const haquic_conn *c2 = NULL;
	struct sockaddr_in a2;
	size_t len = 0, w = 0;
	haquic_stats s1, s2, c, e;
	/* a connection-specific field makes a request malformed (RFC 9114
	 * 4.2). (Not an uppercase name: quiche's QPACK encoder lowercases names,
	 * so a haquic client cannot send one.) */
	haquic_header connspec[5] = {
		{ (const uint8_t *)":method", 7, (const uint8_t *)"GET", 3 },
		{ (const uint8_t *)":scheme", 7, (const uint8_t *)"https", 5 },
		{ (const uint8_t *)":authority", 10, (const uint8_t *)"haquic.test", 11 },
		{ (const uint8_t *)":path", 5, (const uint8_t *)"/", 1 },
		{ (const uint8_t *)"connection", 10, (const uint8_t *)"close", 5 },
	};
	haquic_header cl[5] = {
		{ (const uint8_t *)":method", 7, (const uint8_t *)"POST", 4 },
		{ (const uint8_t *)":scheme", 7, (const uint8_t *)"https", 5 },
		{ (const uint8_t *)":authority", 10, (const uint8_t *)"haquic.test", 11 },
		{ (const uint8_t *)":path", 5, (const uint8_t *)"/echo", 5 },
		{ (const uint8_t *)"content-length", 14, (const uint8_t *)"3", 1 },
	};
	int first, bad, bad2, up, rej, last, cross, rc = 1;

	memset(&h, 0, sizeof(h));
	CHECK(pair_init_mode(&p, 1, NULL, PAIR_SOCKETS) == 0);
	memset(&a2, 0, sizeof(a2));
	a2.sin_family = AF_INET;
	a2.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_RESULT(haquic_listener_new(p.srv, NULL, &a2, sizeof(a2), 0, &sl2), HAQUIC_OK);
	CHECK_RESULT(haquic_listener_address(sl2, &a2, sizeof(a2), &len), HAQUIC_OK);
	CHECK(a2.sin_port != 0 && a2.sin_port != p.saddr.sin_port);
	h.l1 = p.sl;
	h.l2 = sl2;
	p.srv_hook = listener_srv_hook;
	p.cli_hook = stats_cli_hook;
	p.hook_arg = &h;

	stats_of(p.sl, &s1);
	CHECK_LSTATS(s1, 0, 0, 0, 0, 0, 0, 0);
	CHECK(pair_connect(&p) == 0);
	CHECK_RESULT(haquic_worker_connect(p.cli, 0, p.cl, &a2, sizeof(a2), "haquic.test", &c2), HAQUIC_OK);
	h.c2 = c2;
	CHECK(haquic_conn_listener(c2) == p.cl);
	CHECK(PAIR_UNTIL(&p, h.est1 && h.est2, 5000));

	/* three requests on the first listener, five on the second */
	first = p.ncs;
	for (int i = 0; i < 3; i++)
		CHECK(pair_request_on(&p, p.conn, "GET", "/size/1000", NULL, 0) >= 0);
	for (int i = 0; i < 5; i++)
		CHECK(pair_request_on(&p, c2, "GET", "/", NULL, 0) >= 0);
	CHECK(PAIR_UNTIL(&p, ({ int all = 1; for (int i = first; i < p.ncs; i++) all &= p.cs[i].fin; all; }), 10000));
	for (int i = first; i < first + 3; i++)
		CHECK(p.cs[i].status == 200 && p.cs[i].body_len == 1000);
	for (int i = first + 3; i < p.ncs; i++)
		CHECK(p.cs[i].status == 200 && p.cs[i].body_len == 5);
	CHECK(h.errors == 0 && h.on_l1 == 3 && h.on_l2 == 5);
	/* the server completes its handshakes when the clients' Finished
	 * arrive: long done by now */
	stats_of(p.sl, &s1);
	stats_of(sl2, &s2);
	CHECK_LSTATS(s1, 1, 1, 0, 1, 3, 0, 0);
	CHECK_LSTATS(s2, 1, 1, 0, 1, 5, 0, 0);
	HAQUIC_STATS_INIT(&e);
	CHECK_RESULT(haquic_engine_stats(p.srv, &e), HAQUIC_OK);
	CHECK(e.requests == 8 && e.handshakes == 2 && e.conns_accepted == 2 && e.conns_open == 2);
	/* the client's listener counts its two connections and their
	 * handshakes, and none of the server-side counters */
	stats_of(p.cl, &c);
	CHECK_LSTATS(c, 2, 2, 0, 2, 0, 0, 0);

	/* a malformed request on the second listener's connection counts
	 * there only */
	bad = send_raw_request(&p, c2, connspec, 5, true);
	CHECK(bad >= 0);
	if (!PAIR_UNTIL(&p, p.cs[bad].reset, 5000))
		FAILF("malformed request: status %d fin %d reset %d", p.cs[bad].status, p.cs[bad].fin, p.cs[bad].reset);
	CHECK(p.cs[bad].reset_code == H3_MESSAGE_ERROR);
	stats_of(p.sl, &s1);
	stats_of(sl2, &s2);
	CHECK_LSTATS(s1, 1, 1, 0, 1, 3, 0, 0);
	CHECK_LSTATS(s2, 1, 1, 0, 1, 5, 0, 1);
	/* a body longer than its content-length on the first listener's: the
	 * other place a message error is found */
	bad2 = send_raw_request(&p, p.conn, cl, 5, false);
	CHECK(bad2 >= 0);
	CHECK_RESULT(haquic_stream_send(p.cs[bad2].s, (const uint8_t *)"too long", 8, true, &w), HAQUIC_OK);
	CHECK(PAIR_UNTIL(&p, p.cs[bad2].reset, 5000));
	CHECK(p.cs[bad2].reset_code == H3_MESSAGE_ERROR);
	stats_of(p.sl, &s1);
	stats_of(sl2, &s2);
	CHECK_LSTATS(s1, 1, 1, 0, 1, 4, 0, 1);
	CHECK_LSTATS(s2, 1, 1, 0, 1, 5, 0, 1);
	CHECK_RESULT(haquic_engine_stats(p.srv, &e), HAQUIC_OK);
	CHECK(e.h3_message_errors == 2);

	/* the second listener shuts down while an upload is in flight on its
	 * connection: a request that crosses the GOAWAY is refused and counted
	 * there; once the upload is done, the connection closes, its GOAWAY
	 * (id 28: the upload was stream 24) seen before its close. (The idle
	 * case, where the connection has nothing in flight at the shutdown, is
	 * the first listener's, below.) */
	up = send_raw_request(&p, c2, echo_head, 4, false);
	CHECK(up >= 0);
	CHECK_RESULT(haquic_stream_send(p.cs[up].s, (const uint8_t *)"part1", 5, false, &w), HAQUIC_OK);
	CHECK(PAIR_UNTIL(&p, h.on_l2 == 6, 5000));
	CHECK_RESULT(haquic_listener_shutdown(sl2), HAQUIC_OK);
	rej = pair_request_on(&p, c2, "GET", "/", NULL, 0);
	CHECK(rej >= 0);
	if (!PAIR_UNTIL(&p, p.cs[rej].reset, 5000))
		FAILF("request after GOAWAY: status %d fin %d, goaways %d, c2 closed %d", p.cs[rej].status,
		      p.cs[rej].fin, p.goaways, haquic_conn_is_closed(c2));
	CHECK(p.cs[rej].reset_code == H3_REQUEST_REJECTED);
	CHECK(p.goaways == 1 && !haquic_conn_is_closed(c2));
	CHECK(h.goaways[1] == 1 && h.closes[1] == 0 && h.goaways[0] == 0);
	CHECK(haquic_stream_id(p.cs[up].s) == 24 && h.goaway_id[1] == 28);
	stats_of(p.sl, &s1);
	stats_of(sl2, &s2);
	CHECK_LSTATS(s1, 1, 1, 0, 1, 4, 0, 1);
	CHECK_LSTATS(s2, 1, 1, 0, 1, 6, 1, 1);
	CHECK_RESULT(haquic_stream_send(p.cs[up].s, (const uint8_t *)"part2", 5, true, &w), HAQUIC_OK);
	/* the close waits for the GOAWAY's linger (200 ms at least from its
	 * sending, restarted by the refusal), then the closing connection
	 * drains for three PTOs: seconds under valgrind, hence the generous
	 * waits for closes here, as in test_regress.c */
	CHECK(PAIR_UNTIL(&p, (stats_of(sl2, &s2), s2.conns_closed == 1), 60000));
	CHECK(p.cs[up].fin && p.cs[up].body_len == 10);
	CHECK(PAIR_UNTIL(&p, haquic_conn_is_closed(c2) && h.closes[1], 60000));
	CHECK_LSTATS(s2, 1, 0, 1, 1, 6, 1, 1);
	CHECK(h.goaways[1] == 1 && h.closes[1] == 1 && h.goaway_seq[1] < h.closed_seq[1]);
	if (h.close_code[1] != H3_NO_ERROR || !h.close_is_app[1])
		FAILF("second connection closed with 0x%llx (app %d), expected H3_NO_ERROR",
		      (unsigned long long)h.close_code[1], h.close_is_app[1]);
	/* the client's listener counts the close */
	CHECK(PAIR_UNTIL(&p, (stats_of(p.cl, &c), c.conns_closed == 1), 60000));
	CHECK_LSTATS(c, 2, 1, 1, 2, 0, 0, 0);
	/* the first listener's connection is untouched and still serves */
	CHECK(!haquic_conn_is_closed(p.conn));
	last = pair_request_on(&p, p.conn, "GET", "/", NULL, 0);
	CHECK(last >= 0 && PAIR_UNTIL(&p, p.cs[last].fin, 5000));
	CHECK(p.cs[last].status == 200);
	stats_of(p.sl, &s1);
	CHECK_LSTATS(s1, 1, 1, 0, 1, 5, 0, 1);
	CHECK_RESULT(haquic_engine_stats(p.srv, &e), HAQUIC_OK);
	CHECK(e.requests == 11 && e.requests_rejected == 1 && e.conns_closed == 1 && e.conns_open == 1);
	CHECK(h.errors == 0 && h.on_l1 == 5 && h.on_l2 == 6);

	/* the first listener shuts down while its connection is idle (every
	 * request stream closed at both ends): the client sees the GOAWAY (id
	 * 20: the last request was stream 16) before the close, with
	 * H3_NO_ERROR, and a request crossing the GOAWAY is refused and counted
	 * on the first listener */
	CHECK(haquic_stream_id(p.cs[last].s) == 16);
	CHECK(PAIR_UNTIL(&p, haquic_stream_is_closed(p.cs[last].s) && open_app_streams_on(&p, p.sl) == 0, 5000));
	pair_pump(&p, 10);
	CHECK(h.goaways[0] == 0 && h.closes[0] == 0 && !haquic_conn_is_closed(p.conn));
	CHECK_RESULT(haquic_listener_shutdown(p.sl), HAQUIC_OK);
	cross = pair_request_on(&p, p.conn, "GET", "/", NULL, 0);
	CHECK(cross >= 0);
	if (!PAIR_UNTIL(&p, haquic_conn_is_closed(p.conn) && h.closes[0], 60000))
		FAILF("no close of the first connection: goaways %d closes %d", h.goaways[0], h.closes[0]);
	pair_pump(&p, 10);
	if (!h.goaway_seq[0])
		FAILF("the first connection saw no GOAWAY before CONN_CLOSED (close code 0x%llx)",
		      (unsigned long long)h.close_code[0]);
	CHECK(h.goaways[0] == 1 && h.closes[0] == 1 && h.goaway_seq[0] < h.closed_seq[0]);
	if (h.goaway_id[0] != 20)
		FAILF("GOAWAY id %llu, expected 20", (unsigned long long)h.goaway_id[0]);
	if (h.close_code[0] != H3_NO_ERROR || !h.close_is_app[0])
		FAILF("first connection closed with 0x%llx (app %d), expected H3_NO_ERROR",
		      (unsigned long long)h.close_code[0], h.close_is_app[0]);
	if (!p.cs[cross].reset || p.cs[cross].reset_code != H3_REQUEST_REJECTED)
		FAILF("crossing request: reset %d code 0x%llx status %d fin %d", p.cs[cross].reset,
		      (unsigned long long)p.cs[cross].reset_code, p.cs[cross].status, p.cs[cross].fin);
	CHECK(p.cs[cross].status == 0 && p.cs[cross].body_len == 0);
	CHECK(PAIR_UNTIL(&p, (stats_of(p.sl, &s1), s1.conns_closed == 1), 60000));
	CHECK_LSTATS(s1, 1, 0, 1, 1, 5, 1, 1);
	stats_of(sl2, &s2);
	CHECK_LSTATS(s2, 1, 0, 1, 1, 6, 1, 1);
	CHECK_RESULT(haquic_engine_stats(p.srv, &e), HAQUIC_OK);
	CHECK(e.requests == 11 && e.requests_rejected == 2 && e.conns_closed == 2 && e.conns_open == 0);
	CHECK(h.errors == 0 && h.on_l1 == 5 && h.on_l2 == 6 && p.goaways == 2);

	/* the client's listener: both connections started and closed, and
	 * still none of the server-side counters */
	CHECK(PAIR_UNTIL(&p, (stats_of(p.cl, &c), c.conns_closed == 2), 60000));
	CHECK_LSTATS(c, 2, 0, 2, 2, 0, 0, 0);
	rc = 0;
cleanup:
	haquic_conn_unref(h.srv_conn);
	haquic_conn_unref(c2);
	haquic_listener_unref(sl2);
	pair_free(&p);
	return rc;
}

/* ---- early release of a listener's socket ----------------------------------------- */

static void release_srv_hook(struct pair *p, uint32_t w, const haquic_event *ev)
{
	struct hook_state *h = p->hook_arg;

	(void)w;
	switch (ev->kind) {
	case HAQUIC_EVENT_FD_REGISTER:
		if (ev->conn) {
			if (h->conn_fd >= 0)
				HOOK_FAIL(h, "a second connection socket");
			h->conn_fd = ev->fd;
			h->conn_gen = ev->fd_generation;
		}
		break;
	case HAQUIC_EVENT_FD_RELEASE:
		if (ev->fd == h->listener_fd && !ev->conn) {
			h->listener_released++;
			h->conn_open_at_release = h->srv_conn && !haquic_conn_is_closed(h->srv_conn);
			h->cli_closed_at_release = p->closed;
		} else if (ev->fd == h->conn_fd && ev->fd_generation == h->conn_gen) {
			h->conn_released++;
		} else {
			HOOK_FAIL(h, "FD_RELEASE of an unknown fd %d", ev->fd);
		}
		break;
	case HAQUIC_EVENT_REQUEST:
		if (!h->srv_conn)
			h->srv_conn = haquic_conn_ref(ev->conn);
		break;
	default:
		break;
	}
}

/* With per-connection sockets, a listener's graceful shutdown hands its
 * socket back (FD_RELEASE) while its connection, on a socket of its own, is
 * still open; that connection finishes the requests it had in flight
 * (GOAWAY, then a clean close), and its own socket is released last. */
static int hostapi_conn_sockets_shutdown_releases_listener_socket(void)
{
	struct pair p;
	struct hook_state h;
	haquic_stats st;
	uint32_t lgen = 0;
	size_t w = 0;
	int fd = -1, a, b, rc = 1;

	memset(&h, 0, sizeof(h));
	h.conn_fd = h.listener_fd = -1;
	CHECK(pair_init_mode(&p, 1, NULL, PAIR_SOCKETS | PAIR_CONN_SOCKETS) == 0);
	p.srv_hook = release_srv_hook;
	p.hook_arg = &h;
	CHECK_RESULT(haquic_listener_fd(p.sl, 0, &h.listener_fd, &lgen), HAQUIC_OK);
	CHECK(pair_connect(&p) == 0);
	CHECK(PAIR_UNTIL(&p, p.established, 5000));
	CHECK(PAIR_UNTIL(&p, p.fd_registered == 2, 5000));
	CHECK(h.conn_fd >= 0 && h.conn_fd != h.listener_fd);

	/* in flight: a download, and an upload the client has not finished */
	a = pair_request(&p, "GET", "/size/2000000", NULL, 0);
	CHECK(a >= 0);
	b = send_raw_request(&p, p.conn, echo_head, 4, false);
	CHECK(b >= 0);
	CHECK_RESULT(haquic_stream_send(p.cs[b].s, (const uint8_t *)"part1", 5, false, &w), HAQUIC_OK);
	CHECK(w == 5);
	CHECK(PAIR_UNTIL(&p, p.app_requests == 2, 5000));
	CHECK(h.srv_conn != NULL);

	CHECK_RESULT(haquic_listener_shutdown(p.sl), HAQUIC_OK);
	if (!PAIR_UNTIL(&p, h.listener_released == 1, 5000))
		FAILF("no FD_RELEASE for the listener socket: goaways %d, closed %d, srv closed %d, released %d",
		      p.goaways, p.closed, p.srv_closed, p.fd_released);
	CHECK(h.conn_open_at_release && !h.cli_closed_at_release);
	CHECK(h.conn_released == 0);
	/* the host confirmed it: only the connection's socket is left to poll */
	CHECK(PAIR_UNTIL(&p, p.fd_released == 1, 5000));
	CHECK(p.nfds == 1 && p.fds[0] == h.conn_fd);
	CHECK_RESULT(haquic_listener_fd(p.sl, 0, &fd, &lgen), HAQUIC_ERR_CLOSED);
	CHECK(!haquic_conn_is_closed(p.conn) && !haquic_conn_is_closed(h.srv_conn));

	/* the connection goes on through its own socket */
	CHECK(PAIR_UNTIL(&p, p.goaways == 1, 5000));
	CHECK(!p.closed);
	CHECK_RESULT(haquic_stream_send(p.cs[b].s, (const uint8_t *)"part2", 5, true, &w), HAQUIC_OK);
	CHECK(PAIR_UNTIL(&p, p.closed, 20000));
	CHECK(p.close_code == H3_NO_ERROR);
	CHECK(p.cs[a].fin && p.cs[a].status == 200 && p.cs[a].body_len == 2000000);
	CHECK(p.cs[b].fin && p.cs[b].body_len == 10 && memcmp(p.cs[b].body, "part1part2", 10) == 0);
	/* and, closed, gives its own socket back */
	CHECK(PAIR_UNTIL(&p, h.conn_released == 1 && p.fd_released == 2, 5000));
	CHECK(p.nfds == 0);
	HAQUIC_STATS_INIT(&st);
	CHECK_RESULT(haquic_engine_stats(p.srv, &st), HAQUIC_OK);
	CHECK(st.conn_sockets_opened == 1 && st.conn_socket_fallbacks == 0 && st.fds_released == 2);
	CHECK(st.requests == 2 && st.requests_rejected == 0);
	CHECK(h.errors == 0 && h.listener_released == 1);
	rc = 0;
cleanup:
	haquic_conn_unref(h.srv_conn);
	pair_free(&p);
	return rc;
}

/* haquic_listener_close (no GOAWAY) with per-connection sockets: the
 * listener's socket goes back at once, and its open connection keeps
 * serving new requests through its own socket. */
static int hostapi_conn_sockets_close_releases_listener_socket(void)
{
	struct pair p;
	struct hook_state h;
	uint32_t lgen = 0;
	int fd = -1, a, b, rc = 1;

	memset(&h, 0, sizeof(h));
	h.conn_fd = h.listener_fd = -1;
	CHECK(pair_init_mode(&p, 1, NULL, PAIR_SOCKETS | PAIR_CONN_SOCKETS) == 0);
	p.srv_hook = release_srv_hook;
	p.hook_arg = &h;
	CHECK_RESULT(haquic_listener_fd(p.sl, 0, &h.listener_fd, &lgen), HAQUIC_OK);
	CHECK(pair_connect(&p) == 0);
	CHECK(PAIR_UNTIL(&p, p.established, 5000));
	a = pair_request(&p, "GET", "/size/500000", NULL, 0);
	CHECK(a >= 0);
	CHECK(PAIR_UNTIL(&p, p.app_requests == 1, 5000));
	CHECK(h.conn_fd >= 0);

	CHECK_RESULT(haquic_listener_close(p.sl), HAQUIC_OK);
	CHECK(PAIR_UNTIL(&p, h.listener_released == 1 && p.fd_released == 1, 5000));
	CHECK(h.conn_open_at_release && !h.cli_closed_at_release);
	CHECK(p.nfds == 1 && p.fds[0] == h.conn_fd);
	CHECK_RESULT(haquic_listener_fd(p.sl, 0, &fd, &lgen), HAQUIC_ERR_CLOSED);
	CHECK(PAIR_UNTIL(&p, p.cs[a].fin, 10000));
	CHECK(p.cs[a].body_len == 500000);
	/* a request started after the release */
	b = pair_request(&p, "GET", "/size/300000", NULL, 0);
	CHECK(b >= 0 && PAIR_UNTIL(&p, p.cs[b].fin, 10000));
	CHECK(p.cs[b].status == 200 && p.cs[b].body_len == 300000);
	CHECK(p.goaways == 0 && !p.closed && !haquic_conn_is_closed(h.srv_conn));
	CHECK(h.conn_released == 0 && h.errors == 0);
	rc = 0;
cleanup:
	haquic_conn_unref(h.srv_conn);
	pair_free(&p);
	return rc;
}

const struct test_case hostapi_tests[] = {
	{ "hostapi_null_arguments", hostapi_null_arguments },
	{ "hostapi_userdata_round_trip", hostapi_userdata_round_trip },
	{ "hostapi_conn_listener", hostapi_conn_listener },
	{ "hostapi_local_address_host_fed", hostapi_local_address_host_fed },
	{ "hostapi_local_address_sockets", hostapi_local_address_sockets },
	{ "hostapi_local_address_conn_sockets", hostapi_local_address_conn_sockets },
	{ "hostapi_listener_stats_two_listeners", hostapi_listener_stats_two_listeners },
	{ "hostapi_conn_sockets_shutdown_releases_listener_socket", hostapi_conn_sockets_shutdown_releases_listener_socket },
	{ "hostapi_conn_sockets_close_releases_listener_socket", hostapi_conn_sockets_close_releases_listener_socket },
	{ NULL, NULL },
};
