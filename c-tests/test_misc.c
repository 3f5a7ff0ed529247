/*
 * Version, result codes, refcounts across threads, and the panic boundary.
 */
#include <pthread.h>
#include <stdlib.h>
#include "common.h"

static int version_matches_header(void)
{
	char expect[32];
	int rc = 1;

	CHECK(haquic_version() == HAQUIC_VERSION_NUMBER);
	snprintf(expect, sizeof(expect), "%d.%d.%d", HAQUIC_VERSION_MAJOR, HAQUIC_VERSION_MINOR,
	         HAQUIC_VERSION_PATCH);
	CHECK(strcmp(haquic_version_string(), expect) == 0);
	CHECK_STR_CONTAINS(haquic_build_info(), expect);
	CHECK_STR_CONTAINS(haquic_build_info(), "quiche 0.");
	rc = 0;
cleanup:
	return rc;
}

static int strerror_every_code(void)
{
	int rc = 1;
	const char *unknown = haquic_strerror(-1);

	CHECK(unknown != NULL);
	CHECK_STR_CONTAINS(unknown, "unknown");
	CHECK(strcmp(haquic_strerror(HAQUIC_OK), "success") == 0);
	for (int i = HAQUIC_OK; i <= HAQUIC_ERR_INVALID_STATE; i++) {
		const char *s = haquic_strerror(i);

		CHECK(s != NULL && s[0] != 0);
		CHECK(strcmp(s, unknown) != 0);
		for (int j = HAQUIC_OK; j < i; j++)
			CHECK(strcmp(s, haquic_strerror(j)) != 0);
	}
	CHECK(strcmp(haquic_strerror(HAQUIC_ERR_INVALID_STATE + 1), unknown) == 0);
	CHECK(strcmp(haquic_strerror(1 << 30), unknown) == 0);
	rc = 0;
cleanup:
	return rc;
}

#define REF_THREADS 8
#define REF_ROUNDS 20000

static void *ref_worker(void *arg)
{
	const haquic_config *cfg = arg;

	for (int i = 0; i < REF_ROUNDS; i++) {
		const haquic_config *r = haquic_config_ref(cfg);

		haquic_config_set_idle_timeout(r, 1000 + (i % 1000));
		haquic_config_unref(r);
	}
	/* drop the reference the main thread gave this worker */
	haquic_config_unref(cfg);
	return NULL;
}

/* References taken and dropped concurrently: the object dies exactly once,
 * when the last one goes. */
static int refcount_across_threads(void)
{
	const haquic_config *cfg = haquic_config_new();
	pthread_t th[REF_THREADS];
	int started = 0, rc = 1;

	for (; started < REF_THREADS; started++)
		if (pthread_create(&th[started], NULL, ref_worker, (void *)haquic_config_ref(cfg)) != 0)
			FAILF("pthread_create failed");
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	started = 0;
	CHECK(haquic_live_objects() == 1);
	haquic_config_unref(cfg);
	cfg = NULL;
	CHECK(haquic_live_objects() == 0);
	rc = 0;
cleanup:
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	haquic_config_unref(cfg);
	return rc;
}

#ifdef HAQUIC_TEST_HOOKS
static int panic_becomes_result_code(void)
{
	int rc = 1;

	CHECK_RESULT(haquic_test_panic(), HAQUIC_ERR_PANIC);
	/* the library still works afterwards */
	CHECK_RESULT(haquic_test_panic(), HAQUIC_ERR_PANIC);
	CHECK(haquic_version() == HAQUIC_VERSION_NUMBER);
	rc = 0;
cleanup:
	return rc;
}

/* A panic inside a configuration update, with its lock held: the call
 * returns HAQUIC_ERR_PANIC, the configuration refuses later work with the same
 * code and says why, other configurations are unaffected, and it still frees. */
static int panic_poisons_only_that_config(void)
{
	const haquic_config *cfg = haquic_config_new();
	const haquic_config *other = haquic_config_new();
	haquic_limits l;
	int rc = 1;

	haquic_test_inject_config_panic();
	CHECK_RESULT(haquic_config_set_cc_algorithm(cfg, "reno"), HAQUIC_ERR_PANIC);
	CHECK_RESULT(haquic_config_set_cc_algorithm(cfg, "reno"), HAQUIC_ERR_PANIC);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "panic");
	CHECK_RESULT(HAQUIC_LIMITS_INIT(&l), HAQUIC_OK);
	CHECK_RESULT(haquic_config_get_limits(cfg, &l), HAQUIC_ERR_PANIC);
	CHECK(haquic_config_get_cc_algorithm(cfg) == NULL);
	CHECK_RESULT(haquic_config_set_cc_algorithm(other, "reno"), HAQUIC_OK);
	CHECK(strcmp(haquic_config_get_cc_algorithm(other), "reno") == 0);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	haquic_config_unref(other);
	return rc;
}
#endif

const struct test_case misc_tests[] = {
	{ "version_matches_header", version_matches_header },
	{ "strerror_every_code", strerror_every_code },
	{ "refcount_across_threads", refcount_across_threads },
#ifdef HAQUIC_TEST_HOOKS
	{ "panic_becomes_result_code", panic_becomes_result_code },
	{ "panic_poisons_only_that_config", panic_poisons_only_that_config },
#endif
	{ NULL, NULL },
};
