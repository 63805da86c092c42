/*
 * paths.c: where the daemon's socket is by default. Shared by libsidecard
 * and the daemon, so that both agree without configuration. Any thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sidecard.h"

int sc_default_socket_path(char *buf, size_t len)
{
	const char *env = getenv("SIDECARD_SOCKET");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (env != NULL && env[0] != '\0')
		n = snprintf(buf, len, "%s", env);
	else if (xdg != NULL && xdg[0] != '\0')
		n = snprintf(buf, len, "%s/sidecard/sidecard.sock", xdg);
	else if (geteuid() == 0)
		n = snprintf(buf, len, "/run/sidecard/sidecard.sock");
	else
		n = snprintf(buf, len, "/tmp/sidecard-%u/sidecard.sock", (unsigned)geteuid());
	return n < 0 || (size_t)n >= len ? SC_ERANGE : 0;
}
