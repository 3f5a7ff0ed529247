/*
 * An in-process server and client: two engines on host-fed listeners, with
 * datagrams moved between them by pair_pump(). No sockets, no timing: tests
 * stay deterministic and fast. The server runs a small HTTP application
 * (app_*): GET /size/N answers N bytes of a known pattern, POST /echo sends
 * the request body back, GET /silent is never answered, anything else
 * answers "hello".
 */
#ifndef HAQUIC_TEST_PAIR_H
#define HAQUIC_TEST_PAIR_H

#include <netinet/in.h>
#include "common.h"

#define APP_MAX_STREAMS 2048

struct app_stream {
	const haquic_stream *s;
	int kind;              /* 0 unused, 1 hello, 2 size, 3 echo, 4 silent */
	uint64_t to_send;      /* size: bytes left */
	uint64_t sent;
	unsigned char *buf;    /* echo: bytes waiting to be sent */
	size_t buf_len, buf_off;
	int req_fin, headers_sent, done;
};

struct client_stream {
	const haquic_stream *s;
	int status;
	unsigned char *body;
	size_t body_len, body_cap;
	const unsigned char *upload;  /* request body to send */
	size_t upload_len, upload_off;
	int fin, reset;
	uint64_t reset_code;
};

struct pair {
	const haquic_config *scfg, *ccfg;
	const haquic_engine *srv, *cli;
	const haquic_listener *sl, *cl;
	struct sockaddr_in saddr, caddr;
	uint32_t srv_workers;
	const haquic_conn *conn;       /* the client connection, a reference */
	int established, closed;
	uint64_t close_code;
	int srv_closed;
	/* server application */
	struct app_stream app[APP_MAX_STREAMS];
	int app_requests, app_stop_sending, app_resets, app_trailers;
	/* client streams */
	struct client_stream cs[APP_MAX_STREAMS];
	int ncs;
	int drop_to_client, drop_to_server;  /* drop datagrams when set */
	int goaways;
	/* fds the server engine asked us to poll (FD_REGISTER/FD_RELEASE) */
	int fds[64];
	uint32_t gens[64];
	int nfds, fd_registered, fd_released;
	/* relay mode: the client is host-fed, its datagrams cross real UDP
	 * through relay socket relay_cur (switching it is a NAT rebinding) */
	int relay, relay_fd[2], relay_cur;
	/* optional observers: each server (client) event is shown to srv_hook
	 * (cli_hook) before the pair handles it; hook_arg is the test's */
	void (*srv_hook)(struct pair *p, uint32_t worker, const haquic_event *ev);
	void (*cli_hook)(struct pair *p, const haquic_event *ev);
	void *hook_arg;
};

#define PAIR_SOCKETS 1       /* engine-owned sockets on both sides */
#define PAIR_CONN_SOCKETS 2  /* and per-connection sockets on the server */
#define PAIR_RELAY 4         /* server on sockets, client host-fed via a UDP relay */

/* Sets up both engines; opts may be NULL. Returns 0 on success. */
int pair_init(struct pair *p, uint32_t srv_workers, const haquic_engine_options *srv_opts);
/* Same, with PAIR_* mode flags (real UDP on 127.0.0.1). */
int pair_init_mode(struct pair *p, uint32_t srv_workers, const haquic_engine_options *srv_opts, int mode);
/* Starts the client connection. */
int pair_connect(struct pair *p);
/* Moves datagrams and processes events until nothing moves; at most `rounds`
 * rounds. Returns the number of datagrams moved. */
int pair_pump(struct pair *p, int rounds);
/* Pumps until `cond` holds or `max_ms` pass, sleeping until the engines'
 * next timer when nothing moves. Evaluates to whether `cond` held. */
#define PAIR_UNTIL(p, cond, max_ms) ({ \
	long long deadline_ = pair_now_ms() + (max_ms); \
	while (!(cond) && pair_now_ms() < deadline_) \
		if (!pair_pump((p), 1)) \
			pair_idle((p)); \
	(cond); \
})
long long pair_now_ms(void);
/* Sleeps until the earliest engine timer (at most 5 ms). */
void pair_idle(struct pair *p);

/* Releases everything. */
void pair_free(struct pair *p);

/* Sends a request (GET when upload is NULL); returns the client stream index
 * or -1. */
int pair_request(struct pair *p, const char *method, const char *path, const unsigned char *upload, size_t upload_len);
/* Same, on another client connection of the pair's client engine. */
int pair_request_on(struct pair *p, const haquic_conn *conn, const char *method, const char *path,
                    const unsigned char *upload, size_t upload_len);

/* Fills a buffer with the test pattern. */
void pattern_fill(unsigned char *buf, size_t len, uint64_t offset);

#endif
