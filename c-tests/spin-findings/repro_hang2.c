/* Many client connections (0-RTT resumption), lossy network, GET /size/N
 * downloads, and haquic_conn_close at random moments: does
 * haquic_worker_process always return? */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include "pair.h"

static unsigned seed = 1;
static unsigned rnd(unsigned n) { seed = seed * 1103515245u + 12345u; return ((seed >> 8) & 0xffffff) % n; }
static int loss = 40;
static const char *where = "";
static long nconn;

static void on_alarm(int sig)
{
	(void)sig;
	fprintf(stderr, "HANG in %s after %ld connections (seed %u)\n", where, nconn, seed);
	_exit(3);
}

static void pump(struct pair *p)
{
	static unsigned char buf[65536];
	struct sockaddr_storage peer; size_t len, plen;
	haquic_event ev;

	HAQUIC_EVENT_INIT(&ev);
	where = "process(client)"; alarm(10); haquic_worker_process(p->cli, 0); alarm(0);
	while (haquic_worker_poll(p->cli, 0, &ev) == HAQUIC_OK) {
		if (ev.kind == HAQUIC_EVENT_STREAM_READABLE || ev.kind == HAQUIC_EVENT_STREAM_FINISHED) {
			size_t n; bool fin;
			while (haquic_stream_recv(ev.stream, buf, sizeof(buf), &n, &fin) == HAQUIC_OK && !fin) ;
		}
	}
	where = "process(client)"; alarm(10); haquic_worker_process(p->cli, 0); alarm(0);
	while (haquic_worker_pop_datagram(p->cli, 0, buf, sizeof(buf), &len, &peer, sizeof(peer), &plen) == HAQUIC_OK)
		if (rnd(1000) >= (unsigned)loss)
			haquic_listener_recv(p->srv, p->sl, buf, len, &p->caddr, sizeof(p->caddr));
	where = "process(server)"; alarm(10); haquic_worker_process(p->srv, 0); alarm(0);
	while (haquic_worker_poll(p->srv, 0, &ev) == HAQUIC_OK) {
		if (ev.kind == HAQUIC_EVENT_REQUEST) {
			static unsigned char body[200000];
			haquic_header h[1] = { { (const uint8_t *)":status", 7, (const uint8_t *)"200", 3 } };
			size_t w;
			if (haquic_stream_send_headers(ev.stream, h, 1, false) == HAQUIC_OK)
				haquic_stream_send(ev.stream, body, sizeof(body), true, &w);
		}
	}
	where = "process(server)"; alarm(10); haquic_worker_process(p->srv, 0); alarm(0);
	while (haquic_worker_pop_datagram(p->srv, 0, buf, sizeof(buf), &len, &peer, sizeof(peer), &plen) == HAQUIC_OK)
		if (rnd(1000) >= (unsigned)loss)
			haquic_listener_recv(p->cli, p->cl, buf, len, &p->saddr, sizeof(p->saddr));
}

int main(int argc, char **argv)
{
	struct pair p;
	unsigned char sess[8192];
	size_t sess_len = 0;
	haquic_header rq[4] = {
		{ (const uint8_t *)":method", 7, (const uint8_t *)"GET", 3 }, { (const uint8_t *)":scheme", 7, (const uint8_t *)"https", 5 },
		{ (const uint8_t *)":authority", 10, (const uint8_t *)"x", 1 }, { (const uint8_t *)":path", 5, (const uint8_t *)"/big", 4 } };

	fixtures_dir = argc > 1 ? argv[1] : "build/c-tests/fixtures";
	if (argc > 2) seed = atoi(argv[2]);
	if (argc > 3) loss = atoi(argv[3]);
	int use_early = argc > 4 ? atoi(argv[4]) : 1;
	signal(SIGALRM, on_alarm);
	if (pair_init(&p, 1, NULL)) return 2;
	haquic_config_set_early_data(p.scfg, true);
	haquic_config_set_early_data(p.ccfg, true);
	for (nconn = 0; nconn < 3000; nconn++) {
		const haquic_conn *c = NULL;
		const haquic_stream *s = NULL;
		int close_at = 1 + rnd(60), early = use_early && sess_len && rnd(2);

		if (early)
			haquic_worker_connect_with_session(p.cli, 0, p.cl, &p.saddr, sizeof(p.saddr), "haquic.test", sess, sess_len, &c);
		else
			haquic_worker_connect(p.cli, 0, p.cl, &p.saddr, sizeof(p.saddr), "haquic.test", &c);
		if (!c) return 4;
		for (int r = 0; r < close_at; r++) {
			if (!s && haquic_conn_send_request(c, rq, 4, true, &s) != HAQUIC_OK) s = NULL;
			pump(&p);
			if (r % 8 == 7) usleep(2000);
		}
		if (!sess_len || rnd(4) == 0) {
			size_t l = 0;
			if (haquic_conn_get_session(c, sess, sizeof(sess), &l) == HAQUIC_OK) sess_len = l;
		}
		haquic_conn_close(c, H3_NO_ERROR, NULL, 0);
		for (int r = 0; r < 3; r++) pump(&p);
		haquic_stream_unref(s);
		haquic_conn_unref(c);
	}
	fprintf(stderr, "no hang in %ld connections\n", nconn);
	pair_free(&p);
	return 0;
}
