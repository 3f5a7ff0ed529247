/*
 * Configuration tests: happy paths, and every bad-input path of every setter.
 */
#include <stdlib.h>
#include "common.h"

static int cfg_new_ref_unref_counts(void)
{
	const haquic_config *cfg = haquic_config_new();
	const haquic_config *again = NULL;
	int rc = 1;

	CHECK(cfg != NULL);
	CHECK(haquic_live_objects() == 1);
	again = haquic_config_ref(cfg);
	CHECK(again == cfg);
	haquic_config_unref(cfg);
	/* one reference left: still alive and usable */
	CHECK(haquic_live_objects() == 1);
	CHECK_RESULT(haquic_config_set_idle_timeout(again, 1000), HAQUIC_OK);
	haquic_config_unref(again);
	again = NULL;
	cfg = NULL;
	CHECK(haquic_live_objects() == 0);
	rc = 0;
cleanup:
	haquic_config_unref(again);
	return rc;
}

static int cfg_unref_null_is_noop(void)
{
	haquic_config_unref(NULL);
	return haquic_config_ref(NULL) == NULL ? 0 : 1;
}

static int cfg_null_config_everywhere(void)
{
	haquic_limits limits;
	uint8_t buf[64];
	char text[64];
	size_t len = 0;
	const char *alpn[] = { "h3" };
	int rc = 1;

	CHECK_RESULT(HAQUIC_LIMITS_INIT(&limits), HAQUIC_OK);
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(NULL, "a", "b"), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_load_cert_chain_and_key_pem(NULL, buf, 1, buf, 1), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_alpn(NULL, alpn, 1), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_alpn_wire(NULL, (const uint8_t *)"\x02h3", 3), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_get_alpn_wire(NULL, buf, sizeof(buf), &len), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_limits(NULL, &limits), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_get_limits(NULL, &limits), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_idle_timeout(NULL, 1000), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_cc_algorithm(NULL, "cubic"), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_get_certificate_subject(NULL, text, sizeof(text), &len), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_check(NULL), HAQUIC_ERR_NULL);
	CHECK(haquic_config_get_cc_algorithm(NULL) == NULL);
	CHECK(haquic_config_last_error(NULL) == NULL);
	CHECK_RESULT(haquic_limits_init(NULL, sizeof(limits)), HAQUIC_ERR_NULL);
	CHECK(len == 0);
	rc = 0;
cleanup:
	return rc;
}

static int cfg_null_arguments_name_the_argument(void)
{
	const haquic_config *cfg = haquic_config_new();
	uint8_t buf[64];
	size_t len = 7;
	int rc = 1;

	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, NULL, fixture("leaf.key")), HAQUIC_ERR_NULL);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "cert_path");
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), NULL), HAQUIC_ERR_NULL);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "key_path");
	CHECK_RESULT(haquic_config_load_cert_chain_and_key_pem(cfg, NULL, 0, buf, 1), HAQUIC_ERR_NULL);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "cert_pem");
	CHECK_RESULT(haquic_config_load_cert_chain_and_key_pem(cfg, buf, 1, NULL, 0), HAQUIC_ERR_NULL);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "key_pem");
	CHECK_RESULT(haquic_config_set_alpn(cfg, NULL, 1), HAQUIC_ERR_NULL);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "protocols");
	CHECK_RESULT(haquic_config_set_alpn_wire(cfg, NULL, 3), HAQUIC_ERR_NULL);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "wire");
	CHECK_RESULT(haquic_config_set_limits(cfg, NULL), HAQUIC_ERR_NULL);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "limits");
	CHECK_RESULT(haquic_config_set_cc_algorithm(cfg, NULL), HAQUIC_ERR_NULL);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "name");
	/* a NULL entry inside the ALPN array */
	{
		const char *alpn[] = { "h3", NULL };
		CHECK_RESULT(haquic_config_set_alpn(cfg, alpn, 2), HAQUIC_ERR_NULL);
	}
	/* output pointers */
	CHECK_RESULT(haquic_config_get_alpn_wire(cfg, NULL, 10, &len), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_get_alpn_wire(cfg, buf, sizeof(buf), NULL), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_get_limits(cfg, NULL), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_get_certificate_subject(cfg, NULL, 10, &len), HAQUIC_ERR_NULL);
	CHECK(len == 7);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

