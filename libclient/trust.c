/*
 * trust.c: whether the process behind a socket (its SO_PEERCRED) or the
 * owner of a state segment may be the daemon this client means to talk to
 * (sidecard.h, "Trusting the daemon"). A daemon's socket in a directory
 * another user could make first, such as /tmp/sidecard-<uid>, could be an
 * impostor's that answers "allowed" to every check; the uid behind it is
 * what tells. Used by sc_connect (client.c) and sc_peek_open (peek.c).
 *
 * Threads: any; reads the environment and the password database with the
 * reentrant calls, keeps nothing.
 */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_int.h"

/* " (name)" for uid, or "" when it has no name; buf of at least 64 bytes. */
static const char *user_name(uid_t uid, char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char tmp[1024];

	buf[0] = '\0';
	if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL)
		snprintf(buf, len, " (%s)", res->pw_name);
	return buf;
}

/* $SIDECARD_DAEMON_UID, a number or a user name, into *uid: 1, 0 if unset, or SC_EINVAL. */
static int daemon_uid_env(uid_t *uid, char *err, size_t errlen)
{
	const char *v = getenv("SIDECARD_DAEMON_UID");
	struct passwd pw, *res = NULL;
	char tmp[1024], *end;
	unsigned long n;

	if (v == NULL || v[0] == '\0')
		return 0;
	if (v[0] >= '0' && v[0] <= '9') {
		errno = 0;
		n = strtoul(v, &end, 10);
		if (errno == 0 && *end == '\0' && n < (uid_t)-1) {
			*uid = (uid_t)n;
			return 1;
		}
	} else if (getpwnam_r(v, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL) {
		*uid = res->pw_uid;
		return 1;
	}
	sc_errorf(err, errlen, "SIDECARD_DAEMON_UID: '%s' is neither a uid nor a user name", v);
	return SC_EINVAL;
}

/*
 * The owner of the directory holding path, into *uid and its resolved
 * name into dir, when only root may change the directory that holds it
 * (owned by root, not writable by group or others): then that owner
 * chose the place, as a system user given /run/sidecard does. 1, or 0.
 */
static int dir_owner(const char *path, uid_t *uid, char *dir, size_t len)
{
	char given[PATH_MAX], real[PATH_MAX];
	const char *slash = strrchr(path, '/');
	struct stat st, up;
	char *cut;

	if (slash == NULL)
		snprintf(given, sizeof(given), ".");
	else
		snprintf(given, sizeof(given), "%.*s", slash == path ? 1 : (int)(slash - path), path);
	if (realpath(given, real) == NULL || strcmp(real, "/") == 0 || stat(real, &st) != 0)
		return 0;
	snprintf(dir, len, "%s", real);
	cut = strrchr(real, '/');
	cut[cut == real ? 1 : 0] = '\0';
	if (stat(real, &up) != 0 || up.st_uid != 0 || (up.st_mode & (S_IWGRP | S_IWOTH)))
		return 0;
	*uid = st.st_uid;
	return 1;
}

int sc_client_trust(uid_t found, const char *path, const char *what, char *err, size_t errlen)
{
	char dir[PATH_MAX], expected[PATH_MAX + 256], name[2][64];
	uid_t me = geteuid(), env_uid = 0, owner = 0;
	int env, owned;
	size_t n;

	if (found == 0 || found == me)
		return 0;
	if ((env = daemon_uid_env(&env_uid, err, errlen)) < 0)
		return env;
	if (env && found == env_uid)
		return 0;
	owned = dir_owner(path, &owner, dir, sizeof(dir));
	if (owned && found == owner)
		return 0;
	n = (size_t)snprintf(expected, sizeof(expected), "root or this process's uid %lu%s",
	                     (unsigned long)me, user_name(me, name[0], sizeof(name[0])));
	if (env)
		n += (size_t)snprintf(expected + n, sizeof(expected) - n, ", SIDECARD_DAEMON_UID's %lu",
		                      (unsigned long)env_uid);
	if (owned && n < sizeof(expected))
		snprintf(expected + n, sizeof(expected) - n, ", the owner of %s (uid %lu)", dir,
		         (unsigned long)owner);
	sc_errorf(err, errlen,
	          "%s %s is uid %lu%s, not one expected to run the daemon (%s): refused, since "
	          "another user's daemon could answer anything; if that user runs the daemon, set "
	          "SIDECARD_DAEMON_UID to it",
	          what, path, (unsigned long)found, user_name(found, name[1], sizeof(name[1])),
	          expected);
	return SC_EUNAVAILABLE;
}
