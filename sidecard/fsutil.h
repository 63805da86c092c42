/*
 * fsutil.h: the file-system steps the daemon and sidecardctl take more than
 * once: creating private directories, holding a pid lock file, syncing a
 * directory, and whole reads and writes at an offset.
 */
#ifndef SIDECARD_FSUTIL_H
#define SIDECARD_FSUTIL_H

#include <stddef.h>
#include <stdint.h>

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

/* fsync()s directory dir, so that the names made or removed in it last. 0 or -errno. */
int fs_sync_dir(const char *dir);

/*
 * Reads or writes exactly len bytes at off, through EINTR and short
 * transfers. 0, or -errno (-EIO for an end of file before len).
 */
int fs_pread_all(int fd, char *buf, size_t len, uint64_t off);
int fs_pwrite_all(int fd, const char *buf, size_t len, uint64_t off);

#endif /* SIDECARD_FSUTIL_H */
