/*
 * fdlimit.h: the descriptors the daemon may open (RLIMIT_NOFILE), checked
 * against what --max-connections and the daemon's own files need.
 */
#ifndef SIDECARD_FDLIMIT_H
#define SIDECARD_FDLIMIT_H

#include "daemon_config.h"

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit and checks that it holds
 * c->max_connections connections beside what the daemon itself needs
 * (fdlimit.c). When it does not, a --max-connections given in the config
 * file or on the command line is an error (logged, -1); the default is
 * lowered to what fits, with a warning. Logs the numbers. 0 or -1.
 */
int fdlimit_apply(struct config *c);

#endif /* SIDECARD_FDLIMIT_H */
