#include <arpa/inet.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "pair.h"

void pattern_fill(unsigned char *buf, size_t len, uint64_t offset)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)((offset + i) * 31 + ((offset + i) >> 8));
}

static void addr_init(struct sockaddr_in *a, const char *ip, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons(port);
	inet_pton(AF_INET, ip, &a->sin_addr);
}

int pair_init(struct pair *p, uint32_t srv_workers, const haquic_engine_options *srv_opts)
{
	return pair_init_mode(p, srv_workers, srv_opts, 0);
}

int pair_init_mode(struct pair *p, uint32_t srv_workers, const haquic_engine_options *srv_opts, int mode)
{
	haquic_engine_options o;
	int sockets = mode != 0;
	uint32_t sflags = sockets ? (mode & PAIR_CONN_SOCKETS ? HAQUIC_LISTENER_CONN_SOCKETS : 0) : HAQUIC_LISTENER_HOST_FED;
	uint32_t cflags = (mode & PAIR_SOCKETS) ? 0 : HAQUIC_LISTENER_HOST_FED;
	size_t len;

	memset(p, 0, sizeof(*p));
	p->srv_workers = srv_workers;
	p->relay_fd[0] = p->relay_fd[1] = -1;
	addr_init(&p->saddr, "127.0.0.1", sockets ? 0 : 4433);
	addr_init(&p->caddr, (mode & PAIR_SOCKETS) ? "127.0.0.1" : "127.0.0.2", (mode & PAIR_SOCKETS) ? 0 : 50000);
	p->scfg = haquic_config_new();
	p->ccfg = haquic_config_new();
	if (!p->scfg || !p->ccfg)
		return -1;
	if (haquic_config_load_cert_chain_and_key(p->scfg, fixture("leaf.crt"), fixture("leaf.key")) != HAQUIC_OK ||
	    haquic_config_set_verify_peer(p->ccfg, false, NULL) != HAQUIC_OK)
		return -1;
	if (srv_opts)
		o = *srv_opts;
	else if (HAQUIC_ENGINE_OPTIONS_INIT(&o) != HAQUIC_OK)
		return -1;
	o.workers = srv_workers;
	if (haquic_engine_new(p->scfg, &o, NULL, NULL, &p->srv) != HAQUIC_OK)
		return -1;
	if (HAQUIC_ENGINE_OPTIONS_INIT(&o) != HAQUIC_OK ||
	    haquic_engine_new(p->ccfg, &o, NULL, NULL, &p->cli) != HAQUIC_OK)
		return -1;
	if (haquic_listener_new(p->srv, NULL, &p->saddr, sizeof(p->saddr), sflags, &p->sl) != HAQUIC_OK)
		return -1;
	/* the client's listener needs no certificate: give it the server config */
	if (haquic_listener_new(p->cli, p->scfg, &p->caddr, sizeof(p->caddr), cflags, &p->cl) != HAQUIC_OK)
		return -1;
	if (mode & PAIR_RELAY) {
		struct sockaddr_in any;

		addr_init(&any, "127.0.0.1", 0);
		p->relay = 1;
		for (int i = 0; i < 2; i++) {
			p->relay_fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (p->relay_fd[i] < 0 || bind(p->relay_fd[i], (struct sockaddr *)&any, sizeof(any)) < 0)
				return -1;
		}
	}
	/* with sockets, port 0 picked real ports: learn them */
	if (haquic_listener_address(p->sl, &p->saddr, sizeof(p->saddr), &len) != HAQUIC_OK ||
	    haquic_listener_address(p->cl, &p->caddr, sizeof(p->caddr), &len) != HAQUIC_OK)
		return -1;
	return 0;
}

int pair_connect(struct pair *p)
{
	return haquic_worker_connect(p->cli, 0, p->cl, &p->saddr, sizeof(p->saddr), "haquic.test", &p->conn) == HAQUIC_OK ? 0 : -1;
}

