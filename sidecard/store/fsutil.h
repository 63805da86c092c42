/*
 * fsutil.h: the file-system steps the daemon and sidecardctl take more than
 * once: creating private directories and checking that nobody else can
 * change what is in them, holding a pid lock file, syncing a directory, and
 * whole reads and writes at an offset.
 */
#ifndef SIDECARD_FSUTIL_H
#define SIDECARD_FSUTIL_H

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Creates the missing directories of path with mode 0700: every one above
 * its last component, and the last one too if last is set. Existing ones
 * are left alone. 0 or -errno with the directory named in err.
 */
int fs_mkdirs(const char *path, int last, char *err, size_t errlen);

/*
 * Flags of every file the daemon creates or writes: a symbolic link planted
 * where one of its files goes is refused (ELOOP), never followed.
 */
#define FS_OPEN_FLAGS (O_CLOEXEC | O_NOFOLLOW)

/*
 * Checks that no other user can replace what the daemon puts in directory
 * dir (docs/DESIGN.md, "Files and defaults"). Every directory from the root
 * down to dir (symbolic links resolved) must be owned by root or by the
 * daemon's uid, and none may be writable by its group or others unless its
 * sticky bit is set (then only a file's owner may remove or rename it, as
 * in /tmp). A private directory (one of the default places, which another
 * user may have made first, such as /tmp/sidecard-<uid>) must moreover not
 * be a symbolic link, be owned by the daemon's uid and have mode 0700 or
 * narrower. 0, or SC_EINVAL or -errno with a sentence naming the directory,
 * its owner or mode, and the rule, in err.
 */
int fs_check_dir(const char *dir, int private_dir, char *err, size_t errlen);

/* fs_check_dir() on the directory that holds file path. */
int fs_check_parent(const char *path, int private_dir, char *err, size_t errlen);

/*
 * Opens (creating, 0600, never through a symbolic link) and locks path
 * exclusively with flock() without waiting, and writes the caller's pid
 * into it. A file that is not a regular file of the caller's uid is
 * refused (SC_EINVAL): another user's file in a shared directory is not
 * ours to write. Returns the descriptor, which holds the lock until closed;
 * SC_EEXISTS if a live process holds it (*holder is its pid, or -1 if
 * unknown); or -errno with err set.
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