/* Loads leaf.crt/leaf.key; checks the subject is CN=haquic.test. */
static int cfg_load_cert_and_key_files(void)
{
	const haquic_config *cfg = haquic_config_new();
	char subject[128];
	size_t len = 0;
	int rc = 1;

	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), fixture("leaf.key")), HAQUIC_OK);
	CHECK(strcmp(haquic_config_last_error(cfg), "") == 0);
	CHECK_RESULT(haquic_config_get_certificate_subject(cfg, subject, sizeof(subject), &len), HAQUIC_OK);
	CHECK(len == strlen("CN=haquic.test") && memcmp(subject, "CN=haquic.test", len) == 0);
	CHECK_RESULT(haquic_config_check(cfg), HAQUIC_OK);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_load_combined_pem(void)
{
	const haquic_config *cfg = haquic_config_new();
	int rc = 1;

	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("combined.pem"), fixture("combined.pem")), HAQUIC_OK);
	CHECK_RESULT(haquic_config_check(cfg), HAQUIC_OK);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_load_chain_and_rsa(void)
{
	const haquic_config *cfg = haquic_config_new();
	char subject[128];
	size_t len = 0;
	int rc = 1;

	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("chain.pem"), fixture("leaf.key")), HAQUIC_OK);
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("rsa.crt"), fixture("rsa.key")), HAQUIC_OK);
	CHECK_RESULT(haquic_config_get_certificate_subject(cfg, subject, sizeof(subject), &len), HAQUIC_OK);
	CHECK(len == strlen("CN=rsa.haquic.test") && memcmp(subject, "CN=rsa.haquic.test", len) == 0);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_missing_cert_file_names_path(void)
{
	const haquic_config *cfg = haquic_config_new();
	int rc = 1;

	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, "/nonexistent/haquic/cert.pem", fixture("leaf.key")),
	             HAQUIC_ERR_FILE_NOT_FOUND);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "/nonexistent/haquic/cert.pem");
	CHECK_RESULT(haquic_config_check(cfg), HAQUIC_ERR_INCOMPLETE_CONFIG);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_missing_key_file_names_path(void)
{
	const haquic_config *cfg = haquic_config_new();
	int rc = 1;

	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), "/nonexistent/haquic/key.pem"),
	             HAQUIC_ERR_FILE_NOT_FOUND);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "/nonexistent/haquic/key.pem");
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "private key");
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_unreadable_cert_file(void)
{
	const haquic_config *cfg = haquic_config_new();
	int rc = 1;

	/* a directory exists but cannot be read as a file (root reads any file) */
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixtures_dir, fixture("leaf.key")),
	             HAQUIC_ERR_FILE_UNREADABLE);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), fixtures_dir);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_bad_certificate_pem(void)
{
	const haquic_config *cfg = haquic_config_new();
	const char *bad[] = { "garbage.pem", "empty.pem", "truncated.crt", "leaf.key" };
	int rc = 1;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture(bad[i]), fixture("leaf.key")),
		             HAQUIC_ERR_BAD_CERTIFICATE);
		CHECK_STR_CONTAINS(haquic_config_last_error(cfg), bad[i]);
	}
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_bad_private_key_pem(void)
{
	const haquic_config *cfg = haquic_config_new();
	const char *bad[] = { "garbage.pem", "empty.pem", "corrupt.key", "leaf.crt" };
	int rc = 1;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), fixture(bad[i])),
		             HAQUIC_ERR_BAD_PRIVATE_KEY);
		CHECK_STR_CONTAINS(haquic_config_last_error(cfg), bad[i]);
	}
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_key_mismatch_names_both_files(void)
{
	const haquic_config *cfg = haquic_config_new();
	int rc = 1;

	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), fixture("other.key")),
	             HAQUIC_ERR_KEY_MISMATCH);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "other.key");
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "leaf.crt");
	/* an RSA key against an EC certificate */
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), fixture("rsa.key")),
	             HAQUIC_ERR_KEY_MISMATCH);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_failed_load_keeps_previous_identity(void)
{
	const haquic_config *cfg = haquic_config_new();
	char subject[128];
	size_t len = 0;
	int rc = 1;

	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), fixture("leaf.key")), HAQUIC_OK);
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("rsa.crt"), fixture("leaf.key")),
	             HAQUIC_ERR_KEY_MISMATCH);
	CHECK_RESULT(haquic_config_get_certificate_subject(cfg, subject, sizeof(subject), &len), HAQUIC_OK);
	CHECK(len == strlen("CN=haquic.test") && memcmp(subject, "CN=haquic.test", len) == 0);
	CHECK_RESULT(haquic_config_check(cfg), HAQUIC_OK);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_load_from_memory(void)
{
	const haquic_config *cfg = haquic_config_new();
	unsigned char *cert = NULL, *key = NULL, *other = NULL;
	size_t cert_len = 0, key_len = 0, other_len = 0;
	int rc = 1;

	cert = read_file(fixture("chain.pem"), &cert_len);
	key = read_file(fixture("leaf.key"), &key_len);
	other = read_file(fixture("other.key"), &other_len);
	CHECK(cert && key && other);
	CHECK_RESULT(haquic_config_load_cert_chain_and_key_pem(cfg, cert, cert_len, key, key_len), HAQUIC_OK);
	CHECK_RESULT(haquic_config_load_cert_chain_and_key_pem(cfg, cert, cert_len, other, other_len),
	             HAQUIC_ERR_KEY_MISMATCH);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "<memory>");
	CHECK_RESULT(haquic_config_load_cert_chain_and_key_pem(cfg, key, key_len, key, key_len),
	             HAQUIC_ERR_BAD_CERTIFICATE);
	/* a buffer cut short: only the first half of the certificate */
	CHECK_RESULT(haquic_config_load_cert_chain_and_key_pem(cfg, cert, cert_len / 4, key, key_len),
	             HAQUIC_ERR_BAD_CERTIFICATE);
	rc = 0;
