/*
 * faultfs.c: an LD_PRELOAD shim that makes the daemon's ledger (or
 * checkpoint) writes fail on demand, so tests can prove what sidecard does when the disk is full
 * (ENOSPC) or failing (EIO): mutations refused with "unavailable", reads
 * still served, and recovery once the disk accepts writes again. SQLite's
 * tests do the same to their VFS; here the seam is libc.
 *
 * Control: the environment variable FAULTFS_CONTROL names a file. While that
 * file exists, its content says what fails:
 *
 *     ERRNO [CALL...] [/PART/]   e.g. "ENOSPC", "EIO fdatasync",
 *                                "ENOSPC /checkpoints/"
 *
 * ERRNO is ENOSPC or EIO (anything else counts as EIO); the optional CALL
 * words (write, pwrite, writev, fsync, fdatasync) restrict the failure to
 * those calls, otherwise every intercepted call fails. A call fails only on
 * a file descriptor whose path (readlink /proc/self/fd/N) contains PART, a
 * word starting with '/' ("/ledger/" if none is given): it returns -1 with
 * that errno and writes nothing. Every other
 * call, and every call while the file is absent, goes to libc unchanged.
 * The test removes the file to "repair the disk"; no restart is needed, the
 * file is read on every intercepted call. An empty file is no fault: a call
 * that reads it between the test's truncation and its write must not fail
 * with a default it never asked for.
 *
 * Intercepted: write, pwrite (and pwrite64), writev, pwritev (and
 * pwritev64), fsync, fdatasync; the real functions come from
 * dlsym(RTLD_NEXT).
 *
 * Threads: any, at once (the daemon writes from libuv's thread pool). The
 * only shared state is set by the constructor before main() and read-only
 * after: the real functions and the control path. A call between the two
 * (another library's constructor) resolves its function itself, which is
 * idempotent. The intercepting path uses only async-signal-safe system
 * calls (readlink, open, read, close), because libuv calls write() from its
 * signal handler.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

enum call { C_WRITE, C_PWRITE, C_WRITEV, C_PWRITEV, C_FSYNC, C_FDATASYNC, C_COUNT };

/* The word of each call in the control file; pwritev counts as pwrite. */
static const char *const call_words[C_COUNT] = {
	[C_WRITE] = "write",   [C_PWRITE] = "pwrite", [C_WRITEV] = "writev",
	[C_PWRITEV] = "pwrite", [C_FSYNC] = "fsync",   [C_FDATASYNC] = "fdatasync",
};

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

/* FAULTFS_CONTROL, copied before main() so that no call needs getenv. */
static char control[4096];