void pair_free(struct pair *p)
{
	for (int i = 0; i < 2; i++)
		if (p->relay && p->relay_fd[i] >= 0)
			close(p->relay_fd[i]);
	for (int i = 0; i < APP_MAX_STREAMS; i++) {
		haquic_stream_unref(p->app[i].s);
		free(p->app[i].buf);
		haquic_stream_unref(p->cs[i].s);
		free(p->cs[i].body);
	}
	haquic_conn_unref(p->conn);
	haquic_listener_unref(p->sl);
	haquic_listener_unref(p->cl);
	haquic_engine_unref(p->srv);
	haquic_engine_unref(p->cli);
	haquic_config_unref(p->scfg);
	haquic_config_unref(p->ccfg);
	memset(p, 0, sizeof(*p));
}

/* ---- server application ------------------------------------------------- */

static struct app_stream *app_find(struct pair *p, const haquic_stream *s)
{
	uint64_t id = haquic_stream_id(s);

	for (int i = 0; i < APP_MAX_STREAMS; i++)
		if (p->app[i].s && haquic_stream_id(p->app[i].s) == id && haquic_stream_conn(p->app[i].s) == haquic_stream_conn(s))
			return &p->app[i];
	return NULL;
}

static void app_release(struct app_stream *a)
{
	haquic_stream_unref(a->s);
	free(a->buf);
	memset(a, 0, sizeof(*a));
}

static int header_is(const haquic_header *h, const char *name)
{
	return h->name_len == strlen(name) && memcmp(h->name, name, h->name_len) == 0;
}

static void app_send(struct pair *p, struct app_stream *a)
{
	static unsigned char chunk[16384];
	size_t w = 0;

	(void)p;
	if (!a->headers_sent) {
		char len[32];
		uint64_t total = a->kind == 2 ? a->to_send : a->kind == 1 ? 5 : 0;
		haquic_header h[2] = {
			{ (const uint8_t *)":status", 7, (const uint8_t *)"200", 3 },
			{ (const uint8_t *)"content-length", 14, (const uint8_t *)len, 0 },
		};
		size_t nh = 1;

		if (a->kind != 3) {
			snprintf(len, sizeof(len), "%llu", (unsigned long long)total);
			h[1].value_len = strlen(len);
			nh = 2;
		}
		if (haquic_stream_send_headers(a->s, h, nh, false) != HAQUIC_OK)
			return;
		a->headers_sent = 1;
	}
	if (a->kind == 1) {
		if (haquic_stream_send(a->s, (const uint8_t *)"hello", 5, true, &w) == HAQUIC_OK && w == 5)
			a->done = 1;
		return;
	}
	if (a->kind == 2) {
		while (a->to_send) {
			size_t n = a->to_send < sizeof(chunk) ? a->to_send : sizeof(chunk);

			pattern_fill(chunk, n, a->sent);
			if (haquic_stream_send(a->s, chunk, n, n == a->to_send, &w) != HAQUIC_OK || w == 0)
				return;
			a->sent += w;
			a->to_send -= w;
		}
		a->done = 1;
		return;
	}
	/* echo: send what was read; FIN once the request body is complete */
	while (a->buf_off < a->buf_len || (a->req_fin && !a->done)) {
		size_t n = a->buf_len - a->buf_off;
		haquic_result r = haquic_stream_send(a->s, a->buf + a->buf_off, n, a->req_fin, &w);

		if (r != HAQUIC_OK)
			return;
		a->buf_off += w;
		if (w < n)
			return;
		if (a->req_fin)
			a->done = 1;
	}
	if (a->buf_off == a->buf_len)
		a->buf_off = a->buf_len = 0;
}

static void app_read(struct pair *p, struct app_stream *a)
{
	for (;;) {
		size_t n = 0;
		bool fin = false;

		if (a->buf_len + 65536 > 64u << 20)
			break;
		a->buf = realloc(a->buf, a->buf_len + 65536);
		if (haquic_stream_recv(a->s, a->buf + a->buf_len, 65536, &n, &fin) != HAQUIC_OK)
			break;
		a->buf_len += n;
		if (fin) {
			a->req_fin = 1;
			break;
		}
	}
	app_send(p, a);
}

