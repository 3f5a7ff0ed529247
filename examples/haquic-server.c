/*
 * haquic-server: a small HTTP/3 server on the public haquic API, and the
 * reference for C programs that drive the engine with their own threads.
 *
 * Usage: haquic-server --cert FILE --key FILE [--listen ADDR:PORT] [--root DIR]
 *                      [--workers N] [--retry] [--idle-timeout MS]
 *                      [--max-seconds S] [--port-file FILE] [--qlog-dir DIR]
 *                      [--verbose]
 *
 *   GET/HEAD /PATH     a file under --root (default: the current directory);
 *                      a directory serves its index.html; ".." is refused
 *                      (403), symbolic links under the root are followed
 *   GET/HEAD /size/N   N bytes of a fixed pattern, byte i = i*31 + (i>>8)
 *   POST/PUT /ANY      the request body, echoed back as it arrives
 *
 * How it drives the engine:
 *
 * - The engine owns the UDP sockets (one per worker, SO_REUSEPORT). Each
 *   worker has one thread, which polls that worker's socket and an eventfd.
 *   The engine's wake callback only writes to the eventfd: it may run on any
 *   thread, even inside a haquic call, and must never call back into haquic.
 * - A worker belongs to the first thread that drives it, so everything that
 *   touches a worker, its connections or its streams (process, poll, stream
 *   calls) happens on that worker's thread. The main thread only starts and
 *   stops things and reads statistics, which any thread may do.
 * - Responses are produced lazily: at most one 64 KiB chunk per download is
 *   in memory, and an upload echo buffers at most 1 MiB before it stops
 *   reading. Unread data holds the peer's flow-control window, which is the
 *   backpressure; a short write resumes on HAQUIC_EVENT_STREAM_WRITABLE.
 *
 * SIGINT or SIGTERM (or --max-seconds) starts a graceful shutdown: GOAWAY,
 * in-flight requests finish, and the process exits 0 once no connection is
 * open or after 5 seconds.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "haquic.h"

#define CHUNK_SIZE        (64 * 1024)    /* one read of a file or pattern */
#define ECHO_BUF_MAX      (1024 * 1024)  /* an echo stops reading at this */
#define SIZE_MAX_BODY     (1ULL << 40)   /* the largest /size/N served */
#define SHUTDOWN_GRACE_MS 5000
#define REQ_BUCKETS       256

/* What produces a response body. */
enum body_kind {
	BODY_TEXT,     /* a short text, already in the buffer (error pages) */
	BODY_PATTERN,  /* /size/N */
	BODY_FILE,     /* a file under the root */
	BODY_ECHO,     /* the request body */
};

/*
 * One request in progress. It holds a reference on its stream for as long as
 * it is tracked: the stream pointers in events are borrowed, and the same
 * stream comes back with the same pointer while someone holds it.
 */
struct req {
	struct req *next;            /* in its worker's hash bucket */
	const haquic_stream *s;      /* our reference */
	enum body_kind kind;

	/* the response head, kept until it could be sent */
	int status;
	const char *content_type;
	uint64_t content_length;
	bool has_length;
	bool head_only;              /* HEAD: the head and no body */
	bool headers_sent;

	/* produced but not yet sent: buf[off, len) */
	unsigned char *buf;
	size_t cap, off, len;
	bool body_complete;          /* nothing more to produce after buf */
	bool fin_sent;

	/* the body source */
	uint64_t pos;                /* pattern/file offset of the next chunk */
	uint64_t remaining;          /* pattern/file bytes not yet produced */
	int fd;                      /* BODY_FILE, else -1 */

	/* the request side */
	uint64_t received;           /* echo: request body bytes read */
	bool in_done;                /* request body read to the end, or refused */
	bool trailers_seen;          /* a trailer section ended the request body */
};

struct server;

struct worker {
	struct server *srv;
	uint32_t id;
	int efd;                     /* the wake callback writes here */
	pthread_t thread;
	bool started;
	bool poll_error_shown;       /* an unexpected poll error is logged once */
	struct req *reqs[REQ_BUCKETS];
};

struct server {
	const haquic_engine *engine;
	const haquic_listener *listener;
	const char *root;
	bool verbose;
	uint32_t nworkers;
	struct worker *workers;
	atomic_bool stop;
};

/* ---- small helpers ------------------------------------------------------- */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static bool bytes_eq(const uint8_t *p, size_t n, const char *s)
{
	return n == strlen(s) && memcmp(p, s, n) == 0;
}

static bool header_is(const haquic_header *h, const char *name)
{
	return bytes_eq(h->name, h->name_len, name);
}

/* The same pattern as c-tests/pair.c, so both sides can check any offset. */
static void pattern_fill(unsigned char *buf, size_t len, uint64_t offset)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)((offset + i) * 31 + ((offset + i) >> 8));
}

/* Parses a decimal number made only of digits; false on anything else. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 19)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decodes the path part of :path (no query) into out, NUL-terminated.
 * Percent escapes are decoded first so that "%2e%2e" cannot hide a "..".
 * Returns 0, or the HTTP status to answer with.
 */
