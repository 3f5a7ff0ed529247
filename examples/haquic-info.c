/*
 * haquic-info: loads an engine configuration from the command line and prints
 * the library's version and the settings it would run with. It is the main
 * job of `make run` until the HAProxy patch set lands, and a short example of
 * the configuration API: every error is printed with haquic's own reason.
 *
 * Usage: haquic-info --cert FILE [--key FILE] [--alpn LIST] [--cc NAME]
 *                    [--idle-timeout MS] [--max-streams N]
 *   --key defaults to --cert (a combined PEM file, as HAProxy's crt).
 *   --alpn takes a comma-separated list, such as h3,h3-29.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "haquic.h"

static int fail(const haquic_config *cfg, const char *what, haquic_result r)
{
	fprintf(stderr, "haquic-info: %s: %s (%s)\n", what,
	        cfg ? haquic_config_last_error(cfg) : "", haquic_strerror(r));
	return 1;
}

static int set_alpn(const haquic_config *cfg, char *list)
{
	const char *protos[16];
	size_t n = 0;

	for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		if (n == 16) {
			fprintf(stderr, "haquic-info: --alpn: at most 16 protocols\n");
			return 1;
		}
		protos[n++] = tok;
	}
	haquic_result r = haquic_config_set_alpn(cfg, protos, n);
	return r == HAQUIC_OK ? 0 : fail(cfg, "--alpn", r);
}

static int parse_u64(const char *opt, const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (!*s || *end || s[0] == '-') {
		fprintf(stderr, "haquic-info: %s: '%s' is not a number\n", opt, s);
		return 1;
	}
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	const haquic_config *cfg = haquic_config_new();
	const char *cert = NULL, *key = NULL;
	haquic_limits limits;
	haquic_result r;
	uint8_t wire[HAQUIC_ALPN_WIRE_MAX];
	char subject[256];
	size_t len = 0;
	int rc = 1;

	if (!cfg || HAQUIC_LIMITS_INIT(&limits) != HAQUIC_OK)
		goto cleanup;
	for (int i = 1; i < argc; i++) {
		const char *opt = argv[i];
		char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!val) {
			fprintf(stderr, "haquic-info: %s needs a value\n", opt);
			goto cleanup;
		}
		i++;
		if (strcmp(opt, "--cert") == 0)
			cert = val;
		else if (strcmp(opt, "--key") == 0)
			key = val;
		else if (strcmp(opt, "--alpn") == 0) {
			if (set_alpn(cfg, val))
				goto cleanup;
		}
		else if (strcmp(opt, "--cc") == 0) {
			if ((r = haquic_config_set_cc_algorithm(cfg, val)) != HAQUIC_OK) {
				fail(cfg, "--cc", r);
				goto cleanup;
			}
		}
		else if (strcmp(opt, "--idle-timeout") == 0) {
			if (parse_u64(opt, val, &limits.idle_timeout_ms))
				goto cleanup;
		}
		else if (strcmp(opt, "--max-streams") == 0) {
			if (parse_u64(opt, val, &limits.max_streams_bidi))
				goto cleanup;
		}
		else {
			fprintf(stderr, "haquic-info: unknown option %s\n", opt);
			goto cleanup;
		}
	}
	if (!cert) {
		fprintf(stderr, "usage: %s --cert FILE [--key FILE] [--alpn LIST] [--cc NAME] "
		        "[--idle-timeout MS] [--max-streams N]\n", argv[0]);
		goto cleanup;
	}
	if ((r = haquic_config_set_limits(cfg, &limits)) != HAQUIC_OK) {
		fail(cfg, "limits", r);
		goto cleanup;
	}
	if ((r = haquic_config_load_cert_chain_and_key(cfg, cert, key ? key : cert)) != HAQUIC_OK) {
		fail(cfg, "certificate", r);
		goto cleanup;
	}
	if ((r = haquic_config_check(cfg)) != HAQUIC_OK) {
		fail(cfg, "check", r);
		goto cleanup;
	}

	printf("%s\n", haquic_build_info());
	printf("  header version     %d.%d.%d, library %s%s\n", HAQUIC_VERSION_MAJOR,
	       HAQUIC_VERSION_MINOR, HAQUIC_VERSION_PATCH, haquic_version_string(),
	       haquic_version() == HAQUIC_VERSION_NUMBER ? "" : "  (MISMATCH)");
	if (haquic_config_get_certificate_subject(cfg, subject, sizeof(subject) - 1, &len) == HAQUIC_OK) {
		subject[len] = 0;
		printf("  certificate        %s (%s)\n", subject, cert);
	}
	if (haquic_config_get_alpn_wire(cfg, wire, sizeof(wire), &len) == HAQUIC_OK) {
		printf("  alpn              ");
		for (size_t i = 0; i < len; i += 1 + wire[i])
			printf(" %.*s", wire[i], (const char *)&wire[i + 1]);
		printf("\n");
	}
	printf("  congestion control %s\n", haquic_config_get_cc_algorithm(cfg));
	if (haquic_config_get_limits(cfg, &limits) == HAQUIC_OK) {
		printf("  idle timeout       %llu ms\n", (unsigned long long)limits.idle_timeout_ms);
		printf("  streams            %llu bidi, %llu uni\n",
		       (unsigned long long)limits.max_streams_bidi, (unsigned long long)limits.max_streams_uni);
		printf("  flow control       %llu B per connection, %llu B per request stream\n",
		       (unsigned long long)limits.initial_max_data,
		       (unsigned long long)limits.initial_max_stream_data_bidi_remote);
		printf("  max field section  %llu B\n", (unsigned long long)limits.max_field_section_size);
		printf("  max UDP payload    %llu B\n", (unsigned long long)limits.max_udp_payload_size);
	}
	printf("configuration OK\n");
	rc = 0;
cleanup:
	haquic_config_unref(cfg);
	return rc;
}