static void app_request(struct pair *p, const haquic_event *ev)
{
	struct app_stream *a = NULL;
	const char *path = "";
	size_t path_len = 0;
	int post = 0;

	for (int i = 0; i < APP_MAX_STREAMS; i++)
		if (!p->app[i].s) {
			a = &p->app[i];
			break;
		}
	if (!a) {
		haquic_stream_reset(ev->stream, 0x107);
		return;
	}
	p->app_requests++;
	a->s = haquic_stream_ref(ev->stream);
	a->req_fin = ev->fin;
	for (size_t i = 0; i < ev->headers_len; i++) {
		if (header_is(&ev->headers[i], ":path")) {
			path = (const char *)ev->headers[i].value;
			path_len = ev->headers[i].value_len;
		}
		if (header_is(&ev->headers[i], ":method") && ev->headers[i].value_len == 4 &&
		    memcmp(ev->headers[i].value, "POST", 4) == 0)
			post = 1;
	}
	if (post) {
		a->kind = 3;
	} else if (path_len > 6 && memcmp(path, "/size/", 6) == 0) {
		char num[24] = "";

		a->kind = 2;
		memcpy(num, path + 6, path_len - 6 < sizeof(num) - 1 ? path_len - 6 : sizeof(num) - 1);
		a->to_send = strtoull(num, NULL, 10);
	} else if (path_len == 7 && memcmp(path, "/silent", 7) == 0) {
		a->kind = 4;	/* never answered: the test ends it */
		return;
	} else {
		a->kind = 1;
	}
	if (a->kind == 3)
		app_read(p, a);
	else
		app_send(p, a);
}

static void server_events(struct pair *p, uint32_t w)
{
	haquic_event ev;
	struct app_stream *a;

	HAQUIC_EVENT_INIT(&ev);
	while (haquic_worker_poll(p->srv, w, &ev) == HAQUIC_OK) {
		if (p->srv_hook)
			p->srv_hook(p, w, &ev);
		switch (ev.kind) {
		case HAQUIC_EVENT_REQUEST:
			app_request(p, &ev);
			break;
		case HAQUIC_EVENT_STREAM_READABLE:
		case HAQUIC_EVENT_STREAM_FINISHED:
			if ((a = app_find(p, ev.stream)) && a->kind == 3)
				app_read(p, a);
			break;
		case HAQUIC_EVENT_STREAM_WRITABLE:
			if ((a = app_find(p, ev.stream)))
				app_send(p, a);
			break;
		case HAQUIC_EVENT_STOP_SENDING:
			p->app_stop_sending++;
			if ((a = app_find(p, ev.stream)))
				app_release(a);
			break;
		case HAQUIC_EVENT_STREAM_RESET:
			p->app_resets++;
			if ((a = app_find(p, ev.stream)))
				app_release(a);
			break;
		case HAQUIC_EVENT_TRAILERS:
			p->app_trailers++;
			break;
		case HAQUIC_EVENT_CONN_CLOSED:
			p->srv_closed++;
			break;
		case HAQUIC_EVENT_FD_REGISTER:
			if (p->nfds < 64) {
				p->fds[p->nfds] = ev.fd;
				p->gens[p->nfds++] = ev.fd_generation;
			}
			p->fd_registered++;
			break;
		case HAQUIC_EVENT_FD_RELEASE:
			/* stop polling it first, then confirm */
			for (int i = 0; i < p->nfds; i++)
				if (p->fds[i] == ev.fd && p->gens[i] == ev.fd_generation) {
					p->fds[i] = p->fds[--p->nfds];
					p->gens[i] = p->gens[p->nfds];
					break;
				}
			if (haquic_worker_fd_released(p->srv, w, ev.fd, ev.fd_generation) == HAQUIC_OK)
				p->fd_released++;
			break;
		default:
			break;
		}
	}
	for (int i = 0; i < APP_MAX_STREAMS; i++)
		if (p->app[i].s && p->app[i].done && haquic_stream_is_closed(p->app[i].s))
			app_release(&p->app[i]);
}

