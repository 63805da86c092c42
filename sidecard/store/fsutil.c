/*
 * fsutil.c: private directories, the check that nobody else may change
 * them, and pid lock files, for the state directory and the segment
 * (main.c) and the socket (server.c); directory syncs and whole positioned
 * reads and writes, for the ledger (ledger.c, ledger_repair.c). Any thread;
 * no state.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
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

/* The error for directory at, which is dir or one above it. */
__attribute__((format(printf, 5, 6)))
static int dir_refused(const char *at, const char *dir, char *err, size_t errlen, const char *fmt,
                       ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (strcmp(at, dir) == 0)
		sc_errorf(err, errlen, "directory %s: %s", dir, why);
	else
		sc_errorf(err, errlen, "directory %s (above %s): %s", at, dir, why);
	return SC_EINVAL;
}

/* A default place must be the daemon's own: another user may have made it first. */
static int check_private(const char *dir, uid_t me, char *err, size_t errlen)
{
	static const char *choose = "choose the place with --socket, --segment or --state-dir";
	struct stat st;

	if (lstat(dir, &st) != 0) {
		sc_errorf(err, errlen, "cannot stat %s: %s", dir, strerror(errno));
		return -errno;
	}
	if (S_ISLNK(st.st_mode))
		return dir_refused(dir, dir, err, errlen,
		                   "a symbolic link, where a default directory must be the daemon's "
		                   "own; remove it, or %s", choose);
	if (st.st_uid != me)
		return dir_refused(dir, dir, err, errlen,
		                   "owned by uid %lu, not by the daemon's uid %lu: another user made "
		                   "this default directory; remove it, or %s",
		                   (unsigned long)st.st_uid, (unsigned long)me, choose);
	if (st.st_mode & 077)
		return dir_refused(dir, dir, err, errlen,
		                   "mode %04o, where a default directory must be 0700 (as the daemon "
		                   "creates it); chmod 700 it, or %s",
		                   (unsigned)(st.st_mode & 07777), choose);
	return 0;
}

/* One directory from the root down: only root or the daemon may change its entries. */
static int check_above(const char *at, const char *dir, uid_t me, char *err, size_t errlen)
{
	struct stat st;

	/* at is dir itself when the walk reached it: stat() then resolves it as realpath did */
	if (stat(at, &st) != 0) {
		sc_errorf(err, errlen, "cannot stat %s: %s", at, strerror(errno));
		return -errno;
	}
	if (st.st_uid != 0 && st.st_uid != me)
		return dir_refused(at, dir, err, errlen,
		                   "owned by uid %lu, neither root nor the daemon's uid %lu: its owner "
		                   "could replace the daemon's files",
		                   (unsigned long)st.st_uid, (unsigned long)me);
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
		return dir_refused(at, dir, err, errlen,
		                   "mode %04o lets %s write it, without the sticky bit: they could "
		                   "replace the daemon's files",
		                   (unsigned)(st.st_mode & 07777),
		                   st.st_mode & S_IWOTH ? "every user" : "its group");
	return 0;
}

int fs_check_dir(const char *dir, int private_dir, char *err, size_t errlen)
{
	char real[PATH_MAX], at[PATH_MAX];
	uid_t me = geteuid();
	size_t len;
	int rc;

	if (private_dir && (rc = check_private(dir, me, err, errlen)) != 0)
		return rc;
	if (realpath(dir, real) == NULL) {
		sc_errorf(err, errlen, "cannot resolve %s: %s", dir, strerror(errno));
		return -errno;
	}
	/* "/", then every directory below it down to real itself */
	len = strlen(real);
	for (size_t n = 1; n <= len; n++) {
		if (n > 1 && n < len && real[n] != '/')
			continue;
		memcpy(at, real, n);
		at[n] = '\0';
		if ((rc = check_above(n == len ? dir : at, dir, me, err, errlen)) != 0)
			return rc;
	}
	return 0;
}

int fs_check_parent(const char *path, int private_dir, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	return fs_check_dir(dir, private_dir, err, errlen);
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
	struct stat st;
	int fd = open(path, O_RDWR | O_CREAT | FS_OPEN_FLAGS, 0600), n, rc;

	*holder = -1;
	if (fd < 0 && errno == ELOOP) {
		sc_errorf(err, errlen, "%s is a symbolic link: refusing to follow it", path);
		return -ELOOP;
	}
	if (fd < 0) {
		rc = -errno;
		sc_errorf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
		sc_errorf(err, errlen, "%s is not a regular file of uid %lu: refusing to write it",
		          path, (unsigned long)geteuid());
		close(fd);
		return SC_EINVAL;
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
