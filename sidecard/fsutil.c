/*
 * fsutil.c: private directories and pid lock files, for the state directory
 * (main.c) and the socket (server.c); directory syncs and whole positioned
 * reads and writes, for the ledger (ledger.c, ledger_repair.c). Any thread;
 * no state.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "fsutil.h"
#include "sidecard.h"

static int make_dir(const char *dir, char *err, size_t errlen)
{
	if (mkdir(dir, 0700) == 0 || errno == EEXIST)
		return 0;
	sc_errorf(err, errlen, "cannot create directory %s: %s", dir, strerror(errno));
	return -errno;
}

int fs_mkdirs(const char *path, int last, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	int rc;

	snprintf(dir, sizeof(dir), "%s", path);
	for (char *p = strchr(dir + 1, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		rc = make_dir(dir, err, errlen);
		*p = '/';
		if (rc != 0)
			return rc;
	}
	return last ? make_dir(dir, err, errlen) : 0;
}

/* The pid written in a held lock file, or -1. */
static long lock_holder(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	long pid;

	if (n <= 0)
		return -1;
	buf[n] = '\0';
	pid = strtol(buf, NULL, 10);
	return pid > 0 ? pid : -1;
}

int fs_lock(const char *path, long *holder, char *err, size_t errlen)
{
	char pid[32];
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600), n, rc;

	*holder = -1;
	if (fd < 0) {
		rc = -errno;
		sc_errorf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return rc;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		rc = errno == EWOULDBLOCK ? SC_EEXISTS : -errno;
		if (rc == SC_EEXISTS)
			*holder = lock_holder(fd);
		else
			sc_errorf(err, errlen, "cannot lock %s: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		rc = -errno;
		sc_errorf(err, errlen, "cannot write %s: %s", path, strerror(errno));
		close(fd);
		return rc;
	}
	return fd;
}

int fs_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* pread or pwrite of every byte, as write says. */
static int transfer_all(int fd, char *buf, size_t len, uint64_t off, int write)
{
	while (len > 0) {
		ssize_t n = write ? pwrite(fd, buf, len, (off_t)off) : pread(fd, buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int fs_pread_all(int fd, char *buf, size_t len, uint64_t off)
{
	return transfer_all(fd, buf, len, off, 0);
}

int fs_pwrite_all(int fd, const char *buf, size_t len, uint64_t off)
{
	return transfer_all(fd, (char *)(uintptr_t)buf, len, off, 1);
}
