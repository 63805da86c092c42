/*
 * access.h: who a connection is and what it may do (docs/DESIGN.md,
 * "Access control"; protocol/PROTOCOL.md, "Roles").
 *
 * Three roles. An admin may call every method; a reader every method that
 * changes nothing; an agent the gate calls and the reads of its own agent.
 * A connection's role comes from its peer's credentials when it is
 * accepted (access_classify: root, the daemon's uid, --admin-users and
 * --admin-group are admins, --reader-group readers) or from the token it
 * presents in hello: an agent token binds it to that agent, a reader token
 * makes it a reader. Everyone else may call hello and nothing else.
 *
 * Tokens are ACCESS_SECRET_BYTES from getrandom, written as
 * "<prefix><id>_<base64url>": "sca_" for an agent's (id: the agent),
 * "scr_" for a reader's (id: the token). The id finds the record to
 * compare with; only the SHA-256 of the whole token is kept, and compared
 * in constant time. A token is never logged.
 *
 * Threads: any; nothing here keeps state.
 */
#ifndef SIDECARD_ACCESS_H
#define SIDECARD_ACCESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Roles as bits, so that a method's table entry can name the set that may call it. */
enum access_role {
	ACCESS_NONE = 0,
	ACCESS_AGENT = 1,
	ACCESS_READER = 2,
	ACCESS_ADMIN = 4,
};

#define ACCESS_SECRET_BYTES 32
#define ACCESS_HASH_BYTES 32
#define ACCESS_TOKEN_MAX 127 /* bytes of a token, without the NUL */
#define ACCESS_AGENT_PREFIX "sca_"
#define ACCESS_READER_PREFIX "scr_"
#define ACCESS_MAX_IDS 64    /* --admin-users entries */
#define ACCESS_ACTOR_MAX 63  /* bytes of a packed actor map: 49 at most */

/* Whom the daemon trusts by credentials (docs/DESIGN.md, "Access control"). */
struct access_config {
	uid_t self;                       /* the daemon's own uid: an admin */
	uid_t admin_users[ACCESS_MAX_IDS];
	unsigned n_admin_users;
	long admin_gid;                   /* -1: none */
	long reader_gid;                  /* -1: none */
};

/*
 * One connection's identity. The server fills the credentials and the role
 * they give at accept; the dispatcher changes the role when hello presents
 * a token. Only the connection's thread touches it.
 */
struct access_peer {
	uint32_t uid, gid, pid;   /* SO_PEERCRED at accept */
	uint8_t role;             /* enum access_role */
	uint8_t agent_socket;     /* accepted on --agent-socket: agents only, hello first */
	uint8_t by_token;         /* the role came from a token */
	uint8_t close;            /* set by the handler: end the connection after its reply */
	uint8_t cred_role;        /* the role its credentials gave: what it falls back to */
	uint8_t reserved[3];
	uint32_t slot;            /* the agent's (or reader token's) slot in the state */
	uint64_t id;              /* agent id, or reader token id; 0 for a peer trusted by uid */
	uint64_t tag;             /* the token hash's first 8 bytes: a new token changes it */
	uint64_t epoch;           /* 1 + dispatch.token_epoch when the token was last found standing */
	/*
	 * The actor of its changes as the ledger records it, packed once
	 * (dispatch_access.c); actor_len 0: not yet, or the role changed since.
	 */
	uint8_t actor_len;
	char actor[ACCESS_ACTOR_MAX];
};

/* Parses "--admin-users": uids or user names, comma-separated. 0 or SC_EINVAL (err says which). */
int access_parse_users(struct access_config *cfg, const char *list, char *err, size_t errlen);

/*
 * The role a peer's credentials give (groups: its supplementary groups,
 * SO_PEERGROUPS; the primary gid counts too): ACCESS_ADMIN, ACCESS_READER
 * or ACCESS_NONE.
 */
enum access_role access_classify(const struct access_config *cfg, uid_t uid, gid_t gid,
                                 const gid_t *groups, size_t n_groups);

/* "admin", "reader", "agent", "none". */
const char *access_role_name(unsigned role);
/* The least role in the set, as a word for errors: "agent", "reader" or "admin". */
const char *access_roles_needed(unsigned roles);

/*
 * A new token for id with prefix (ACCESS_AGENT_PREFIX or ..._READER_...):
 * its text in out (ACCESS_TOKEN_MAX + 1 bytes) and its hash. 0, or -errno
 * when getrandom fails.
 */
int access_token_new(const char *prefix, uint64_t id, char *out,
                     uint8_t hash[ACCESS_HASH_BYTES]);

/*
 * Reads a presented token: which prefix (*role ACCESS_AGENT or
 * ACCESS_READER), the id it names and its hash. 0, or SC_EINVAL for text
 * that is no token this daemon issues (the caller says only "not valid").
 */
int access_token_read(const char *tok, size_t len, unsigned *role, uint64_t *id,
                      uint8_t hash[ACCESS_HASH_BYTES]);

/* Compares two hashes in constant time: 1 if equal. */
int access_hash_equal(const uint8_t a[ACCESS_HASH_BYTES], const uint8_t b[ACCESS_HASH_BYTES]);

/* A hash as 64 lowercase hex digits and a NUL, as the ledger keeps it. */
void access_hash_hex(const uint8_t hash[ACCESS_HASH_BYTES], char out[2 * ACCESS_HASH_BYTES + 1]);
/* The hash of its hex text: 0, or SC_EINVAL. */
int access_hash_from_hex(const char *hex, size_t len, uint8_t hash[ACCESS_HASH_BYTES]);

/* Overwrites a token's text, in a way the compiler keeps. */
void access_wipe(void *p, size_t len);

/* The tag of a hash (struct access_peer.tag). */
uint64_t access_hash_tag(const uint8_t hash[ACCESS_HASH_BYTES]);

#endif /* SIDECARD_ACCESS_H */