static int decode_path(const uint8_t *raw, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	if (n == 0 || raw[0] != '/')
		return 400;
	for (size_t i = 0; i < n && raw[i] != '?' && raw[i] != '#'; i++) {
		int c = raw[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= n || (hi = hexval((char)raw[i + 1])) < 0 || (lo = hexval((char)raw[i + 2])) < 0)
				return 400;
			c = hi * 16 + lo;
			i += 2;
		}
		if (c == 0)
			return 400;
		if (o + 1 >= cap)
			return 414;
		out[o++] = (char)c;
	}
	out[o] = 0;
	/* any ".." segment could climb out of the root: refuse it outright */
	for (const char *seg = out; seg; seg = strchr(seg + 1, '/')) {
		const char *p = seg + 1;

		if (p[0] == '.' && p[1] == '.' && (p[2] == '/' || p[2] == 0))
			return 403;
	}
	return 0;
}

static const char *content_type_for(const char *path)
{
	static const struct { const char *ext, *type; } types[] = {
		{ "html", "text/html; charset=utf-8" }, { "htm", "text/html; charset=utf-8" },
		{ "txt", "text/plain; charset=utf-8" }, { "css", "text/css" },
		{ "js", "text/javascript" }, { "json", "application/json" },
		{ "xml", "application/xml" }, { "svg", "image/svg+xml" },
		{ "png", "image/png" }, { "jpg", "image/jpeg" }, { "jpeg", "image/jpeg" },
		{ "gif", "image/gif" }, { "webp", "image/webp" }, { "ico", "image/x-icon" },
		{ "wasm", "application/wasm" }, { "pdf", "application/pdf" },
		{ "gz", "application/gzip" }, { "zip", "application/zip" },
	};
	const char *slash = strrchr(path, '/');
	const char *dot = strrchr(path, '.');

	if (dot && (!slash || dot > slash))
		for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
			if (strcasecmp(dot + 1, types[i].ext) == 0)
				return types[i].type;
	return "application/octet-stream";
}

/* ---- requests ------------------------------------------------------------- */

static size_t req_bucket(const haquic_stream *s)
{
	uintptr_t p = (uintptr_t)s;

	return (size_t)((p >> 4) ^ (p >> 12)) % REQ_BUCKETS;
}

static struct req *req_find(struct worker *w, const haquic_stream *s)
{
	for (struct req *r = w->reqs[req_bucket(s)]; r; r = r->next)
		if (r->s == s)
			return r;
	return NULL;
}

static struct req *req_new(struct worker *w, const haquic_stream *s)
{
	struct req *r = calloc(1, sizeof(*r));
	size_t b = req_bucket(s);

	if (!r)
		return NULL;
	r->s = haquic_stream_ref(s);
	r->fd = -1;
	r->next = w->reqs[b];
	w->reqs[b] = r;
	return r;
}

