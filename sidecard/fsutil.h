/*
 * fsutil.h: the file-system steps the daemon takes more than once: creating
 * private directories and holding a pid lock file.
 */
#ifndef SIDECARD_FSUTIL_H
#define SIDECARD_FSUTIL_H

#include <stddef.h>

/*
 * Creates the missing directories of path with mode 0700: every one above
 * its last component, and the last one too if last is set. Existing ones
 * are left alone. 0 or -errno with the directory named in err.
 */
int fs_mkdirs(const char *path, int last, char *err, size_t errlen);

/*
 * Opens (creating, 0600) and locks path exclusively with flock() without
 * waiting, and writes the caller's pid into it. Returns the descriptor,
 * which holds the lock until closed; SC_EEXISTS if a live process holds it
 * (*holder is its pid, or -1 if unknown); or -errno with err set.
 */
int fs_lock(const char *path, long *holder, char *err, size_t errlen);

#endif /* SIDECARD_FSUTIL_H */