cleanup:
	free(cert);
	free(key);
	free(other);
	haquic_config_unref(cfg);
	return rc;
}

/* Key-exchange groups (HAProxy's curves): known names are taken, unknown or
 * empty lists are refused with a reason and change nothing. */
static int cfg_curves(void)
{
	const haquic_config *cfg = haquic_config_new();
	int rc = 1;

	CHECK_RESULT(haquic_config_set_curves(cfg, "X25519:P-256"), HAQUIC_OK);
	CHECK_RESULT(haquic_config_set_curves(cfg, "X25519MLKEM768:X25519"), HAQUIC_OK);
	CHECK_RESULT(haquic_config_set_curves(cfg, "X25519:brainpool9"), HAQUIC_ERR_INVALID_ARGUMENT);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "X25519:brainpool9");
	CHECK_RESULT(haquic_config_set_curves(cfg, ""), HAQUIC_ERR_INVALID_ARGUMENT);
	CHECK_RESULT(haquic_config_set_curves(cfg, NULL), HAQUIC_ERR_NULL);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "curves");
	CHECK_RESULT(haquic_config_set_curves(NULL, "X25519"), HAQUIC_ERR_NULL);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_alpn_list(void)
{
	const haquic_config *cfg = haquic_config_new();
	const char *two[] = { "h3", "h3-29" };
	uint8_t wire[HAQUIC_ALPN_WIRE_MAX];
	size_t len = 0;
	int rc = 1;

	/* default: h3 */
	CHECK_RESULT(haquic_config_get_alpn_wire(cfg, wire, sizeof(wire), &len), HAQUIC_OK);
	CHECK(len == 3 && memcmp(wire, "\x02h3", 3) == 0);
	CHECK_RESULT(haquic_config_set_alpn(cfg, two, 2), HAQUIC_OK);
	CHECK_RESULT(haquic_config_get_alpn_wire(cfg, wire, sizeof(wire), &len), HAQUIC_OK);
	CHECK(len == 9 && memcmp(wire, "\x02h3\x05h3-29", 9) == 0);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_alpn_bad_lists(void)
{
	const haquic_config *cfg = haquic_config_new();
	char longp[300];
	const char *empty_entry[] = { "h3", "" };
	const char *too_long[] = { longp };
	const char *nonprint[] = { "h\x01" "3" };
	const char *many[17];
	uint8_t wire[16];
	size_t len = 0;
	int rc = 1;

	memset(longp, 'a', 256);
	longp[256] = 0;
	for (int i = 0; i < 17; i++)
		many[i] = "h3";
	CHECK_RESULT(haquic_config_set_alpn(cfg, empty_entry, 0), HAQUIC_ERR_BAD_ALPN);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "empty");
	CHECK_RESULT(haquic_config_set_alpn(cfg, empty_entry, 2), HAQUIC_ERR_BAD_ALPN);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "entry 2");
	CHECK_RESULT(haquic_config_set_alpn(cfg, too_long, 1), HAQUIC_ERR_BAD_ALPN);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "256");
	CHECK_RESULT(haquic_config_set_alpn(cfg, nonprint, 1), HAQUIC_ERR_BAD_ALPN);
	CHECK_RESULT(haquic_config_set_alpn(cfg, many, 17), HAQUIC_ERR_BAD_ALPN);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "17 entries");
	/* the list is unchanged: still the default h3 */
	CHECK_RESULT(haquic_config_get_alpn_wire(cfg, wire, sizeof(wire), &len), HAQUIC_OK);
	CHECK(len == 3 && memcmp(wire, "\x02h3", 3) == 0);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_alpn_wire_format(void)
{
	const haquic_config *cfg = haquic_config_new();
	uint8_t wire[16];
	size_t len = 0;
	int rc = 1;

	CHECK_RESULT(haquic_config_set_alpn_wire(cfg, (const uint8_t *)"\x02h3\x08http/1.1", 12), HAQUIC_OK);
	CHECK_RESULT(haquic_config_get_alpn_wire(cfg, wire, sizeof(wire), &len), HAQUIC_OK);
	CHECK(len == 12 && memcmp(wire, "\x02h3\x08http/1.1", 12) == 0);
	CHECK_RESULT(haquic_config_set_alpn_wire(cfg, (const uint8_t *)"\x05h3", 3), HAQUIC_ERR_BAD_ALPN);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "truncated");
	CHECK_RESULT(haquic_config_set_alpn_wire(cfg, (const uint8_t *)"\x02h3\x00", 4), HAQUIC_ERR_BAD_ALPN);
	CHECK_RESULT(haquic_config_set_alpn_wire(cfg, (const uint8_t *)"", 0), HAQUIC_ERR_BAD_ALPN);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_alpn_buffer_too_small_writes_nothing(void)
{
	const haquic_config *cfg = haquic_config_new();
	uint8_t wire[4] = { 0xaa, 0xaa, 0xaa, 0xaa };
	size_t len = 99;
	char subject[4] = "xyz";
	int rc = 1;

	CHECK_RESULT(haquic_config_set_alpn_wire(cfg, (const uint8_t *)"\x02h3\x05h3-29", 9), HAQUIC_OK);
	CHECK_RESULT(haquic_config_get_alpn_wire(cfg, wire, sizeof(wire), &len), HAQUIC_ERR_BUFFER_TOO_SMALL);
	CHECK(len == 99 && wire[0] == 0xaa && wire[3] == 0xaa);
	CHECK_RESULT(haquic_config_get_certificate_subject(cfg, subject, sizeof(subject), &len),
	             HAQUIC_ERR_INCOMPLETE_CONFIG);
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), fixture("leaf.key")), HAQUIC_OK);
	CHECK_RESULT(haquic_config_get_certificate_subject(cfg, subject, sizeof(subject), &len),
	             HAQUIC_ERR_BUFFER_TOO_SMALL);
	CHECK(len == 99 && strcmp(subject, "xyz") == 0);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_limits_defaults_and_roundtrip(void)
{
	const haquic_config *cfg = haquic_config_new();
	haquic_limits l, got;
	int rc = 1;

	CHECK_RESULT(HAQUIC_LIMITS_INIT(&l), HAQUIC_OK);
	CHECK(l.struct_size == sizeof(l));
	CHECK(l.idle_timeout_ms == 30000);
	CHECK(l.max_streams_bidi == 100);
	CHECK(l.max_streams_uni == 3);
	CHECK(l.max_udp_payload_size == 1452);
	l.idle_timeout_ms = 5000;
	l.max_streams_bidi = 1000;
	l.initial_max_data = 32 << 20;
	l.max_field_section_size = 32768;
	CHECK_RESULT(haquic_config_set_limits(cfg, &l), HAQUIC_OK);
	CHECK_RESULT(HAQUIC_LIMITS_INIT(&got), HAQUIC_OK);
	CHECK_RESULT(haquic_config_get_limits(cfg, &got), HAQUIC_OK);
	CHECK(memcmp(&l, &got, sizeof(l)) == 0);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

/* Each field, just outside both edges of its range, is rejected with a reason
 * naming it, and the configuration keeps its previous limits. */
static int cfg_limits_out_of_range(void)
{
	const haquic_config *cfg = haquic_config_new();
	struct { const char *name; size_t off; uint64_t lo, hi; } f[] = {
#define F(n, lo, hi) { #n, offsetof(haquic_limits, n), lo, hi }
		F(idle_timeout_ms, 1, 3600000),
		F(max_streams_bidi, 1, 65536),
		F(max_streams_uni, 3, 1024),
		F(initial_max_data, 1024, 1 << 30),
		F(initial_max_stream_data_bidi_local, 1024, 1 << 30),
		F(initial_max_stream_data_bidi_remote, 1024, 1 << 30),
		F(initial_max_stream_data_uni, 1024, 1 << 30),
		F(max_field_section_size, 256, 16 << 20),
		F(max_udp_payload_size, 1200, 65527),
#undef F
	};
	haquic_limits base, l, got;
	int rc = 1;

	CHECK_RESULT(HAQUIC_LIMITS_INIT(&base), HAQUIC_OK);
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		uint64_t bad[2] = { f[i].lo - 1, f[i].hi + 1 };
		uint64_t good[2] = { f[i].lo, f[i].hi };

		for (int j = 0; j < 2; j++) {
			l = base;
			memcpy((char *)&l + f[i].off, &bad[j], sizeof(uint64_t));
			CHECK_RESULT(haquic_config_set_limits(cfg, &l), HAQUIC_ERR_OUT_OF_RANGE);
			CHECK_STR_CONTAINS(haquic_config_last_error(cfg), f[i].name);
			l = base;
			memcpy((char *)&l + f[i].off, &good[j], sizeof(uint64_t));
			CHECK_RESULT(haquic_config_set_limits(cfg, &l), HAQUIC_OK);
			CHECK_RESULT(haquic_config_set_limits(cfg, &base), HAQUIC_OK);
		}
	}
	l = base;
	l.max_streams_bidi = 7;
	CHECK_RESULT(haquic_config_set_limits(cfg, &l), HAQUIC_OK);
	l.initial_max_data = 0;
	CHECK_RESULT(haquic_config_set_limits(cfg, &l), HAQUIC_ERR_OUT_OF_RANGE);
	CHECK_RESULT(HAQUIC_LIMITS_INIT(&got), HAQUIC_OK);
	CHECK_RESULT(haquic_config_get_limits(cfg, &got), HAQUIC_OK);
	CHECK(got.max_streams_bidi == 7 && got.initial_max_data == base.initial_max_data);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_limits_struct_size_and_reserved(void)
{
	const haquic_config *cfg = haquic_config_new();
	haquic_limits l;
	int rc = 1;

	CHECK_RESULT(haquic_limits_init(&l, sizeof(l) - 8), HAQUIC_ERR_STRUCT_SIZE);
	CHECK_RESULT(haquic_limits_init(&l, sizeof(l) + 8), HAQUIC_ERR_STRUCT_SIZE);
	CHECK_RESULT(HAQUIC_LIMITS_INIT(&l), HAQUIC_OK);
	l.struct_size = 0;
	CHECK_RESULT(haquic_config_set_limits(cfg, &l), HAQUIC_ERR_STRUCT_SIZE);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "struct_size");
	CHECK_RESULT(haquic_config_get_limits(cfg, &l), HAQUIC_ERR_STRUCT_SIZE);
	l.struct_size = sizeof(l);
	l.reserved = 1;
	CHECK_RESULT(haquic_config_set_limits(cfg, &l), HAQUIC_ERR_INVALID_ARGUMENT);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "reserved");
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_idle_timeout(void)
{
	const haquic_config *cfg = haquic_config_new();
	haquic_limits l;
	int rc = 1;

	CHECK_RESULT(haquic_config_set_idle_timeout(cfg, 0), HAQUIC_ERR_OUT_OF_RANGE);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "idle_timeout_ms = 0");
	CHECK_RESULT(haquic_config_set_idle_timeout(cfg, 3600001), HAQUIC_ERR_OUT_OF_RANGE);
	CHECK_RESULT(haquic_config_set_idle_timeout(cfg, 12345), HAQUIC_OK);
	CHECK(strcmp(haquic_config_last_error(cfg), "") == 0);
	CHECK_RESULT(HAQUIC_LIMITS_INIT(&l), HAQUIC_OK);
	CHECK_RESULT(haquic_config_get_limits(cfg, &l), HAQUIC_OK);
	CHECK(l.idle_timeout_ms == 12345);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_cc_algorithms(void)
{
	const haquic_config *cfg = haquic_config_new();
	struct { const char *in, *canon; } ok[] = {
		{ "cubic", "cubic" }, { "newreno", "reno" }, { "reno", "reno" },
		{ "bbr", "bbr2" }, { "BBR2", "bbr2" }, { "Cubic", "cubic" },
	};
	int rc = 1;

	CHECK(strcmp(haquic_config_get_cc_algorithm(cfg), "cubic") == 0);
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		CHECK_RESULT(haquic_config_set_cc_algorithm(cfg, ok[i].in), HAQUIC_OK);
		CHECK(strcmp(haquic_config_get_cc_algorithm(cfg), ok[i].canon) == 0);
	}
	CHECK_RESULT(haquic_config_set_cc_algorithm(cfg, "vegas"), HAQUIC_ERR_UNKNOWN_CC_ALGORITHM);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "vegas");
	CHECK_RESULT(haquic_config_set_cc_algorithm(cfg, ""), HAQUIC_ERR_UNKNOWN_CC_ALGORITHM);
	CHECK_RESULT(haquic_config_set_cc_algorithm(cfg, "\xff\xfe"), HAQUIC_ERR_NOT_UTF8);
	/* unchanged by the failures */
	CHECK(strcmp(haquic_config_get_cc_algorithm(cfg), "cubic") == 0);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_check_requires_certificate(void)
{
	const haquic_config *cfg = haquic_config_new();
	int rc = 1;

	CHECK_RESULT(haquic_config_check(cfg), HAQUIC_ERR_INCOMPLETE_CONFIG);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "no certificate");
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), fixture("leaf.key")), HAQUIC_OK);
	CHECK_RESULT(haquic_config_set_cc_algorithm(cfg, "bbr2"), HAQUIC_OK);
	CHECK_RESULT(haquic_config_check(cfg), HAQUIC_OK);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

