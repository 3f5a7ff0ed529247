/*
 * The system OpenSSL and haquic (which carries BoringSSL) in one process, as
 * inside HAProxy: both work, and OpenSSL's symbols resolve to OpenSSL.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include "common.h"

static int openssl_and_haquic_in_one_process(void)
{
	const haquic_config *cfg = haquic_config_new();
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	SSL_CTX *ctx = NULL;
	X509 *x509 = NULL;
	FILE *f = NULL;
	Dl_info info;
	char cn[64] = "";
	int rc = 1;

	/* OpenSSL hashes something: SHA-256("abc") has a known value. */
	CHECK(EVP_Digest("abc", 3, digest, &dlen, EVP_sha256(), NULL) == 1);
	CHECK(dlen == 32 && digest[0] == 0xba && digest[1] == 0x78 && digest[31] == 0xad);

	/* ... and loads the same certificate haquic will load. */
	f = fopen(fixture("leaf.crt"), "r");
	CHECK(f != NULL);
	x509 = PEM_read_X509(f, NULL, NULL, NULL);
	CHECK(x509 != NULL);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x509), NID_commonName, cn, sizeof(cn));
	CHECK(strcmp(cn, "haquic.test") == 0);
	ctx = SSL_CTX_new(TLS_server_method());
	CHECK(ctx != NULL);
	CHECK(SSL_CTX_use_certificate_file(ctx, fixture("leaf.crt"), SSL_FILETYPE_PEM) == 1);
	CHECK(SSL_CTX_use_PrivateKey_file(ctx, fixture("leaf.key"), SSL_FILETYPE_PEM) == 1);

	/* haquic loads it with BoringSSL in the same process. */
	CHECK_RESULT(haquic_config_load_cert_chain_and_key(cfg, fixture("leaf.crt"), fixture("leaf.key")), HAQUIC_OK);
	CHECK_RESULT(haquic_config_check(cfg), HAQUIC_OK);

	/* OpenSSL's entry points come from OpenSSL's libraries, not haquic. */
	CHECK(dladdr((void *)SSL_CTX_new, &info) != 0 && info.dli_fname);
	CHECK_STR_CONTAINS(info.dli_fname, "libssl");
	CHECK(dladdr((void *)EVP_Digest, &info) != 0 && info.dli_fname);
	CHECK_STR_CONTAINS(info.dli_fname, "libcrypto");
	CHECK(dlsym(RTLD_DEFAULT, "SSL_CTX_new") == (void *)SSL_CTX_new);
	CHECK(strstr(OpenSSL_version(OPENSSL_VERSION), "OpenSSL") != NULL);

	/* And OpenSSL still works after haquic ran BoringSSL. */
	CHECK(EVP_Digest("abc", 3, digest, &dlen, EVP_sha256(), NULL) == 1 && digest[0] == 0xba);
	rc = 0;
cleanup:
	if (f)
		fclose(f);
	X509_free(x509);
	SSL_CTX_free(ctx);
	haquic_config_unref(cfg);
	return rc;
}

/* libhaquic exports nothing that could shadow OpenSSL. */
static int haquic_exports_no_openssl_symbols(void)
{
	void *h = dlopen("libhaquic.so.0", RTLD_NOW | RTLD_NOLOAD);
	const char *names[] = { "SSL_CTX_new", "EVP_Digest", "X509_free", "OPENSSL_init_ssl", "CRYPTO_malloc" };
	int rc = 1;

	CHECK(h != NULL);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		void *sym = dlsym(h, names[i]);
		Dl_info info;

		/* dlsym on a handle also searches its dependencies; whatever it
		 * finds must not live in libhaquic itself */
		if (sym && dladdr(sym, &info) && info.dli_fname && strstr(info.dli_fname, "libhaquic"))
			FAILF("%s is exported by %s", names[i], info.dli_fname);
	}
	rc = 0;
cleanup:
	if (h)
		dlclose(h);
	return rc;
}

const struct test_case coexist_tests[] = {
	{ "openssl_and_haquic_in_one_process", openssl_and_haquic_in_one_process },
	{ "haquic_exports_no_openssl_symbols", haquic_exports_no_openssl_symbols },
	{ NULL, NULL },
};
