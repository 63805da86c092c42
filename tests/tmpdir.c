/*
 * tmpdir.c: temporary directories and their removal (see tmpdir.h for the
 * contract).
 *
 * Threads: the main thread; the base directory is made and removed by the
 * runner process. Ownership: the base lives for one test case, a test's
 * directories until its teardown (or the base's removal); outside Check, the
 * caller removes its directories.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "tmpdir.h"

/* The base directory of this test case's temporary directories, or "". */
static char base[48];

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

void test_rm_tree(const char *dir)
{
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int test_tmp_base_make(void)
{
	snprintf(base, sizeof(base), "/tmp/sidecard-test.XXXXXX");
	if (mkdtemp(base) == NULL) {
		perror("test: mkdtemp");
		base[0] = '\0';
		return -1;
	}
	return 0;
}

void test_tmp_base_remove(void)
{
	if (base[0] != '\0')
		test_rm_tree(base);
	base[0] = '\0';
}

int test_tmpdir(char *dir, size_t len)
{
	int n = snprintf(dir, len, "%s/%s", base[0] ? base : "/tmp",
	                 base[0] ? "d.XXXXXX" : "sidecard-test.XXXXXX");

	if (n < 0 || (size_t)n >= len || mkdtemp(dir) == NULL) {
		perror("test: mkdtemp");
		return -1;
	}
	return 0;
}