static int cfg_secret_0rtt_pacing_verify(void)
{
	const haquic_config *cfg = haquic_config_new();
	unsigned char big[1025];
	int rc = 1;

	memset(big, 7, sizeof(big));
	CHECK_RESULT(haquic_config_set_cluster_secret(NULL, big, 8), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_cluster_secret(cfg, NULL, 8), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_cluster_secret(cfg, big, 0), HAQUIC_ERR_OUT_OF_RANGE);
	CHECK_RESULT(haquic_config_set_cluster_secret(cfg, big, sizeof(big)), HAQUIC_ERR_OUT_OF_RANGE);
	CHECK_STR_CONTAINS(haquic_config_last_error(cfg), "1025");
	CHECK_RESULT(haquic_config_set_cluster_secret(cfg, big, 32), HAQUIC_OK);
	CHECK_RESULT(haquic_config_set_early_data(NULL, true), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_early_data(cfg, true), HAQUIC_OK);
	CHECK_RESULT(haquic_config_set_pacing(NULL, false), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_pacing(cfg, false), HAQUIC_OK);
	CHECK_RESULT(haquic_config_set_verify_peer(NULL, true, NULL), HAQUIC_ERR_NULL);
	CHECK_RESULT(haquic_config_set_verify_peer(cfg, true, fixtures_dir), HAQUIC_ERR_FILE_UNREADABLE);
	CHECK_RESULT(haquic_config_set_verify_peer(cfg, true, fixture("ca.crt")), HAQUIC_OK);
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), fixture("leaf.key")), HAQUIC_OK);
	CHECK_RESULT(haquic_config_check(cfg), HAQUIC_OK);
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}

