/*
 * Multi-threaded tests: a server engine with 4 workers, each driven by its own
 * thread, and the three crash classes of HAProxy 3.0.x as stress tests. Each
 * storm runs for $HAQUIC_STRESS_SECONDS (2 in `make test`, 60 in
 * `make stress`) with 4 worker threads on whatever cores there are.
 */
#include <stdlib.h>
#include <unistd.h>
#include "mt.h"

static void stats_of(const haquic_engine *e, haquic_stats *st)
{
	HAQUIC_STATS_INIT(st);
	haquic_engine_stats(e, st);
}

static int threads_200_connections_4_workers(void)
{
	struct mt m;
	haquic_stats st;
	long long deadline;
	int spread = 0, rc = 1;

	CHECK(mt_start(&m, 4, 1000, 0, 0) == 0);
	for (int i = 0; i < 200; i++)
		CHECK(mt_connect(&m) == i);
	deadline = mt_now_ms() + 60000;
	while (m.responses < 200 && mt_now_ms() < deadline) {
		for (int i = 0; i < m.nconns; i++)
			if (m.conns[i].established && !m.conns[i].sent)
				mt_get(&m, i, "/");
		mt_client_step(&m);
		usleep(200);
	}
	CHECK(m.responses == 200);
	stats_of(m.srv, &st);
	CHECK(st.handshakes == 200 && st.requests == 200 && st.wrong_thread_calls == 0);
	for (uint32_t w = 0; w < 4; w++) {
		haquic_stats ws;

		HAQUIC_STATS_INIT(&ws);
		CHECK_RESULT(haquic_worker_stats(m.srv, w, &ws), HAQUIC_OK);
		if (ws.conns_accepted > 0)
			spread++;
	}
	/* client Initial IDs hash to workers: all four get connections */
	CHECK(spread == 4);
	rc = 0;
cleanup:
	mt_stop(&m);
	return rc;
}

/* Connections close while datagrams for their IDs keep arriving, from another
 * thread, on any worker: the 3.0.0-3.0.2 dispatcher race. Nothing may touch a
 * freed connection; stale datagrams are dropped or answered with a reset, and
 * counted. */
static int stress_dispatch_storm(void)
{
	struct mt m;
	haquic_stats st;
	long long end;
	int rc = 1, last;

	CHECK(mt_start(&m, 4, 200, 0, 1) == 0);
	end = mt_now_ms() + stress_seconds() * 1000LL;
	while (mt_now_ms() < end) {
		int open = 0;

		for (int i = 0; i < m.nconns; i++) {
			struct mt_conn *c = &m.conns[i];

			if (!c->c || c->closed)
				continue;
			open++;
			if (c->established && !c->sent)
				mt_get(&m, i, "/");
			else if (c->responses && !haquic_conn_is_closed(c->c))
				haquic_conn_close(c->c, 0x100, NULL, 0);
		}
		for (; open < 24; open++)
			if (mt_connect(&m) < 0)
				break;
		mt_client_step(&m);
		mt_reap(&m);
		usleep(100);
	}
	/* the engine still serves after the storm */
	last = mt_connect(&m);
	CHECK(last >= 0);
	end = mt_now_ms() + 20000;
	while (!m.conns[last].responses && mt_now_ms() < end) {
		if (m.conns[last].established && !m.conns[last].sent)
			mt_get(&m, last, "/");
		mt_client_step(&m);
		usleep(200);
	}
	CHECK(m.conns[last].responses == 1);
	stats_of(m.srv, &st);
	fprintf(stderr, "    dispatch storm: %lld s, %ld responses, %ld datagrams replayed, %llu handshakes, "
	        "%llu unknown-CID drops, %llu resets sent, %llu queue-full drops\n",
	        (long long)stress_seconds(), m.responses, (long)atomic_load(&m.replayed),
	        (unsigned long long)st.handshakes, (unsigned long long)st.drop_unknown_cid,
	        (unsigned long long)st.resets_sent, (unsigned long long)st.drop_queue_full);
	CHECK(m.responses > 10 && atomic_load(&m.replayed) > 100);
	CHECK(st.wrong_thread_calls == 0);
	rc = 0;
cleanup:
	mt_stop(&m);
	return rc;
}

/* Clients change their source port all the time (NAT rebinding) while
 * requests run, over real UDP, with a per-connection socket for every
 * connection on the server: each change of path is validated, and the old
 * connected socket is released in two phases (FD_RELEASE, then the worker
 * thread's confirmation) while datagrams keep arriving. */