/* ---- client side ---------------------------------------------------------- */

static struct client_stream *client_find(struct pair *p, const haquic_stream *s)
{
	for (int i = 0; i < p->ncs; i++)
		if (p->cs[i].s == s)
			return &p->cs[i];
	return NULL;
}

static void client_upload(struct client_stream *c)
{
	while (c->upload && c->upload_off < c->upload_len) {
		size_t w = 0;
		size_t n = c->upload_len - c->upload_off;

		if (haquic_stream_send(c->s, c->upload + c->upload_off, n, true, &w) != HAQUIC_OK || w == 0)
			return;
		c->upload_off += w;
	}
}

static void client_read(struct client_stream *c)
{
	for (;;) {
		size_t n = 0;
		bool fin = false;

		if (c->body_cap - c->body_len < 65536) {
			c->body_cap = c->body_cap * 2 + 65536;
			c->body = realloc(c->body, c->body_cap);
		}
		if (haquic_stream_recv(c->s, c->body + c->body_len, 65536, &n, &fin) != HAQUIC_OK)
			return;
		c->body_len += n;
		if (fin) {
			c->fin = 1;
			return;
		}
	}
}

static void client_events(struct pair *p)
{
	haquic_event ev;
	struct client_stream *c;

	HAQUIC_EVENT_INIT(&ev);
	while (haquic_worker_poll(p->cli, 0, &ev) == HAQUIC_OK) {
		if (p->cli_hook)
			p->cli_hook(p, &ev);
		switch (ev.kind) {
		case HAQUIC_EVENT_CONN_ESTABLISHED:
			p->established = 1;
			break;
		case HAQUIC_EVENT_RESPONSE:
			if ((c = client_find(p, ev.stream))) {
				c->status = 0;
				for (size_t i = 0; i < ev.headers_len; i++)
					if (header_is(&ev.headers[i], ":status") && ev.headers[i].value_len == 3)
						c->status = (ev.headers[i].value[0] - '0') * 100 +
						            (ev.headers[i].value[1] - '0') * 10 + (ev.headers[i].value[2] - '0');
				if (ev.fin)
					c->fin = 1;
			}
			break;
		case HAQUIC_EVENT_STREAM_READABLE:
		case HAQUIC_EVENT_STREAM_FINISHED:
			if ((c = client_find(p, ev.stream)))
				client_read(c);
			break;
		case HAQUIC_EVENT_STREAM_WRITABLE:
			if ((c = client_find(p, ev.stream)))
				client_upload(c);
			break;
		case HAQUIC_EVENT_STREAM_RESET:
			if ((c = client_find(p, ev.stream))) {
				c->reset = 1;
				c->reset_code = ev.code;
			}
			break;
		case HAQUIC_EVENT_GOAWAY:
			p->goaways++;
			break;
		case HAQUIC_EVENT_CONN_CLOSED:
			p->closed = 1;
			p->close_code = ev.code;
			break;
		default:
			break;
		}
	}
}

int pair_request(struct pair *p, const char *method, const char *path, const unsigned char *upload, size_t upload_len)
{
	return pair_request_on(p, p->conn, method, path, upload, upload_len);
}

int pair_request_on(struct pair *p, const haquic_conn *conn, const char *method, const char *path,
                    const unsigned char *upload, size_t upload_len)
{
	haquic_header h[4] = {
		{ (const uint8_t *)":method", 7, (const uint8_t *)method, strlen(method) },
		{ (const uint8_t *)":scheme", 7, (const uint8_t *)"https", 5 },
		{ (const uint8_t *)":authority", 10, (const uint8_t *)"haquic.test", 11 },
		{ (const uint8_t *)":path", 5, (const uint8_t *)path, strlen(path) },
	};
	struct client_stream *c;

	if (p->ncs >= APP_MAX_STREAMS)
		return -1;
	c = &p->cs[p->ncs];
	if (haquic_conn_send_request(conn, h, 4, upload == NULL, &c->s) != HAQUIC_OK)
		return -1;
	c->upload = upload;
	c->upload_len = upload_len;
	client_upload(c);
	return p->ncs++;
}

