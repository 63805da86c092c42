/*
 * server_socket.c: the server's socket files and their lock files, and the
 * server's last step.
 *
 * srv_open_socket makes the parent directories, checks them, locks
 * "<path>.lock", removes a stale socket left by a crashed daemon, binds,
 * chmods, chowns and listens; srv_close_socket closes the socket and removes
 * the socket and lock files, each only if it is still the one this server
 * made. srv_maybe_finish ends a stopping server once its listeners are
 * closed and its workers joined: it gives these files back and calls
 * done(). It lives here, below the listeners (server.c), the workers
 * (server_workers.c) and the connections (server_conn.c), because each of
 * them calls it when its part has stopped.
 *
 * Threads: the main loop's (srv_init, srv_stop's close callbacks).
 *
 * May call: none of the server's other files; fsutil for the lock and the
 * directories.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fsutil.h"
#include "server_int.h"
#include "sidecard.h"

#define SRV_BACKLOG 4096

static int sys_error(char *err, size_t errlen, const char *what, const char *path)
{
	int e = errno;

	snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
	return -e;
}

static int take_lock(struct listener *l, char *err, size_t errlen)
{
	long holder;
	int fd = fs_lock(l->lock_path, &holder, err, errlen);

	if (fd == SC_EEXISTS) {
		if (holder > 0)
			snprintf(err, errlen, "another sidecard is running on %s (pid %ld)", l->path,
			         holder);
		else
			snprintf(err, errlen, "another sidecard is running on %s (pid unknown)",
			         l->path);
	}
	if (fd < 0)
		return fd;
	l->lock_fd = fd;
	return 0;
}

/*
 * Removes path if it is still the file (dev, ino). Someone may have deleted
 * this server's socket or lock file while it ran and another daemon have
 * made its own there since: that one's must stay.
 */
static void unlink_own(const char *path, dev_t dev, ino_t ino)
{
	struct stat st;

	if (lstat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
		unlink(path);
}

static void release_lock(struct listener *l)
{
	struct stat st;

	if (l->lock_fd < 0)
		return;
	if (fstat(l->lock_fd, &st) == 0)
		unlink_own(l->lock_path, st.st_dev, st.st_ino);
	close(l->lock_fd);
	l->lock_fd = -1;
}

static void remove_socket(struct listener *l)
{
	unlink_own(l->path, l->sock_dev, l->sock_ino);
}

/* Under the lock, a socket file can only be a crashed daemon's leftover. */
static int remove_stale(struct listener *l, char *err, size_t errlen)
{
	struct stat st;

	if (lstat(l->path, &st) != 0)
		return errno == ENOENT ? 0 : sys_error(err, errlen, "cannot stat", l->path);
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", l->path);
		return SC_EEXISTS;
	}
	if (unlink(l->path) != 0)
		return sys_error(err, errlen, "cannot remove stale socket", l->path);
	return 0;
}

/* Binds and listens; returns the socket or a negative code. */
static int bind_socket(struct listener *l, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	struct stat st;
	int fd, rc;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, l->path, strlen(l->path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return sys_error(err, errlen, "cannot create socket for", l->path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		rc = sys_error(err, errlen, "cannot bind", l->path);
		close(fd);
		return rc;
	}
	if (lstat(l->path, &st) != 0) {
		rc = sys_error(err, errlen, "cannot stat", l->path);
		close(fd);
		return rc;
	}
	l->sock_dev = st.st_dev;
	l->sock_ino = st.st_ino;
	if (chmod(l->path, l->mode) != 0)
		rc = sys_error(err, errlen, "cannot chmod", l->path);
	else if (l->gid >= 0 && chown(l->path, (uid_t)-1, (gid_t)l->gid) != 0)
		rc = sys_error(err, errlen, "cannot chown", l->path);
	else if (listen(fd, SRV_BACKLOG) != 0)
		rc = sys_error(err, errlen, "cannot listen on", l->path);
	else
		return fd;
	remove_socket(l);
	close(fd);
	return rc;
}

/* Takes the lock and the socket file; the listening socket is l->fd. */
int srv_open_socket(struct listener *l, char *err, size_t errlen)
{
	int rc = fs_mkdirs(l->path, 0, err, errlen);

	if (rc == 0)
		rc = fs_check_parent(l->path, 0, err, errlen);
	if (rc == 0)
		rc = take_lock(l, err, errlen);
	if (rc == 0)
		rc = remove_stale(l, err, errlen);
	if (rc == 0)
		rc = bind_socket(l, err, errlen);
	if (rc < 0) {
		release_lock(l);
		return rc;
	}
	l->fd = rc;
	return 0;
}

void srv_close_socket(struct listener *l)
{
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	remove_socket(l);
	release_lock(l);
}

static void on_main_handle_closed(uv_handle_t *h);

void srv_maybe_finish(struct srv *s)
{
	if (!s->stopping || s->workers_left > 0 || s->finished)
		return;
	if (s->threaded && !uv_is_closing((uv_handle_t *)&s->workers_done))
		uv_close((uv_handle_t *)&s->workers_done, on_main_handle_closed);
	if (s->main_handles > 0)
		return;
	s->finished = 1;
	for (unsigned i = 0; i < s->n_listeners; i++)
		srv_close_socket(&s->ls[i]);
	if (s->done)
		s->done(s->done_arg);
}

static void on_main_handle_closed(uv_handle_t *h)
{
	struct srv *s = h->data;

	s->main_handles--;
	srv_maybe_finish(s);
}
