/*
 * access.c: roles by credentials and the access tokens (access.h). The
 * hashing and the constant-time comparison are libsodium's; the secret is
 * read from getrandom(2), which blocks only until the kernel's pool was
 * first seeded, long before a daemon starts.
 *
 * Threads: any; no state.
 */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "access.h"
#include "common.h"
#include "sidecard.h"

/* The base64url text of ACCESS_SECRET_BYTES, without padding. */
#define SECRET_CHARS 43

int access_parse_users(struct access_config *cfg, const char *list, char *err, size_t errlen)
{
	const char *p = list;

	while (*p) {
		size_t len = strcspn(p, ",");
		char name[64], *end;
		unsigned long v;

		if (len == 0 || len >= sizeof(name)) {
			sc_errorf(err, errlen, "--admin-users: '%.*s' is not a user name or uid",
			          (int)(len > 64 ? 64 : len), p);
			return SC_EINVAL;
		}
		memcpy(name, p, len);
		name[len] = '\0';
		if (cfg->n_admin_users == ACCESS_MAX_IDS) {
			sc_errorf(err, errlen, "--admin-users: more than %d users", ACCESS_MAX_IDS);
			return SC_EINVAL;
		}
		errno = 0;
		v = strtoul(name, &end, 10);
		if (*end == '\0' && errno == 0 && name[0] >= '0' && name[0] <= '9' &&
		    v < (unsigned long)(uid_t)-1) {
			cfg->admin_users[cfg->n_admin_users++] = (uid_t)v;
		} else {
			struct passwd *pw = getpwnam(name);

			if (pw == NULL) {
				sc_errorf(err, errlen, "--admin-users: no user '%s'", name);
				return SC_EINVAL;
			}
			cfg->admin_users[cfg->n_admin_users++] = pw->pw_uid;
		}
		p += len;
		if (*p == ',')
			p++;
	}
	return 0;
}

static int in_group(long want, gid_t gid, const gid_t *groups, size_t n)
{
	if (want < 0)
		return 0;
	if ((gid_t)want == gid)
		return 1;
	for (size_t i = 0; i < n; i++)
		if (groups[i] == (gid_t)want)
			return 1;
	return 0;
}

enum access_role access_classify(const struct access_config *cfg, uid_t uid, gid_t gid,
                                 const gid_t *groups, size_t n_groups)
{
	if (uid == 0 || uid == cfg->self || in_group(cfg->admin_gid, gid, groups, n_groups))
		return ACCESS_ADMIN;
	for (unsigned i = 0; i < cfg->n_admin_users; i++)
		if (cfg->admin_users[i] == uid)
			return ACCESS_ADMIN;
	if (in_group(cfg->reader_gid, gid, groups, n_groups))
		return ACCESS_READER;
	return ACCESS_NONE;
}

const char *access_role_name(unsigned role)
{
	switch (role) {
	case ACCESS_ADMIN:
		return "admin";
	case ACCESS_READER:
		return "reader";
	case ACCESS_AGENT:
		return "agent";
	default:
		return "none";
	}
}

const char *access_roles_needed(unsigned roles)
{
	if (roles & ACCESS_AGENT)
		return "agent";
	if (roles & ACCESS_READER)
		return "reader";
	return "admin";
}

int access_token_new(const char *prefix, uint64_t id, char *out,
                     uint8_t hash[ACCESS_HASH_BYTES])
{
	unsigned char secret[ACCESS_SECRET_BYTES];
	size_t got = 0;
	int n;

	while (got < sizeof(secret)) {
		ssize_t r = getrandom(secret + got, sizeof(secret) - got, 0);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)r;
	}
	n = snprintf(out, ACCESS_TOKEN_MAX + 1, "%s%" PRIu64 "_", prefix, id);
	sodium_bin2base64(out + n, ACCESS_TOKEN_MAX + 1 - (size_t)n, secret, sizeof(secret),
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	sodium_memzero(secret, sizeof(secret));
	crypto_hash_sha256(hash, (const unsigned char *)out, strlen(out));
	return 0;
}

int access_token_read(const char *tok, size_t len, unsigned *role, uint64_t *id,
                      uint8_t hash[ACCESS_HASH_BYTES])
{
	size_t plen = strlen(ACCESS_AGENT_PREFIX), i = plen;
	uint64_t v = 0;

	if (len > ACCESS_TOKEN_MAX || len < plen)
		return SC_EINVAL;
	if (memcmp(tok, ACCESS_AGENT_PREFIX, plen) == 0)
		*role = ACCESS_AGENT;
	else if (memcmp(tok, ACCESS_READER_PREFIX, plen) == 0)
		*role = ACCESS_READER;
	else
		return SC_EINVAL;
	for (; i < len && tok[i] >= '0' && tok[i] <= '9'; i++) {
		if (v > (UINT64_MAX - 9) / 10)
			return SC_EINVAL;
		v = v * 10 + (uint64_t)(tok[i] - '0');
	}
	if (i == plen || v == 0 || i >= len || tok[i] != '_' || len - i - 1 != SECRET_CHARS)
		return SC_EINVAL;
	for (i++; i < len; i++)
		if (!((tok[i] >= 'A' && tok[i] <= 'Z') || (tok[i] >= 'a' && tok[i] <= 'z') ||
		      (tok[i] >= '0' && tok[i] <= '9') || tok[i] == '-' || tok[i] == '_'))
			return SC_EINVAL;
	*id = v;
	crypto_hash_sha256(hash, (const unsigned char *)tok, len);
	return 0;
}

int access_hash_equal(const uint8_t a[ACCESS_HASH_BYTES], const uint8_t b[ACCESS_HASH_BYTES])
{
	return sodium_memcmp(a, b, ACCESS_HASH_BYTES) == 0;
}

void access_hash_hex(const uint8_t hash[ACCESS_HASH_BYTES], char out[2 * ACCESS_HASH_BYTES + 1])
{
	sodium_bin2hex(out, 2 * ACCESS_HASH_BYTES + 1, hash, ACCESS_HASH_BYTES);
}

int access_hash_from_hex(const char *hex, size_t len, uint8_t hash[ACCESS_HASH_BYTES])
{
	size_t n = 0;

	if (len != 2 * ACCESS_HASH_BYTES ||
	    sodium_hex2bin(hash, ACCESS_HASH_BYTES, hex, len, NULL, &n, NULL) != 0 ||
	    n != ACCESS_HASH_BYTES)
		return SC_EINVAL;
	return 0;
}

void access_wipe(void *p, size_t len)
{
	sodium_memzero(p, len);
}

uint64_t access_hash_tag(const uint8_t hash[ACCESS_HASH_BYTES])
{
	uint64_t t;

	memcpy(&t, hash, sizeof(t));
	return t;
}