const struct test_case config_tests[] = {
	{ "config_new_ref_unref_counts", cfg_new_ref_unref_counts },
	{ "config_unref_null_is_noop", cfg_unref_null_is_noop },
	{ "config_null_config_everywhere", cfg_null_config_everywhere },
	{ "config_null_arguments_name_the_argument", cfg_null_arguments_name_the_argument },
	{ "config_load_cert_and_key_files", cfg_load_cert_and_key_files },
	{ "config_load_combined_pem", cfg_load_combined_pem },
	{ "config_load_chain_and_rsa", cfg_load_chain_and_rsa },
	{ "config_missing_cert_file_names_path", cfg_missing_cert_file_names_path },
	{ "config_missing_key_file_names_path", cfg_missing_key_file_names_path },
	{ "config_unreadable_cert_file", cfg_unreadable_cert_file },
	{ "config_bad_certificate_pem", cfg_bad_certificate_pem },
	{ "config_bad_private_key_pem", cfg_bad_private_key_pem },
	{ "config_key_mismatch_names_both_files", cfg_key_mismatch_names_both_files },
	{ "config_failed_load_keeps_previous_identity", cfg_failed_load_keeps_previous_identity },
	{ "config_load_from_memory", cfg_load_from_memory },
	{ "config_curves", cfg_curves },
	{ "config_alpn_list", cfg_alpn_list },
	{ "config_alpn_bad_lists", cfg_alpn_bad_lists },
	{ "config_alpn_wire_format", cfg_alpn_wire_format },
	{ "config_alpn_buffer_too_small_writes_nothing", cfg_alpn_buffer_too_small_writes_nothing },
	{ "config_limits_defaults_and_roundtrip", cfg_limits_defaults_and_roundtrip },
	{ "config_limits_out_of_range", cfg_limits_out_of_range },
	{ "config_limits_struct_size_and_reserved", cfg_limits_struct_size_and_reserved },
	{ "config_idle_timeout", cfg_idle_timeout },
	{ "config_cc_algorithms", cfg_cc_algorithms },
	{ "config_check_requires_certificate", cfg_check_requires_certificate },
	{ "config_secret_0rtt_pacing_verify", cfg_secret_0rtt_pacing_verify },
	{ NULL, NULL },
};