/* ---- moving datagrams ------------------------------------------------------ */

static int move(const haquic_engine *from, uint32_t w, const haquic_engine *to, const haquic_listener *to_l,
                const struct sockaddr_in *src, int drop)
{
	static unsigned char buf[65536];
	struct sockaddr_storage peer;
	size_t len, peer_len;
	int n = 0;

	while (haquic_worker_pop_datagram(from, w, buf, sizeof(buf), &len, &peer, sizeof(peer), &peer_len) == HAQUIC_OK) {
		n++;
		if (!drop)
			haquic_listener_recv(to, to_l, buf, len, src, sizeof(*src));
	}
	return n;
}

/* Readiness of the server's registered fds, reported as the host would. */
static void poll_fds(struct pair *p)
{
	struct pollfd pfd[64];

	for (int i = 0; i < p->nfds; i++) {
		pfd[i].fd = p->fds[i];
		pfd[i].events = POLLIN;
		pfd[i].revents = 0;
	}
	if (p->nfds && poll(pfd, p->nfds, 0) > 0)
		for (int i = 0; i < p->nfds; i++)
			if (pfd[i].revents & POLLIN)
				haquic_worker_fd_ready(p->srv, 0, p->fds[i], p->gens[i]);
}

/* Relay mode: client datagrams leave through the current relay socket;
 * whatever the server sends to either relay socket goes to the client. */
static int relay_move(struct pair *p)
{
	static unsigned char buf[65536];
	struct sockaddr_storage peer;
	size_t len, peer_len;
	int n = 0;

	while (haquic_worker_pop_datagram(p->cli, 0, buf, sizeof(buf), &len, &peer, sizeof(peer), &peer_len) == HAQUIC_OK) {
		if (sendto(p->relay_fd[p->relay_cur], buf, len, 0, (struct sockaddr *)&p->saddr, sizeof(p->saddr)) > 0)
			n++;
	}
	for (int i = 0; i < 2; i++) {
		ssize_t r;

		while ((r = recv(p->relay_fd[i], buf, sizeof(buf), 0)) > 0) {
			haquic_listener_recv(p->cli, p->cl, buf, r, &p->saddr, sizeof(p->saddr));
			n++;
		}
	}
	return n;
}

int pair_pump(struct pair *p, int rounds)
{
	int total = 0;

	for (int r = 0; r < rounds; r++) {
		int moved = 0;

		haquic_worker_process(p->cli, 0);
		client_events(p);
		if (p->relay)
			moved += relay_move(p);
		else
			moved += move(p->cli, 0, p->srv, p->sl, &p->caddr, p->drop_to_server);
		poll_fds(p);
		for (uint32_t w = 0; w < p->srv_workers; w++) {
			haquic_worker_process(p->srv, w);
			server_events(p, w);
			haquic_worker_process(p->srv, w);
			moved += move(p->srv, w, p->cli, p->cl, &p->saddr, p->drop_to_client);
		}
		total += moved;
		if (!moved)
			break;
	}
	haquic_worker_process(p->cli, 0);
	client_events(p);
	return total;
}

long long pair_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

void pair_idle(struct pair *p)
{
	int64_t t = haquic_worker_next_timeout(p->cli, 0);

	for (uint32_t w = 0; w < p->srv_workers; w++) {
		int64_t s = haquic_worker_next_timeout(p->srv, w);

		if (s >= 0 && (t < 0 || s < t))
			t = s;
	}
	if (t < 0 || t > 5)
		t = 5;
	usleep(t * 1000 + 200);
}