/* Forgets a request: unlinks it, closes its file and drops its stream. */
static void req_free(struct worker *w, struct req *r)
{
	for (struct req **pp = &w->reqs[req_bucket(r->s)]; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	if (r->fd >= 0)
		close(r->fd);
	free(r->buf);
	haquic_stream_unref(r->s);
	free(r);
}

/*
 * Gives up on a request: resets our side and, if the request body is still
 * coming, asks the peer to stop. Errors are ignored: the stream may already
 * be gone, which is what we want anyway.
 */
static void req_abort(struct worker *w, struct req *r, uint64_t code)
{
	if (!r->fin_sent)
		haquic_stream_reset(r->s, code);
	if (!r->in_done)
		haquic_stream_stop_sending(r->s, code);
	req_free(w, r);
}

/* Makes room for at least `want` bytes after buf[len]; false when out of memory. */
static bool req_reserve(struct req *r, size_t want)
{
	unsigned char *p;
	size_t cap;

	if (r->off > 0 && r->off == r->len)
		r->off = r->len = 0;
	if (r->cap - r->len >= want)
		return true;
	if (r->off > 0) {
		memmove(r->buf, r->buf + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
		if (r->cap - r->len >= want)
			return true;
	}
	cap = r->cap ? r->cap : want;
	while (cap - r->len < want)
		cap *= 2;
	if (!(p = realloc(r->buf, cap)))
		return false;
	r->buf = p;
	r->cap = cap;
	return true;
}

/* An answer with a short text body, such as an error page. */
static int req_text(struct req *r, int status, const char *text)
{
	size_t n = strlen(text);

	r->kind = BODY_TEXT;
	r->status = status;
	r->content_type = "text/plain; charset=utf-8";
	r->content_length = n;
	r->has_length = true;
	r->body_complete = true;
	if (r->head_only || n == 0)
		return 0;
	if (!req_reserve(r, n))
		return -1;
	memcpy(r->buf, text, n);
	r->len = n;
	return 0;
}

static int req_error(struct req *r, int status)
{
	switch (status) {
	case 400: return req_text(r, status, "400 bad request\n");
	case 403: return req_text(r, status, "403 forbidden\n");
	case 404: return req_text(r, status, "404 not found\n");
	case 405: return req_text(r, status, "405 method not allowed\n");
	case 414: return req_text(r, status, "414 URI too long\n");
	default:  return req_text(r, 500, "500 internal server error\n");
	}
}

/* Opens a file under the root for GET/HEAD; sets up the response. */
static int req_open_file(struct server *srv, struct req *r, const char *path)
{
	char full[PATH_MAX];
	struct stat st;
	int fd, err;

	if ((size_t)snprintf(full, sizeof(full), "%s%s", srv->root, path) >= sizeof(full))
		return req_error(r, 414);
	/* O_NONBLOCK: a FIFO must not block the worker (it is refused below) */
	fd = open(full, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		/* a directory serves its index.html, and nothing else */
		int dfd = fd;

		fd = openat(dfd, "index.html", O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		err = errno;
		close(dfd);
		errno = err;
		strncat(full, "/index.html", sizeof(full) - strlen(full) - 1);
	}
	if (fd < 0)
		return req_error(r, errno == EACCES ? 403 : (errno == ENOENT || errno == ENOTDIR) ? 404 : 500);
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return req_error(r, 404);
	}
	r->kind = BODY_FILE;
	r->status = 200;
	r->content_type = content_type_for(full);
	r->content_length = (uint64_t)st.st_size;
	r->has_length = true;
	if (r->head_only || st.st_size == 0) {
		close(fd);
		r->body_complete = true;
		return 0;
	}
	r->fd = fd;
	r->remaining = (uint64_t)st.st_size;
	return 0;
}

/*
 * Produces more body into the buffer: the next chunk of a pattern or file
 * once the previous one is sent, or as much of the request body as fits for
 * an echo. Sets *progress when something was produced. Returns 0, or the
 * HTTP/3 error code to abort the request with.
 */
static uint64_t req_produce(struct req *r, bool *progress)
{
	if (r->body_complete)
		return 0;
	if (r->kind == BODY_PATTERN || r->kind == BODY_FILE) {
		size_t n = r->remaining < CHUNK_SIZE ? (size_t)r->remaining : CHUNK_SIZE;

		if (r->off < r->len)
			return 0;          /* one chunk at a time */
		if (!req_reserve(r, n))
			return H3_INTERNAL_ERROR;
		if (r->kind == BODY_PATTERN) {
			pattern_fill(r->buf + r->len, n, r->pos);
		} else {
			ssize_t got = pread(r->fd, r->buf + r->len, n, (off_t)r->pos);

			/* a file that shrank under us cannot keep its content-length */
			if (got <= 0)
				return H3_INTERNAL_ERROR;
			n = (size_t)got;
		}
		r->len += n;
		r->pos += n;
		r->remaining -= n;
		if (r->remaining == 0)
			r->body_complete = true;
		*progress = true;
		return 0;
	}
	if (r->kind != BODY_ECHO)
		return 0;
	/* echo: read while the buffer has room; a full buffer is backpressure */
	while (!r->in_done) {
		size_t buffered = r->len - r->off, n = 0;
		bool fin = false;
		haquic_result res;

		if (buffered >= ECHO_BUF_MAX)
			break;
		/* room for a chunk, never past ECHO_BUF_MAX in all */
		if (!req_reserve(r, ECHO_BUF_MAX - buffered < CHUNK_SIZE ? ECHO_BUF_MAX - buffered : CHUNK_SIZE))
			return H3_INTERNAL_ERROR;
		res = haquic_stream_recv(r->s, r->buf + r->len, r->cap - r->len, &n, &fin);
		if (res == HAQUIC_ERR_WOULD_BLOCK) {
			/* after a trailer section, nothing more will come */
			if (r->trailers_seen)
				r->in_done = true;
			break;
		}
		if (res != HAQUIC_OK)
			return res == HAQUIC_ERR_PROTOCOL ? H3_MESSAGE_ERROR : H3_INTERNAL_ERROR;
		r->len += n;
		r->received += n;
		if (n > 0)
			*progress = true;
		if (fin)
			r->in_done = true;
		else if (n == 0)
			break;
	}
	if (r->in_done) {
		/*
		 * The echo promised the request's content-length: a shorter body
		 * makes the request malformed (RFC 9114, 4.1.2), and this echo
		 * cannot end well. The engine does not always catch a short body
		 * itself when the host reads the FIN first, so check here too.
		 */
		if (r->has_length && r->received != r->content_length)
			return H3_MESSAGE_ERROR;
		r->body_complete = true;
		*progress = true;
	}
	return 0;
}

enum flush_result { FLUSH_DONE, FLUSH_BLOCKED, FLUSH_IDLE, FLUSH_ERROR };

/* Sends the head, then what is buffered; FIN once the body is complete. */
static enum flush_result req_flush(struct req *r, bool *progress)
{
	haquic_result res;

	if (!r->headers_sent) {
		char status[8], length[24];
		haquic_header h[4];
		size_t n = 0;
		/* FIN with the head when there will be no body at all */
		bool fin = r->body_complete && r->off == r->len;

		snprintf(status, sizeof(status), "%d", r->status);
		snprintf(length, sizeof(length), "%" PRIu64, r->content_length);
		h[n++] = (haquic_header){ (const uint8_t *)":status", 7, (const uint8_t *)status, strlen(status) };
		h[n++] = (haquic_header){ (const uint8_t *)"server", 6, (const uint8_t *)"haquic-server", 13 };
		if (r->content_type)
			h[n++] = (haquic_header){ (const uint8_t *)"content-type", 12,
			                          (const uint8_t *)r->content_type, strlen(r->content_type) };
		if (r->has_length)
			h[n++] = (haquic_header){ (const uint8_t *)"content-length", 14,
			                          (const uint8_t *)length, strlen(length) };
		res = haquic_stream_send_headers(r->s, h, n, fin);
		if (res == HAQUIC_ERR_WOULD_BLOCK)
			return FLUSH_BLOCKED;
		if (res != HAQUIC_OK)
			return FLUSH_ERROR;
		r->headers_sent = true;
		*progress = true;
		if (fin) {
			r->fin_sent = true;
			return FLUSH_DONE;
		}
	}
	while (r->off < r->len || (r->body_complete && !r->fin_sent)) {
		size_t n = r->len - r->off, w = 0;

		res = haquic_stream_send(r->s, n ? r->buf + r->off : NULL, n, r->body_complete, &w);
		if (res == HAQUIC_ERR_WOULD_BLOCK)
			return FLUSH_BLOCKED;
		if (res != HAQUIC_OK)
			return FLUSH_ERROR;
		r->off += w;
		if (w > 0)
			*progress = true;
		if (w < n)
			return FLUSH_BLOCKED;   /* the rest goes on STREAM_WRITABLE */
		if (r->body_complete) {
			r->fin_sent = true;
			*progress = true;
		}
		/* all of it went: produce more before sending again */
		if (!r->body_complete)
			break;
	}
	return r->fin_sent ? FLUSH_DONE : FLUSH_IDLE;
}

/*
 * Moves a request forward as far as it can go now: produce, send, repeat.
 * It stops when sending is blocked (STREAM_WRITABLE resumes it), when there
 * is nothing to read (STREAM_READABLE resumes it), or when it is done. Each
 * round that does not stop uses up send capacity (which the engine bounds by
 * flow control and the congestion window) or request bytes, so it ends.
 */
static void req_pump(struct worker *w, struct req *r)
{
	for (;;) {
		bool progress = false;
		enum flush_result fr;
		uint64_t err;

		if ((err = req_produce(r, &progress)) != 0) {
			req_abort(w, r, err);
			return;
		}
		fr = req_flush(r, &progress);
		if (fr == FLUSH_ERROR) {
			/* closed under us (STOP_SENDING, reset, connection gone) */
			req_abort(w, r, H3_INTERNAL_ERROR);
			return;
		}
		if (fr == FLUSH_DONE) {
			/* our side is finished; a request body we never read is refused */
			if (!r->in_done)
				haquic_stream_stop_sending(r->s, H3_NO_ERROR);
			req_free(w, r);
			return;
		}
		if (fr == FLUSH_BLOCKED || !progress)
			return;
	}
}

/* HAQUIC_EVENT_REQUEST: decides what to answer and starts answering. */
static void on_request(struct worker *w, const haquic_event *ev)
{
	struct server *srv = w->srv;
	const uint8_t *method = NULL, *rawpath = NULL;
	size_t method_len = 0, rawpath_len = 0;
	uint64_t req_length = 0;
	bool has_req_length = false;
	char path[PATH_MAX];
	struct req *r;
	int status = 0, rc;

	if (!(r = req_new(w, ev->stream))) {
		haquic_stream_reset(ev->stream, H3_INTERNAL_ERROR);
		haquic_stream_stop_sending(ev->stream, H3_INTERNAL_ERROR);
		return;
	}
	r->in_done = ev->fin;
	for (size_t i = 0; i < ev->headers_len; i++) {
		const haquic_header *h = &ev->headers[i];

		if (header_is(h, ":method")) {
			method = h->value;
			method_len = h->value_len;
		} else if (header_is(h, ":path")) {
			rawpath = h->value;
			rawpath_len = h->value_len;
		} else if (header_is(h, "content-length")) {
			has_req_length = parse_u64((const char *)h->value, h->value_len, &req_length);
		}
	}
	if (srv->verbose)
		fprintf(stderr, "worker %u: %.*s %.*s\n", w->id, (int)method_len, method ? (const char *)method : "",
		        (int)rawpath_len, rawpath ? (const char *)rawpath : "");
	r->head_only = method && bytes_eq(method, method_len, "HEAD");
	if (method && (bytes_eq(method, method_len, "POST") || bytes_eq(method, method_len, "PUT"))) {
		r->kind = BODY_ECHO;
		r->status = 200;
		r->content_type = "application/octet-stream";
		/* the echo is as long as the request said it would be */
		r->content_length = req_length;
		r->has_length = has_req_length;
		r->body_complete = r->in_done;
		rc = 0;
	} else if (!method || (!r->head_only && !bytes_eq(method, method_len, "GET"))) {
		rc = req_error(r, 405);
	} else if (!rawpath || (status = decode_path(rawpath, rawpath_len, path, sizeof(path))) != 0) {
		rc = req_error(r, rawpath ? status : 400);
	} else if (strncmp(path, "/size/", 6) == 0) {
		uint64_t n;

		if (!parse_u64(path + 6, strlen(path + 6), &n) || n > SIZE_MAX_BODY) {
			rc = req_error(r, 400);
		} else {
			r->kind = BODY_PATTERN;
			r->status = 200;
			r->content_type = "application/octet-stream";
			r->content_length = n;
			r->has_length = true;
			r->remaining = r->head_only ? 0 : n;
			r->body_complete = r->remaining == 0;
			rc = 0;
		}
	} else {
		rc = req_open_file(srv, r, path);
	}
	if (rc < 0) {
		req_abort(w, r, H3_INTERNAL_ERROR);
		return;
	}
	/* only an echo reads the request body: refuse any other one now */
	if (r->kind != BODY_ECHO && !r->in_done) {
		haquic_stream_stop_sending(r->s, H3_NO_ERROR);
		r->in_done = true;
	}
	req_pump(w, r);
}

/* Forgets every request of a connection that closed. */
static void release_conn(struct worker *w, const haquic_conn *conn)
{
	for (size_t b = 0; b < REQ_BUCKETS; b++) {
		struct req *r = w->reqs[b];

		while (r) {
			struct req *next = r->next;

			if (haquic_stream_conn(r->s) == conn)
				req_free(w, r);
			r = next;
		}
	}
}

/* Drains the worker's events; returns how many there were. */
static int handle_events(struct worker *w)
{
	haquic_event ev;
	haquic_result res;
	struct req *r;
	int n = 0;

	HAQUIC_EVENT_INIT(&ev);
	while ((res = haquic_worker_poll(w->srv->engine, w->id, &ev)) == HAQUIC_OK) {
		n++;
		switch (ev.kind) {
		case HAQUIC_EVENT_REQUEST:
			on_request(w, &ev);
			break;
		case HAQUIC_EVENT_STREAM_READABLE:
		case HAQUIC_EVENT_STREAM_FINISHED:
		case HAQUIC_EVENT_STREAM_WRITABLE:
			if ((r = req_find(w, ev.stream)))
				req_pump(w, r);
			break;
		case HAQUIC_EVENT_TRAILERS:
			if ((r = req_find(w, ev.stream))) {
				r->trailers_seen = true;
				req_pump(w, r);
			}
			break;
		case HAQUIC_EVENT_STREAM_RESET:
			if (w->srv->verbose)
				fprintf(stderr, "worker %u: stream %" PRIu64 " reset (0x%" PRIx64 ")\n", w->id,
				        haquic_stream_id(ev.stream), ev.code);
			/* the request was cancelled: so is its response */
			if ((r = req_find(w, ev.stream))) {
				r->in_done = true;
				req_abort(w, r, H3_REQUEST_CANCELLED);
			}
			break;
		case HAQUIC_EVENT_STOP_SENDING:
			if (w->srv->verbose)
				fprintf(stderr, "worker %u: stream %" PRIu64 " stopped (0x%" PRIx64 ")\n", w->id,
				        haquic_stream_id(ev.stream), ev.code);
			/* the engine has already stopped our side; stop reading too */
			if ((r = req_find(w, ev.stream))) {
				r->fin_sent = true;
				req_abort(w, r, H3_REQUEST_CANCELLED);
			}
			break;
		case HAQUIC_EVENT_CONN_CLOSED:
			if (w->srv->verbose)
				fprintf(stderr, "worker %u: connection closed (%s 0x%" PRIx64 " %.*s)\n", w->id,
				        ev.is_app_error ? "app" : "transport", ev.code, (int)ev.reason_len,
				        ev.reason_len ? (const char *)ev.reason : "");
			release_conn(w, ev.conn);
			break;
		default:
			/* FD_REGISTER/FD_RELEASE concern per-connection sockets, which
			 * this server does not ask for; GOAWAY is for clients */
			break;
		}
	}
	if (res != HAQUIC_ERR_WOULD_BLOCK && !w->poll_error_shown) {
		w->poll_error_shown = true;
		fprintf(stderr, "haquic-server: worker %u: poll: %s\n", w->id, haquic_strerror(res));
	}
	return n;
}

/* ---- threads ----------------------------------------------------------------- */

/*
 * The engine's wake callback: "worker N has work". It may run on any thread,
 * inside a haquic call, so it only pokes that worker's eventfd.
 */
/* The worker this thread drives, or -1. */
static _Thread_local int64_t current_worker = -1;

static void wake_worker(void *userdata, uint32_t worker)
{
	struct server *srv = userdata;

	/* On the worker's own thread the wake-up comes from a handler, and the
	 * loop processes again right after the handlers: no syscall needed. */
	if ((int64_t)worker == current_worker)
		return;
	if (worker < srv->nworkers)
		eventfd_write(srv->workers[worker].efd, 1);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct server *srv = w->srv;

	current_worker = w->id;
	while (!atomic_load(&srv->stop)) {
		struct pollfd pfd[2] = { { .fd = w->efd, .events = POLLIN } };
		int32_t fd = -1;
		uint32_t generation = 0;
		nfds_t nfds = 1;
		int64_t t;
		eventfd_t junk;

		/* asked each time: the engine owns the socket and may replace it */
		if (haquic_listener_fd(srv->listener, w->id, &fd, &generation) == HAQUIC_OK && fd >= 0) {
			pfd[1] = (struct pollfd){ .fd = fd, .events = POLLIN };
			nfds = 2;
		}
		/* the first call from this thread makes it the worker's owner */
		t = haquic_worker_next_timeout(srv->engine, w->id);
		if (poll(pfd, nfds, t < 0 ? -1 : t > INT_MAX ? INT_MAX : (int)t) < 0 && errno != EINTR) {
			perror("haquic-server: poll");
			break;
		}
		/* clear wake-ups before processing: a later one is then never lost */
		if (pfd[0].revents & POLLIN)
			eventfd_read(w->efd, &junk);
		haquic_worker_process(srv->engine, w->id);
		/* what the handlers send is only queued: process again to flush it */
		for (int round = 0; handle_events(w) > 0; round++) {
			haquic_worker_process(srv->engine, w->id);
			if (round == 16) {
				/* still busy: go round the loop (timers, socket) and come back */
				eventfd_write(w->efd, 1);
				break;
			}
		}
	}
	/* the stream references are this thread's to drop */
	for (size_t b = 0; b < REQ_BUCKETS; b++)
		while (w->reqs[b])
			req_free(w, w->reqs[b]);
	return NULL;
}

/* ---- main ---------------------------------------------------------------------- */

static int parse_listen(const char *s, struct sockaddr_storage *ss, size_t *len)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(s, ':');
	uint64_t port;
	size_t hl;

	if (!colon || !parse_u64(colon + 1, strlen(colon + 1), &port) || port > 65535)
		return -1;
	hl = (size_t)(colon - s);
	if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
		s++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host))
		return -1;
	memcpy(host, s, hl);
	host[hl] = 0;
	memset(ss, 0, sizeof(*ss));
	if (strchr(host, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			return -1;
		*len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -1;
		*len = sizeof(*a);
	}
	return 0;
}

