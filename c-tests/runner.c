/*
 * The haquic C test runner.
 *
 * Runs every test in a child process, so that a crash or a sanitizer report in
 * one test is that test's failure and the others still run. A test passes when
 * its function returns 0, the child exits cleanly, and no haquic object is
 * left alive (haquic_live_objects() == 0).
 *
 * Usage: runner [-f fixtures_dir] [name-substring ...]
 * Ends with the line "N passed, M failed".
 */
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
#include "common.h"

static const struct test_case *const suites[] = {
	config_tests, misc_tests, coexist_tests, engine_tests, hostapi_tests, regress_tests, thread_tests,
};

static int selected(const char *name, int argc, char **argv)
{
	if (argc == 0)
		return 1;
	for (int i = 0; i < argc; i++)
		if (strstr(name, argv[i]))
			return 1;
	return 0;
}

static int run_one(const struct test_case *t)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		int rc = t->fn();
		size_t live = haquic_live_objects();

		if (rc == 0 && live != 0) {
			fprintf(stderr, "    %zu haquic object(s) still alive at the end of the test\n", live);
			rc = 1;
		}
		/* exit() runs the sanitizers' leak check on this child */
		exit(rc ? 1 : 0);
	}
	if (waitpid(pid, &status, 0) < 0) {
		perror("waitpid");
		return 1;
	}
	if (WIFSIGNALED(status)) {
		fprintf(stderr, "    killed by signal %d\n", WTERMSIG(status));
		return 1;
	}
	return WEXITSTATUS(status) != 0;
}

int main(int argc, char **argv)
{
	int passed = 0, failed = 0;

	if (argc >= 3 && strcmp(argv[1], "-f") == 0) {
		fixtures_dir = argv[2];
		argc -= 2;
		argv += 2;
	}
	argc--;
	argv++;

	for (size_t s = 0; s < sizeof(suites) / sizeof(suites[0]); s++) {
		for (const struct test_case *t = suites[s]; t->name; t++) {
			if (!selected(t->name, argc, argv))
				continue;
			if (run_one(t) == 0) {
				printf("ok   %s\n", t->name);
				passed++;
			} else {
				printf("FAIL %s\n", t->name);
				failed++;
			}
			fflush(stdout);
		}
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : (passed ? 0 : 1);
}