static int stress_rebind_storm(void)
{
	struct mt m;
	haquic_stats st;
	long long end;
	int rc = 1;

	CHECK(mt_start_sockets(&m, 4, 4000, 1) == 0);
	end = mt_now_ms() + stress_seconds() * 1000LL;
	while (mt_now_ms() < end) {
		int open = 0;

		for (int i = 0; i < m.nconns; i++) {
			struct mt_conn *c = &m.conns[i];

			if (!c->c || c->closed)
				continue;
			open++;
			if (c->established && c->responses == c->sent && c->sent < 16)
				mt_get(&m, i, "/");
			else if (c->sent == 16 && c->responses == 16 && !haquic_conn_is_closed(c->c))
				haquic_conn_close(c->c, 0x100, NULL, 0);
		}
		for (; open < 16; open++)
			if (mt_connect(&m) < 0)
				break;
		mt_client_step(&m);
		mt_reap(&m);
		usleep(100);
	}
	stats_of(m.srv, &st);
	fprintf(stderr, "    rebind storm: %lld s, %ld responses, %llu migrations, %llu handshakes, "
	        "%llu per-connection sockets, %llu released, %llu stale fd notifications, "
	        "%llu connections dropped after a panic\n",
	        (long long)stress_seconds(), m.responses, (unsigned long long)st.migrations,
	        (unsigned long long)st.handshakes, (unsigned long long)st.conn_sockets_opened,
	        (unsigned long long)st.fds_released, (unsigned long long)st.stale_fd_notifications,
	        (unsigned long long)st.conn_panics);
	CHECK(m.responses > 10);
	CHECK(st.migrations > 0);
	CHECK(st.conn_sockets_opened > 0 && st.fds_released > 0);
	CHECK(st.wrong_thread_calls == 0);
	rc = 0;
cleanup:
	mt_stop(&m);
	return rc;
}

#ifdef HAQUIC_TEST_HOOKS
/* GOAWAY with STOP_SENDING or RESET_STREAM as the first frame of new streams,
 * before and after GOAWAY: the 3.0.2 h3_close() NULL dereference. In-flight
 * requests complete, the aborted streams are answered and counted, and the
 * connection closes cleanly. */
static int stress_goaway_stop_sending(void)
{
	struct mt m;
	haquic_stats st;
	long long end;
	long rounds = 0, clean_closes = 0;
	int rc = 1;

	CHECK(mt_start(&m, 4, 20000, 0, 0) == 0);
	end = mt_now_ms() + stress_seconds() * 1000LL;
	while (mt_now_ms() < end) {
		int open = 0;

		for (int i = 0; i < m.nconns; i++) {
			struct mt_conn *c = &m.conns[i];

			if (!c->c || c->closed)
				continue;
			open++;
			if (c->established && c->sent == 0) {
				/* in flight, then aborts before GOAWAY, then GOAWAY */
				mt_get(&m, i, "/");
				haquic_test_raw_stream_abort(c->c, 200, true, 0x10c);
				haquic_test_raw_stream_abort(c->c, 204, false, 0x10c);
				mt_get(&m, i, "/goaway");
			} else if (c->goaway && c->sent == 2) {
				/* after GOAWAY: more streams whose first frame aborts */
				haquic_test_raw_stream_abort(c->c, 300, true, 0x10c);
				haquic_test_raw_stream_abort(c->c, 304, false, 0x10c);
				c->sent++;
				rounds++;
			}
		}
		for (; open < 16; open++)
			if (mt_connect(&m) < 0)
				break;
		mt_client_step(&m);
		for (int i = 0; i < m.nconns; i++)
			if (m.conns[i].c && m.conns[i].closed && m.conns[i].responses == 2)
				clean_closes++;
		mt_reap(&m);
		usleep(100);
	}
	stats_of(m.srv, &st);
	fprintf(stderr, "    goaway storm: %lld s, %ld rounds, %ld drained closes, %ld responses, "
	        "%llu aborted-before-headers streams\n",
	        (long long)stress_seconds(), rounds, clean_closes, m.responses,
	        (unsigned long long)st.streams_aborted_before_headers);
	CHECK(rounds > 3 && clean_closes > 3);
	CHECK(st.streams_aborted_before_headers > 0);
	CHECK(st.wrong_thread_calls == 0);
	rc = 0;
cleanup:
	mt_stop(&m);
	return rc;
}

#endif

const struct test_case thread_tests[] = {
	{ "threads_200_connections_4_workers", threads_200_connections_4_workers },
	{ "stress_dispatch_storm", stress_dispatch_storm },
	{ "stress_rebind_storm", stress_rebind_storm },
#ifdef HAQUIC_TEST_HOOKS
	{ "stress_goaway_stop_sending", stress_goaway_stop_sending },
#endif
	{ NULL, NULL },
};