/* Formats a bound address as "127.0.0.1:PORT" or "[::1]:PORT"; returns its port. */
static int format_addr(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
		return ntohs(a->sin6_port);
	}
	const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

	inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
	snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
	return ntohs(a->sin_port);
}

/* Writes the port through a temporary file and a rename, so a reader never sees half of it. */
static int write_port_file(const char *path, int port)
{
	char tmp[PATH_MAX];
	FILE *f;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -1;
	if (!(f = fopen(tmp, "w")))
		return -1;
	fprintf(f, "%d\n", port);
	if (fclose(f) != 0 || rename(tmp, path) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
	        "usage: %s --cert FILE --key FILE [--listen ADDR:PORT] [--root DIR] [--workers N]\n"
	        "          [--retry] [--idle-timeout MS] [--max-seconds S] [--port-file FILE]\n"
	        "          [--qlog-dir DIR] [--verbose]\n",
	        argv0);
}

/*
 * Waits for SIGINT/SIGTERM (blocked in every thread, so they queue here)
 * until `deadline_ms` (0: none). Returns the signal, or 0 at the deadline.
 */
static int wait_signal(const sigset_t *set, long long deadline_ms)
{
	for (;;) {
		long long left = deadline_ms ? deadline_ms - now_ms() : 1000;
		struct timespec ts;
		int sig;

		if (left <= 0)
			return 0;
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000;
		sig = sigtimedwait(set, NULL, &ts);
		if (sig > 0)
			return sig;
	}
}