#define RESOLVE(name)                                                                      \
	do {                                                                               \
		if (!real_##name)                                                          \
			*(void **)&real_##name = dlsym(RTLD_NEXT, #name);                  \
	} while (0)

__attribute__((constructor)) static void faultfs_init(void)
{
	const char *env = getenv("FAULTFS_CONTROL");

	RESOLVE(write);
	RESOLVE(pwrite);
	RESOLVE(pwrite64);
	RESOLVE(writev);
	RESOLVE(pwritev);
	RESOLVE(pwritev64);
	RESOLVE(fsync);
	RESOLVE(fdatasync);
	if (env && strlen(env) < sizeof(control))
		memcpy(control, env, strlen(env) + 1);
}

/* Whether the text [s, s+len) holds word as a whole word. */
static int has_word(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);

	for (size_t i = 0; i + n <= len; i++) {
		if (memcmp(s + i, word, n) != 0)
			continue;
		if ((i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t') &&
		    (i + n == len || s[i + n] == ' ' || s[i + n] == '\t' || s[i + n] == '\n'))
			return 1;
	}
	return 0;
}

/* "/proc/self/fd/N" without snprintf, which is not async-signal-safe. */
static void fd_link(char *buf, int fd)
{
	static const char prefix[] = "/proc/self/fd/";
	char digits[16];
	int n = 0;

	do
		digits[n++] = (char)('0' + fd % 10);
	while ((fd /= 10) > 0);
	memcpy(buf, prefix, sizeof(prefix) - 1);
	buf += sizeof(prefix) - 1;
	while (n > 0)
		*buf++ = digits[--n];
	*buf = '\0';
}

/* The PART word of the control file (see the top), NUL-terminated in place, or "/ledger/". */
static const char *path_part(char *spec)
{
	char *p = spec;

	while (*p) {
		size_t len = strcspn(p, " \t\n");

		if (p[0] == '/' && (p == spec || p[-1] == ' ' || p[-1] == '\t')) {
			p[len] = '\0';
			return p;
		}
		p += len;
		p += strspn(p, " \t\n");
	}
	return "/ledger/";
}

/* The errno this call on fd must fail with, or 0 to pass it through. */
static int fault(enum call call, int fd)
{
	char link[64], path[4096], spec[256], part[256];
	ssize_t n;
	size_t words;
	int cfd, i, restricted = 0, err = 0, saved = errno;

	if (control[0] == '\0' || fd < 0)
		return 0;
	fd_link(link, fd);
	n = readlink(link, path, sizeof(path) - 1);
	/* sockets and pipes ("socket:[N]") never fail */
	if (n <= 0 || path[0] != '/')
		goto out;
	path[n] = '\0';
	cfd = open(control, O_RDONLY | O_CLOEXEC);
	if (cfd < 0)
		goto out;
	n = read(cfd, spec, sizeof(spec) - 1);
	close(cfd);
	/* empty: the test is writing the file (O_TRUNC, then write); not yet a fault */
	if (n <= 0)
		goto out;
	spec[n] = '\0';
	memcpy(part, spec, (size_t)n + 1);
	if (strstr(path, path_part(part)) == NULL)
		goto out;
	words = strcspn(spec, " \t\n");
	/* CALL words after the errno name restrict the failure to those calls. */
	for (i = 0; i < C_COUNT; i++)
		restricted |= has_word(spec + words, strlen(spec + words), call_words[i]);
	if (restricted && !has_word(spec + words, strlen(spec + words), call_words[call]))
		goto out;
	err = words == 6 && memcmp(spec, "ENOSPC", 6) == 0 ? ENOSPC : EIO;
out:
	errno = saved;
	return err;
}

#define FAIL_IF(call, fd)                                                                  \
	do {                                                                               \
		int err_ = fault((call), (fd));                                            \
		if (err_) {                                                                \
			errno = err_;                                                      \
			return -1;                                                         \
		}                                                                          \
	} while (0)

EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
	RESOLVE(write);
	FAIL_IF(C_WRITE, fd);
	return real_write(fd, buf, len);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
	RESOLVE(pwrite);
	FAIL_IF(C_PWRITE, fd);
	return real_pwrite(fd, buf, len, off);
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t len, off64_t off)
{
	RESOLVE(pwrite64);
	FAIL_IF(C_PWRITE, fd);
	return real_pwrite64(fd, buf, len, off);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
	RESOLVE(writev);
	FAIL_IF(C_WRITEV, fd);
	return real_writev(fd, iov, n);
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	RESOLVE(pwritev);
	FAIL_IF(C_PWRITEV, fd);
	return real_pwritev(fd, iov, n, off);
}

EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int n, off64_t off)
{
	RESOLVE(pwritev64);
	FAIL_IF(C_PWRITEV, fd);
	return real_pwritev64(fd, iov, n, off);
}

EXPORT int fsync(int fd)
{
	RESOLVE(fsync);
	FAIL_IF(C_FSYNC, fd);
	return real_fsync(fd);
}

EXPORT int fdatasync(int fd)
{
	RESOLVE(fdatasync);
	FAIL_IF(C_FDATASYNC, fd);
	return real_fdatasync(fd);
}
