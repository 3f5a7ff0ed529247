#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "mt.h"

long long mt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int stress_seconds(void)
{
	const char *s = getenv("HAQUIC_STRESS_SECONDS");
	int v = s ? atoi(s) : 2;

	return v > 0 ? v : 2;
}

/* The one callback into the host: it only signals the worker's thread. */
static void wake(void *userdata, uint32_t worker)
{
	struct mt *m = userdata;
	uint64_t one = 1;

	if (worker < m->nworkers && write(m->w[worker].efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		abort();
}

static int hdr_is(const haquic_header *h, const char *name, const char *value)
{
	return h->name_len == strlen(name) && memcmp(h->name, name, h->name_len) == 0 &&
	       (!value || (h->value_len == strlen(value) && memcmp(h->value, value, h->value_len) == 0));
}

/* Sends what it can; returns 1 when the response is complete. */
static int srv_push(struct mt_pending *p)
{
	static const haquic_header h[] = { { (const uint8_t *)":status", 7, (const uint8_t *)"200", 3 } };
	static const unsigned char body[65536];
	size_t w = 0;

	if (!p->headers_sent) {
		if (haquic_stream_send_headers(p->s, h, 1, p->left == 0) != HAQUIC_OK)
			return 0;
		p->headers_sent = 1;
	}
	while (p->left) {
		size_t n = p->left < sizeof(body) ? p->left : sizeof(body);

		if (haquic_stream_send(p->s, body, n, n == p->left, &w) != HAQUIC_OK || w == 0)
			return 0;
		p->left -= w;
	}
	return 1;
}

static void srv_release(struct mt_pending *p)
{
	haquic_stream_unref(p->s);
	memset(p, 0, sizeof(*p));
}

static struct mt_pending *srv_find(struct mt_worker *w, const haquic_stream *s)
{
	for (int i = 0; i < MT_PENDING; i++)
		if (w->pending[i].s == s)
			return &w->pending[i];
	return NULL;
}

static void srv_request(struct mt_worker *w, const haquic_event *ev)
{
	struct mt_pending *p = srv_find(w, NULL);
	int goaway = 0;

	for (size_t i = 0; i < ev->headers_len; i++)
		if (hdr_is(&ev->headers[i], ":path", "/goaway"))
			goaway = 1;
	if (!p) {
		w->dropped++;
		haquic_stream_reset(ev->stream, 0x107);
	} else {
		p->s = haquic_stream_ref(ev->stream);
		p->left = w->m->response_size;
		if (srv_push(p))
			srv_release(p);
	}
	if (goaway)
		haquic_conn_shutdown(ev->conn);
}

static void srv_event(struct mt_worker *w, const haquic_event *ev)
{
	struct mt_pending *p;

	switch (ev->kind) {
	case HAQUIC_EVENT_REQUEST:
		srv_request(w, ev);
		break;
	case HAQUIC_EVENT_STREAM_WRITABLE:
		if ((p = srv_find(w, ev->stream)) && srv_push(p))
			srv_release(p);
		break;
	case HAQUIC_EVENT_STOP_SENDING:
	case HAQUIC_EVENT_STREAM_RESET:
		if ((p = srv_find(w, ev->stream)))
			srv_release(p);
		break;
	case HAQUIC_EVENT_CONN_CLOSED:
		for (int i = 0; i < MT_PENDING; i++)
			if (w->pending[i].s && haquic_stream_conn(w->pending[i].s) == ev->conn)
				srv_release(&w->pending[i]);
		break;
	case HAQUIC_EVENT_FD_REGISTER:
		if (w->nfds < (int)(sizeof(w->fds) / sizeof(w->fds[0]))) {
			w->fds[w->nfds] = ev->fd;
			w->gens[w->nfds++] = ev->fd_generation;
		}
		break;
	case HAQUIC_EVENT_FD_RELEASE:
		/* stop polling it, then confirm: only then does the engine close it */
		for (int i = 0; i < w->nfds; i++)
			if (w->fds[i] == ev->fd && w->gens[i] == ev->fd_generation) {
				w->fds[i] = w->fds[--w->nfds];
				w->gens[i] = w->gens[w->nfds];
				break;
			}
		if (haquic_worker_fd_released(w->m->srv, w->id, ev->fd, ev->fd_generation) == HAQUIC_OK)
			w->released++;
		break;
	default:
		break;
	}
}

static void *srv_thread(void *arg)
{
	struct mt_worker *w = arg;
	struct mt *m = w->m;
	static _Thread_local unsigned char buf[65536];
	struct sockaddr_storage peer;
	haquic_event ev;

	HAQUIC_EVENT_INIT(&ev);
	while (!atomic_load(&m->stop)) {
		struct pollfd pfd[1 + MT_MAX_CONNS + 8];
		int64_t t = haquic_worker_next_timeout(m->srv, w->id);
		uint64_t junk;
		size_t len, peer_len;
		int n = 1;

		pfd[0] = (struct pollfd){ w->efd, POLLIN, 0 };
		for (int i = 0; i < w->nfds; i++)
			pfd[n++] = (struct pollfd){ w->fds[i], POLLIN, 0 };
		if (t < 0 || t > 10)
			t = 10;
		if (poll(pfd, n, (int)t) > 0) {
			if ((pfd[0].revents & POLLIN) && read(w->efd, &junk, sizeof(junk)) < 0 && errno != EAGAIN)
				abort();
			for (int i = 1; i < n; i++)
				if (pfd[i].revents & POLLIN)
					haquic_worker_fd_ready(m->srv, w->id, pfd[i].fd, w->gens[i - 1]);
		}
		if (haquic_worker_process(m->srv, w->id) != HAQUIC_OK)
			abort();
		while (haquic_worker_poll(m->srv, w->id, &ev) == HAQUIC_OK)
			srv_event(w, &ev);
		haquic_worker_process(m->srv, w->id);
		while (haquic_worker_pop_datagram(m->srv, w->id, buf, sizeof(buf), &len, &peer, sizeof(peer),
		                                  &peer_len) == HAQUIC_OK)
			haquic_listener_recv(m->cli, m->cl, buf, len, &m->saddr, sizeof(m->saddr));
	}
	for (int i = 0; i < MT_PENDING; i++)
		if (w->pending[i].s)
			srv_release(&w->pending[i]);
	return NULL;
}

/* Re-injects recent client datagrams from its own thread: duplicates and
 * stale packets for connections that may be closing on another worker. */
static void *replayer(void *arg)
{
	struct mt *m = arg;
	unsigned char buf[1500];
	unsigned i = 0;

	while (!atomic_load(&m->stop)) {
		size_t len;
		struct sockaddr_in src = m->caddr;

		pthread_mutex_lock(&m->ring_lock);
		len = m->ring_len[i % MT_RING];
		memcpy(buf, m->ring[i % MT_RING], len);
		pthread_mutex_unlock(&m->ring_lock);
		i += 7;
		if (len) {
			src.sin_port = htons(40000 + (i % 1000));
			haquic_listener_recv(m->srv, m->sl, buf, len, &src, sizeof(src));
			atomic_fetch_add(&m->replayed, 1);
		}
		if (i % 64 == 0)
			usleep(100);
	}
	return NULL;
}

static int mt_start_mode(struct mt *m, uint32_t workers, size_t response_size, int rebind, int replay, int sockets);

int mt_start(struct mt *m, uint32_t workers, size_t response_size, int rebind, int replay)
{
	return mt_start_mode(m, workers, response_size, rebind, replay, 0);
}

int mt_start_sockets(struct mt *m, uint32_t workers, size_t response_size, int rebind)
{
	return mt_start_mode(m, workers, response_size, rebind, 0, 1);
}

long mt_released(struct mt *m)
{
	long n = 0;

	for (uint32_t i = 0; i < m->nworkers; i++)
		n += m->w[i].released;
	return n;
}

static int mt_start_mode(struct mt *m, uint32_t workers, size_t response_size, int rebind, int replay, int sockets)
{
	haquic_engine_options o;
	size_t alen;

	memset(m, 0, sizeof(*m));
	m->sockets = sockets;
	for (int i = 0; i < MT_RELAYS; i++)
		m->relay_fd[i] = -1;
	m->nworkers = workers;
	m->response_size = response_size;
	m->rebind = rebind;
	m->replay = replay;
	m->src_port = 50000;
	pthread_mutex_init(&m->ring_lock, NULL);
	m->saddr.sin_family = m->caddr.sin_family = AF_INET;
	m->saddr.sin_port = htons(sockets ? 0 : 4433);
	m->caddr.sin_port = htons(m->src_port);
	inet_pton(AF_INET, "127.0.0.1", &m->saddr.sin_addr);
	inet_pton(AF_INET, "127.0.0.2", &m->caddr.sin_addr);
	for (uint32_t i = 0; i < workers; i++) {
		m->w[i].m = m;
		m->w[i].id = i;
		m->w[i].efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (m->w[i].efd < 0)
			return -1;
	}
	m->scfg = haquic_config_new();
	m->ccfg = haquic_config_new();
	if (haquic_config_load_cert_chain_and_key(m->scfg, fixture("leaf.crt"), fixture("leaf.key")) != HAQUIC_OK ||
	    haquic_config_set_verify_peer(m->ccfg, false, NULL) != HAQUIC_OK)
		return -1;
	HAQUIC_ENGINE_OPTIONS_INIT(&o);
	o.workers = workers;
	if (haquic_engine_new(m->scfg, &o, wake, m, &m->srv) != HAQUIC_OK)
		return -1;
	HAQUIC_ENGINE_OPTIONS_INIT(&o);
	if (haquic_engine_new(m->ccfg, &o, NULL, NULL, &m->cli) != HAQUIC_OK)
		return -1;
	if (haquic_listener_new(m->srv, NULL, &m->saddr, sizeof(m->saddr),
	                        sockets ? HAQUIC_LISTENER_CONN_SOCKETS : HAQUIC_LISTENER_HOST_FED, &m->sl) != HAQUIC_OK ||
	    haquic_listener_new(m->cli, m->scfg, &m->caddr, sizeof(m->caddr), HAQUIC_LISTENER_HOST_FED, &m->cl) != HAQUIC_OK)
		return -1;
	if (haquic_listener_address(m->sl, &m->saddr, sizeof(m->saddr), &alen) != HAQUIC_OK)
		return -1;
	if (sockets) {
		struct sockaddr_in any = { .sin_family = AF_INET };

		inet_pton(AF_INET, "127.0.0.1", &any.sin_addr);
		for (int i = 0; i < MT_RELAYS; i++) {
			m->relay_fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (m->relay_fd[i] < 0 || bind(m->relay_fd[i], (struct sockaddr *)&any, sizeof(any)) < 0)
				return -1;
		}
	}
	for (uint32_t i = 0; i < workers; i++) {
		if (pthread_create(&m->w[i].th, NULL, srv_thread, &m->w[i]) != 0)
			return -1;
		m->w[i].started = 1;
	}
	if (replay) {
		if (pthread_create(&m->replayer, NULL, replayer, m) != 0)
			return -1;
		m->replayer_started = 1;
	}
	return 0;
}

int mt_connect(struct mt *m)
{
	struct mt_conn *c;
	int i;

	for (i = 0; i < m->nconns; i++)
		if (!m->conns[i].c)
			break;
	if (i == MT_MAX_CONNS)
		return -1;
	c = &m->conns[i];
	memset(c, 0, sizeof(*c));
	if (haquic_worker_connect(m->cli, 0, m->cl, &m->saddr, sizeof(m->saddr), "haquic.test", &c->c) != HAQUIC_OK)
		return -1;
	if (i == m->nconns)
		m->nconns++;
	return i;
}

int mt_reap(struct mt *m)
{
	int n = 0;

	for (int i = 0; i < m->nconns; i++) {
		struct mt_conn *c = &m->conns[i];

		if (!c->c || !c->closed)
			continue;
		for (int k = 0; k < c->ns; k++)
			haquic_stream_unref(c->s[k]);
		haquic_conn_unref(c->c);
		memset(c, 0, sizeof(*c));
		n++;
	}
	return n;
}

int mt_get(struct mt *m, int i, const char *path)
{
	struct mt_conn *c = &m->conns[i];
	haquic_header h[4] = {
		{ (const uint8_t *)":method", 7, (const uint8_t *)"GET", 3 },
		{ (const uint8_t *)":scheme", 7, (const uint8_t *)"https", 5 },
		{ (const uint8_t *)":authority", 10, (const uint8_t *)"haquic.test", 11 },
		{ (const uint8_t *)":path", 5, (const uint8_t *)path, strlen(path) },
	};

	if (c->ns >= 16 || haquic_conn_send_request(c->c, h, 4, true, &c->s[c->ns]) != HAQUIC_OK)
		return -1;
	c->ns++;
	c->sent++;
	return 0;
}

static struct mt_conn *conn_of(struct mt *m, const haquic_conn *hc)
{
	for (int i = 0; i < m->nconns; i++)
		if (m->conns[i].c && m->conns[i].c == hc)
			return &m->conns[i];
	return NULL;
}

void mt_client_step(struct mt *m)
{
	static unsigned char buf[65536];
	struct sockaddr_storage peer;
	size_t len, peer_len;
	haquic_event ev;
	struct mt_conn *c;

	haquic_worker_process(m->cli, 0);
	HAQUIC_EVENT_INIT(&ev);
	while (haquic_worker_poll(m->cli, 0, &ev) == HAQUIC_OK) {
		if (getenv("MT_DEBUG"))
			fprintf(stderr, "cli event %d stream %lld code 0x%llx\n", ev.kind,
			        ev.stream ? (long long)haquic_stream_id(ev.stream) : -1LL, (unsigned long long)ev.code);
		c = conn_of(m, ev.conn);
		if (!c)
			continue;
		switch (ev.kind) {
		case HAQUIC_EVENT_CONN_ESTABLISHED:
			c->established = 1;
			break;
		case HAQUIC_EVENT_STREAM_READABLE:
		case HAQUIC_EVENT_STREAM_FINISHED:
			for (;;) {
				size_t n = 0;
				bool fin = false;

				if (haquic_stream_recv(ev.stream, buf, sizeof(buf), &n, &fin) != HAQUIC_OK)
					break;
				if (fin) {
					c->responses++;
					m->responses++;
					break;
				}
			}
			break;
		case HAQUIC_EVENT_STREAM_RESET:
			c->resets++;
			m->resets++;
			break;
		case HAQUIC_EVENT_GOAWAY:
			c->goaway = 1;
			break;
		case HAQUIC_EVENT_CONN_CLOSED:
			c->closed = 1;
			m->closed++;
			if (getenv("MT_DEBUG"))
				fprintf(stderr, "closed: app %d code 0x%llx reason %.*s\n", ev.is_app_error,
				        (unsigned long long)ev.code, (int)ev.reason_len, (const char *)ev.reason);
			break;
		default:
			break;
		}
	}
	haquic_worker_process(m->cli, 0);
	if (m->sockets) {
		while (haquic_worker_pop_datagram(m->cli, 0, buf, sizeof(buf), &len, &peer, sizeof(peer), &peer_len) == HAQUIC_OK) {
			if (m->rebind && (rand() % 16) == 0)
				m->relay_cur = rand() % MT_RELAYS;
			sendto(m->relay_fd[m->relay_cur], buf, len, 0, (struct sockaddr *)&m->saddr, sizeof(m->saddr));
		}
		for (int i = 0; i < MT_RELAYS; i++) {
			ssize_t r;

			while ((r = recv(m->relay_fd[i], buf, sizeof(buf), 0)) > 0)
				haquic_listener_recv(m->cli, m->cl, buf, r, &m->saddr, sizeof(m->saddr));
		}
		return;
	}
	while (haquic_worker_pop_datagram(m->cli, 0, buf, sizeof(buf), &len, &peer, sizeof(peer), &peer_len) == HAQUIC_OK) {
		struct sockaddr_in src = m->caddr;

		if (m->rebind && (rand() % 16) == 0)
			m->src_port = 50000 + rand() % 10000;
		src.sin_port = htons(m->src_port);
		if (m->replay && len <= 1500) {
			pthread_mutex_lock(&m->ring_lock);
			memcpy(m->ring[m->ring_next % MT_RING], buf, len);
			m->ring_len[m->ring_next % MT_RING] = len;
			m->ring_next++;
			pthread_mutex_unlock(&m->ring_lock);
		}
		haquic_listener_recv(m->srv, m->sl, buf, len, &src, sizeof(src));
	}
}

void mt_stop(struct mt *m)
{
	atomic_store(&m->stop, 1);
	for (uint32_t i = 0; i < m->nworkers; i++) {
		if (m->w[i].started)
			pthread_join(m->w[i].th, NULL);
		if (m->w[i].efd > 0)
			close(m->w[i].efd);
	}
	if (m->replayer_started)
		pthread_join(m->replayer, NULL);
	for (int i = 0; i < MT_RELAYS; i++)
		if (m->sockets && m->relay_fd[i] >= 0)
			close(m->relay_fd[i]);
	for (int i = 0; i < m->nconns; i++) {
		for (int k = 0; k < m->conns[i].ns; k++)
			haquic_stream_unref(m->conns[i].s[k]);
		haquic_conn_unref(m->conns[i].c);
	}
	haquic_listener_unref(m->sl);
	haquic_listener_unref(m->cl);
	haquic_engine_unref(m->srv);
	haquic_engine_unref(m->cli);
	haquic_config_unref(m->scfg);
	haquic_config_unref(m->ccfg);
	pthread_mutex_destroy(&m->ring_lock);
}