int main(int argc, char **argv)
{
	const char *cert = NULL, *key = NULL, *listen_on = "127.0.0.1:8443", *port_file = NULL;
	const char *qlog_dir = NULL;
	struct server srv = { .root = "." };
	const haquic_config *cfg = NULL;
	haquic_engine_options opts;
	haquic_event ev;
	haquic_stats stats;
	struct sockaddr_storage addr;
	size_t addr_len = 0;
	uint64_t workers = 1, idle_ms = 0, max_seconds = 0;
	bool retry = false;
	char shown[INET6_ADDRSTRLEN + 16];
	char root[PATH_MAX];
	sigset_t sigs;
	long long deadline = 0;
	haquic_result r;
	int rc = 1, sig, port;

	atomic_init(&srv.stop, false);
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		bool flag = strcmp(opt, "--retry") == 0 || strcmp(opt, "--verbose") == 0 || strcmp(opt, "-v") == 0;

		if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
			usage(argv[0]);
			return 0;
		}
		if (!flag && !val) {
			fprintf(stderr, "haquic-server: %s needs a value\n", opt);
			goto cleanup;
		}
		if (!flag)
			i++;
		if (strcmp(opt, "--cert") == 0)
			cert = val;
		else if (strcmp(opt, "--key") == 0)
			key = val;
		else if (strcmp(opt, "--listen") == 0)
			listen_on = val;
		else if (strcmp(opt, "--root") == 0)
			srv.root = val;
		else if (strcmp(opt, "--port-file") == 0)
			port_file = val;
		else if (strcmp(opt, "--qlog-dir") == 0)
			qlog_dir = val;
		else if (strcmp(opt, "--retry") == 0)
			retry = true;
		else if (strcmp(opt, "--verbose") == 0 || strcmp(opt, "-v") == 0)
			srv.verbose = true;
		else if (strcmp(opt, "--workers") == 0) {
			if (!parse_u64(val, strlen(val), &workers) || workers < 1 || workers > MAX_WORKERS) {
				fprintf(stderr, "haquic-server: --workers: '%s' is not in [1, %d]\n", val, MAX_WORKERS);
				goto cleanup;
			}
		} else if (strcmp(opt, "--idle-timeout") == 0) {
			if (!parse_u64(val, strlen(val), &idle_ms)) {
				fprintf(stderr, "haquic-server: --idle-timeout: '%s' is not a number\n", val);
				goto cleanup;
			}
		} else if (strcmp(opt, "--max-seconds") == 0) {
			if (!parse_u64(val, strlen(val), &max_seconds) || max_seconds > 1000000) {
				fprintf(stderr, "haquic-server: --max-seconds: '%s' is not a number of seconds\n", val);
				goto cleanup;
			}
		} else {
			fprintf(stderr, "haquic-server: unknown option %s\n", opt);
			usage(argv[0]);
			goto cleanup;
		}
	}
	if (!cert || !key) {
		usage(argv[0]);
		goto cleanup;
	}
	/* a library built from another header may refuse our versioned structs */
	if (haquic_version() >> 16 != HAQUIC_VERSION_MAJOR || HAQUIC_EVENT_INIT(&ev) != HAQUIC_OK ||
	    HAQUIC_STATS_INIT(&stats) != HAQUIC_OK) {
		fprintf(stderr, "haquic-server: libhaquic %s does not accept the structs of the haquic.h (%d.%d.%d) "
		        "this program was built with: rebuild it\n", haquic_version_string(), HAQUIC_VERSION_MAJOR,
		        HAQUIC_VERSION_MINOR, HAQUIC_VERSION_PATCH);
		goto cleanup;
	}
	if (parse_listen(listen_on, &addr, &addr_len) != 0) {
		fprintf(stderr, "haquic-server: --listen: '%s' is not ADDR:PORT\n", listen_on);
		goto cleanup;
	}
	/* the root without a trailing slash: request paths bring their own */
	if (!realpath(srv.root, root)) {
		fprintf(stderr, "haquic-server: --root %s: %s\n", srv.root, strerror(errno));
		goto cleanup;
	}
	if (strcmp(root, "/") == 0)
		root[0] = 0;
	srv.root = root;

	/* the configuration: identity, limits */
	if (!(cfg = haquic_config_new()))
		goto cleanup;
	if ((r = haquic_config_load_cert_chain_and_key(cfg, cert, key)) != HAQUIC_OK) {
		fprintf(stderr, "haquic-server: certificate: %s (%s)\n", haquic_config_last_error(cfg), haquic_strerror(r));
		goto cleanup;
	}
	if (idle_ms && (r = haquic_config_set_idle_timeout(cfg, idle_ms)) != HAQUIC_OK) {
		fprintf(stderr, "haquic-server: --idle-timeout: %s\n", haquic_config_last_error(cfg));
		goto cleanup;
	}

	/* one eventfd per worker, created before the engine can wake anyone */
	srv.nworkers = (uint32_t)workers;
	if (!(srv.workers = calloc(srv.nworkers, sizeof(*srv.workers))))
		goto cleanup;
	for (uint32_t i = 0; i < srv.nworkers; i++) {
		srv.workers[i].srv = &srv;
		srv.workers[i].id = i;
		srv.workers[i].efd = -1;
	}
	for (uint32_t i = 0; i < srv.nworkers; i++)
		if ((srv.workers[i].efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
			perror("haquic-server: eventfd");
			goto cleanup;
		}

	if ((r = HAQUIC_ENGINE_OPTIONS_INIT(&opts)) != HAQUIC_OK)
		goto cleanup;
	opts.workers = srv.nworkers;
	opts.force_retry = retry;
	opts.qlog_dir = qlog_dir;
	if ((r = haquic_engine_new(cfg, &opts, wake_worker, &srv, &srv.engine)) != HAQUIC_OK) {
		fprintf(stderr, "haquic-server: engine: %s (%s)\n", haquic_config_last_error(cfg), haquic_strerror(r));
		goto cleanup;
	}
	/* flags 0: the engine binds and reads one socket per worker */
	if ((r = haquic_listener_new(srv.engine, NULL, &addr, addr_len, 0, &srv.listener)) != HAQUIC_OK) {
		fprintf(stderr, "haquic-server: listen on %s: %s\n", listen_on, haquic_strerror(r));
		goto cleanup;
	}
	if ((r = haquic_listener_address(srv.listener, &addr, sizeof(addr), &addr_len)) != HAQUIC_OK) {
		fprintf(stderr, "haquic-server: listener address: %s\n", haquic_strerror(r));
		goto cleanup;
	}
	port = format_addr(&addr, shown, sizeof(shown));

	/* signals are taken by sigtimedwait() below, never by a worker thread */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	if (pthread_sigmask(SIG_BLOCK, &sigs, NULL) != 0)
		goto cleanup;
	for (uint32_t i = 0; i < srv.nworkers; i++) {
		if (pthread_create(&srv.workers[i].thread, NULL, worker_main, &srv.workers[i]) != 0) {
			fprintf(stderr, "haquic-server: cannot start worker %u\n", i);
			goto cleanup;
		}
		srv.workers[i].started = true;
	}

	/* announced once the workers run, so a client can connect right away */
	if (port_file && write_port_file(port_file, port) != 0) {
		fprintf(stderr, "haquic-server: --port-file %s: %s\n", port_file, strerror(errno));
		goto cleanup;
	}
	printf("listening on %s\n", shown);
	fflush(stdout);

	if (max_seconds)
		deadline = now_ms() + (long long)max_seconds * 1000;
	sig = wait_signal(&sigs, deadline);
	fprintf(stderr, "haquic-server: %s, shutting down\n", sig ? strsignal(sig) : "--max-seconds reached");

	/* graceful: GOAWAY, in-flight requests finish; the workers keep running */
	haquic_engine_shutdown(srv.engine);
	deadline = now_ms() + SHUTDOWN_GRACE_MS;
	while (now_ms() < deadline) {
		struct timespec ts = { 0, 20 * 1000000 };

		HAQUIC_STATS_INIT(&stats);
		if (haquic_engine_stats(srv.engine, &stats) == HAQUIC_OK && stats.conns_open == 0)
			break;
		/* a second signal means: do not wait */
		if (sigtimedwait(&sigs, NULL, &ts) > 0)
			break;
	}
	rc = 0;

cleanup:
	/* stop and join the workers before anything they use goes away */
	atomic_store(&srv.stop, true);
	for (uint32_t i = 0; srv.workers && i < srv.nworkers; i++)
		if (srv.workers[i].started)
			eventfd_write(srv.workers[i].efd, 1);
	for (uint32_t i = 0; srv.workers && i < srv.nworkers; i++)
		if (srv.workers[i].started)
			pthread_join(srv.workers[i].thread, NULL);
	if (srv.engine && rc == 0) {
		HAQUIC_STATS_INIT(&stats);
		if (haquic_engine_stats(srv.engine, &stats) == HAQUIC_OK)
			fprintf(stderr, "haquic-server: %" PRIu64 " connections, %" PRIu64 " requests, %" PRIu64
			        " retries, %" PRIu64 " still open at exit\n", stats.conns_accepted, stats.requests,
			        stats.retries_sent, stats.conns_open);
		if (srv.verbose && haquic_engine_stats(srv.engine, &stats) == HAQUIC_OK)
			fprintf(stderr, "haquic-server: packets in %" PRIu64 " out %" PRIu64 ", lost %" PRIu64
			        ", dropped: queue full %" PRIu64 ", unknown cid %" PRIu64 ", invalid %" PRIu64
			        ", not accepting %" PRIu64 "; send errors %" PRIu64 ", stateless resets %" PRIu64 "\n",
			        stats.packets_in, stats.packets_out, stats.lost, stats.drop_queue_full,
			        stats.drop_unknown_cid, stats.drop_invalid, stats.drop_not_accepting,
			        stats.send_errors, stats.resets_sent);
	}
	haquic_listener_unref(srv.listener);
	haquic_engine_unref(srv.engine);
	haquic_config_unref(cfg);
	/* the engine may wake a worker until it is freed: close the eventfds last */
	for (uint32_t i = 0; srv.workers && i < srv.nworkers; i++)
		if (srv.workers[i].efd >= 0)
			close(srv.workers[i].efd);
	free(srv.workers);
	if (port_file && rc == 0)
		unlink(port_file);
	return rc;
}
