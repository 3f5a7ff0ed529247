/* Server: HEADERS then RESET_STREAM for every request. Network: loss, dup,
 * reorder. Client: reads only on events. Reports a stream that ends with
 * STREAM_FINISHED (and a FIN from recv) but saw neither RESPONSE nor
 * STREAM_RESET. */
#include <stdlib.h>
#include <unistd.h>
#include "pair.h"

#define N 4000
static struct { const haquic_stream *s; int resp, reset, fin, finished_ev, events[16]; int nev; } cs[N];
static int ncs;
static unsigned seed = 1;
static int loss = 39, dupp = 18, reorder = 30;

static unsigned rnd(unsigned n) { seed = seed * 1103515245u + 12345u; return ((seed >> 8) & 0xffffff) % n; }

struct held { unsigned char d[1600]; size_t len; int to_cli; int due; };
static struct held hold[64]; static int nhold;

static void deliver(struct pair *p, int to_cli, unsigned char *d, size_t len)
{
	if (to_cli)
		haquic_listener_recv(p->cli, p->cl, d, len, &p->saddr, sizeof(p->saddr));
	else
		haquic_listener_recv(p->srv, p->sl, d, len, &p->caddr, sizeof(p->caddr));
}

static int move(struct pair *p, const haquic_engine *e, int to_cli, int round)
{
	static unsigned char buf[65536];
	struct sockaddr_storage peer; size_t len, plen; int n = 0;

	while (haquic_worker_pop_datagram(e, 0, buf, sizeof(buf), &len, &peer, sizeof(peer), &plen) == HAQUIC_OK) {
		n++;
		if (rnd(1000) < (unsigned)loss) continue;
		if (rnd(1000) < (unsigned)reorder && nhold < 64 && len <= 1600) {
			memcpy(hold[nhold].d, buf, len); hold[nhold].len = len; hold[nhold].to_cli = to_cli;
			hold[nhold++].due = round + 1 + rnd(3);
			continue;
		}
		deliver(p, to_cli, buf, len);
		if (rnd(1000) < (unsigned)dupp) deliver(p, to_cli, buf, len);
	}
	for (int i = 0; i < nhold;) {
		if (hold[i].due <= round) { deliver(p, hold[i].to_cli, hold[i].d, hold[i].len); hold[i] = hold[--nhold]; n++; }
		else i++;
	}
	return n;
}

static int find(const haquic_stream *s) { for (int i = 0; i < ncs; i++) if (cs[i].s == s) return i; return -1; }

int main(int argc, char **argv)
{
	struct pair p;
	haquic_event ev;
	haquic_header rq[4] = {
		{ (const uint8_t *)":method", 7, (const uint8_t *)"GET", 3 }, { (const uint8_t *)":scheme", 7, (const uint8_t *)"https", 5 },
		{ (const uint8_t *)":authority", 10, (const uint8_t *)"x", 1 }, { (const uint8_t *)":path", 5, (const uint8_t *)"/r", 2 } };
	int bad = 0;

	fixtures_dir = argc > 1 ? argv[1] : "build/c-tests/fixtures";
	if (argc > 2) seed = atoi(argv[2]);
	if (argc > 3) loss = atoi(argv[3]);
	if (argc > 4) dupp = atoi(argv[4]);
	if (argc > 5) reorder = atoi(argv[5]);
	haquic_engine_options so;
	HAQUIC_ENGINE_OPTIONS_INIT(&so);
	so.qlog_dir = getenv("QLOG_SRV");
	if (pair_init(&p, 1, &so)) return 2;
	if (getenv("QLOG")) {
		haquic_engine_options o;
		HAQUIC_ENGINE_OPTIONS_INIT(&o);
		o.qlog_dir = getenv("QLOG");
		haquic_listener_unref(p.cl);
		haquic_engine_unref(p.cli);
		if (haquic_engine_new(p.ccfg, &o, NULL, NULL, &p.cli) != HAQUIC_OK) return 4;
		if (haquic_listener_new(p.cli, p.scfg, &p.caddr, sizeof(p.caddr), HAQUIC_LISTENER_HOST_FED, &p.cl) != HAQUIC_OK) return 5;
	}
	if (pair_connect(&p)) return 2;
	HAQUIC_EVENT_INIT(&ev);
	for (int round = 0; round < 20000 && ncs < N; round++) {
		haquic_worker_process(p.cli, 0);
		while (haquic_worker_poll(p.cli, 0, &ev) == HAQUIC_OK) {
			int i = ev.stream ? find(ev.stream) : -1;
			if (ev.kind == HAQUIC_EVENT_CONN_ESTABLISHED) p.established = 1;
			if (ev.kind == HAQUIC_EVENT_CONN_CLOSED) { fprintf(stderr, "conn closed 0x%llx\n", (unsigned long long)ev.code); goto out; }
			if (i < 0) continue;
			if (cs[i].nev < 16) cs[i].events[cs[i].nev++] = ev.kind;
			if (ev.kind == HAQUIC_EVENT_RESPONSE) cs[i].resp = 1;
			if (ev.kind == HAQUIC_EVENT_STREAM_RESET) cs[i].reset = 1;
			if (ev.kind == HAQUIC_EVENT_STREAM_FINISHED || ev.kind == HAQUIC_EVENT_STREAM_READABLE) {
				unsigned char b[256]; size_t n; bool fin = false;
				if (ev.kind == HAQUIC_EVENT_STREAM_FINISHED) cs[i].finished_ev = 1;
				while (haquic_stream_recv(ev.stream, b, sizeof(b), &n, &fin) == HAQUIC_OK && !fin) ;
				if (fin) cs[i].fin = 1;
			}
		}
		haquic_worker_process(p.cli, 0);
		move(&p, p.cli, 0, round);
		haquic_worker_process(p.srv, 0);
		while (haquic_worker_poll(p.srv, 0, &ev) == HAQUIC_OK) {
			if (ev.kind == HAQUIC_EVENT_REQUEST) {
				haquic_header h[2] = { { (const uint8_t *)":status", 7, (const uint8_t *)"200", 3 },
				                       { (const uint8_t *)"content-length", 14, (const uint8_t *)"1000", 4 } };
				haquic_stream_send_headers(ev.stream, h, 2, false);
				haquic_stream_reset(ev.stream, H3_REQUEST_CANCELLED);
			}
		}
		haquic_worker_process(p.srv, 0);
		move(&p, p.srv, 1, round);
		if (p.established && round % 3 == 0) {
			if (haquic_conn_send_request(p.conn, rq, 4, true, &cs[ncs].s) == HAQUIC_OK) ncs++;
		}
		if (round % 50 == 0) usleep(1000);
	}
out:
	for (int i = 0; i < ncs; i++)
		if (!cs[i].reset && (cs[i].fin || cs[i].finished_ev)) {
			bad++;
			if (bad <= 5) {
				fprintf(stderr, "stream %llu: resp %d reset %d fin %d events:", (unsigned long long)haquic_stream_id(cs[i].s),
				        cs[i].resp, cs[i].reset, cs[i].fin);
				for (int k = 0; k < cs[i].nev; k++) fprintf(stderr, " %d", cs[i].events[k]);
				fprintf(stderr, "\n");
			}
		}
	int resets = 0; for (int i = 0; i < ncs; i++) resets += cs[i].reset;
	fprintf(stderr, "%d requests, %d reset events, %d ended with FIN but no STREAM_RESET\n", ncs, resets, bad);
	for (int i = 0; i < ncs; i++) haquic_stream_unref(cs[i].s);
	pair_free(&p);
	return bad ? 1 : 0;
}
