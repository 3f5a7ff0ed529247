/*
 * A multi-threaded server: an engine with N workers on a host-fed listener,
 * each worker driven by its own thread that sleeps on an eventfd the wake
 * callback signals. The client engine (one worker) is driven by the calling
 * thread with mt_client_step(). Datagrams cross threads only through
 * haquic_listener_recv, as they would between HAProxy threads.
 *
 * The server answers every request with 200 and `response_size` bytes;
 * a request for "/goaway" also starts a graceful shutdown of its connection.
 */
#ifndef HAQUIC_TEST_MT_H
#define HAQUIC_TEST_MT_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include "common.h"

#define MT_MAX_WORKERS 8
#define MT_MAX_CONNS 256
#define MT_RING 256

struct mt;

#define MT_PENDING 512

/* A response the server is still sending (short writes resume on
 * HAQUIC_EVENT_STREAM_WRITABLE). */
struct mt_pending {
	const haquic_stream *s;   /* a reference while pending */
	size_t left;
	int headers_sent;
};

struct mt_worker {
	struct mt *m;
	uint32_t id;
	int efd;
	pthread_t th;
	int started;
	struct mt_pending pending[MT_PENDING];
	long dropped;             /* requests refused for lack of a slot */
	/* sockets mode: fds the engine handed this worker's thread */
	int fds[MT_MAX_CONNS + 8];
	uint32_t gens[MT_MAX_CONNS + 8];
	int nfds;
	long released;
};

#define MT_RELAYS 8

struct mt_conn {
	const haquic_conn *c;
	const haquic_stream *s[16];
	int ns;
	int established, closed, sent, responses, resets, goaway;
};

struct mt {
	const haquic_config *scfg, *ccfg;
	const haquic_engine *srv, *cli;
	const haquic_listener *sl, *cl;
	struct sockaddr_in saddr, caddr;
	uint32_t nworkers;
	struct mt_worker w[MT_MAX_WORKERS];
	atomic_int stop;
	size_t response_size;
	/* client side */
	struct mt_conn conns[MT_MAX_CONNS];
	int nconns;
	long responses, resets, closed;
	/* options for the storms */
	int rebind;            /* change the client's source port now and then */
	int replay;            /* re-inject old client datagrams from a 2nd thread */
	/* ring of recent client datagrams for the replayer */
	pthread_mutex_t ring_lock;
	unsigned char ring[MT_RING][1500];
	size_t ring_len[MT_RING];
	unsigned ring_next;
	pthread_t replayer;
	int replayer_started;
	atomic_long replayed;
	uint16_t src_port;
	/* sockets mode: real UDP, per-connection sockets on the server, the
	 * client host-fed through relay sockets (switching one is a rebinding) */
	int sockets;
	int relay_fd[MT_RELAYS];
	int relay_cur;
};

int mt_start(struct mt *m, uint32_t workers, size_t response_size, int rebind, int replay);
/* The same over real UDP on 127.0.0.1, the server with per-connection
 * sockets; `rebind` switches the client's relay socket now and then. */
int mt_start_sockets(struct mt *m, uint32_t workers, size_t response_size, int rebind);
/* Sockets released by the server after the host's confirmation. */
long mt_released(struct mt *m);
/* Drives the client once: process, events (counted in m), datagrams out. */
void mt_client_step(struct mt *m);
/* Opens a client connection; returns its index or -1. */
int mt_connect(struct mt *m);
/* Releases closed connections' slots; returns how many. */
int mt_reap(struct mt *m);
/* Sends a GET for `path` on connection i. */
int mt_get(struct mt *m, int i, const char *path);
void mt_stop(struct mt *m);
/* Seconds for a stress test: $HAQUIC_STRESS_SECONDS, default 2. */
int stress_seconds(void);
long long mt_now_ms(void);

#endif
