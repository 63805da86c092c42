/*
 * dispatch_access.c: the methods of access control (hello with a token,
 * agents.rotate_token, tokens.create, tokens.list, tokens.revoke; PROTOCOL.md
 * "Roles"; docs/DESIGN.md, "Access control"). Whether a presented token
 * still stands is call.c's (call_peer_valid), and whether an agent's
 * arguments name only itself is the request path's (dispatch.c).
 *
 * A token is shown once, in the reply that made it. The ledger records the
 * reply with token_sha256 in place of token (call_pack_secret; dispatch.c
 * swaps them), so a replay sets the same hash without ever knowing the
 * token, and nothing on disk holds a token. A hello that binds the
 * connection to a token says so in c->rebound, for the request path to
 * move the connection's alert subscription.
 *
 * Threads: a handler's, under the commit lock, like every method.
 * Ownership: d->agent_conns is allocated by the first agent's hello and
 * released by dispatch_access_free.
 */
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "call.h"
#include "dispatch_methods.h"

/* Connections bound to one agent at most (hello refuses more), unless configured. */
#define MAX_CONNS_PER_AGENT 64

/* ---------------------------------------------------------- agent tokens */

int m_agents_rotate_token(struct call *c)
{
	uint32_t slot;
	int rc;

	if ((rc = call_agent_arg(c, &slot)))
		return rc;
	call_ok(c);
	call_map(c, 2);
	proto_pack_key_u64(c->pk, "agent_id", c->m->agents[slot].id);
	c->d->token_epoch++;
	return call_pack_agent_token(c, slot);
}

/* ---------------------------------------------------------- reader tokens */

static void pack_token(struct call *c, const struct shm_token *t, int secret_follows)
{
	msgpack_packer *pk = c->pk;

	call_map(c, 4 + (secret_follows != 0));
	proto_pack_key_u64(pk, "token_id", t->id);
	proto_pack_key_str(pk, "role", access_role_name(t->role));
	proto_pack_key_str(pk, "name", t->name);
	proto_pack_key_i64(pk, "created_at", t->created_at);
}

int m_tokens_create(struct call *c)
{
	struct shm_header *h = c->m->hdr;
	struct shm_token *t = NULL;
	uint8_t hash[ACCESS_HASH_BYTES];
	struct state_str role, name = {"", 0};
	int rc;

	if ((rc = call_arg_str(c, c->a, "role", 1, 16, &role, NULL)) ||
	    (rc = call_arg_str(c, c->a, "name", 0, SC_NAME_MAX, &name, NULL)))
		return rc;
	if (role.len != 6 || memcmp(role.p, "reader", 6) != 0)
		return call_fail(c, SC_EINVAL,
		                 "role: '%.*s' cannot be given by a token; tokens.create makes "
		                 "\"reader\" tokens (an agent's token comes from agents.create)",
		                 (int)role.len, role.p);
	for (unsigned i = 0; i < SHM_TOKENS && !t; i++)
		if (!h->tokens[i].rec.used)
			t = &h->tokens[i];
	if (!t)
		return call_fail(c, SC_ELIMIT, "tokens: all %d reader tokens are in use; revoke one",
		                 SHM_TOKENS);
	shm_write_begin(&t->rec.seq);
	memset((char *)t + sizeof(t->rec), 0, sizeof(*t) - sizeof(t->rec));
	t->id = ++h->next_token_id;
	t->created_at = c->now;
	t->role = ACCESS_READER;
	memcpy(t->name, name.p, name.len);
	call_ok(c);
	pack_token(c, t, 1);
	rc = call_pack_secret(c, ACCESS_READER_PREFIX, t->id, hash);
	if (rc == 0) {
		memcpy(t->hash, hash, sizeof(hash));
		t->rec.used = 1;
	} else {
		h->next_token_id--;
	}
	shm_write_end(&t->rec.seq);
	return rc;
}

int m_tokens_list(struct call *c)
{
	const struct shm_header *h = c->m->hdr;
	unsigned n = 0;

	for (unsigned i = 0; i < SHM_TOKENS; i++)
		n += h->tokens[i].rec.used != 0;
	call_ok(c);
	msgpack_pack_array(c->pk, n);
	/* slots are reused: list by id, which is creation order */
	for (uint64_t last = 0; n > 0; n--) {
		const struct shm_token *next = NULL;

		for (unsigned i = 0; i < SHM_TOKENS; i++) {
			const struct shm_token *t = &h->tokens[i];

			if (t->rec.used && t->id > last && (!next || t->id < next->id))
				next = t;
		}
		pack_token(c, next, 0);
		last = next->id;
	}
	return 0;
}

int m_tokens_revoke(struct call *c)
{
	struct shm_header *h = c->m->hdr;
	uint64_t id;
	int rc;

	if ((rc = proto_arg_u64(c->a, "token_id", 1, &id, NULL)))
		return rc;
	for (unsigned i = 0; i < SHM_TOKENS; i++) {
		struct shm_token *t = &h->tokens[i];

		if (!t->rec.used || t->id != id)
			continue;
		shm_write_begin(&t->rec.seq);
		t->rec.used = 0;
		shm_write_end(&t->rec.seq);
		c->d->token_epoch++;
		call_ok(c);
		call_map(c, 2);
		proto_pack_key_u64(c->pk, "token_id", id);
		proto_pack_key_bool(c->pk, "revoked", 1);
		return 0;
	}
	return call_fail(c, SC_ENOTFOUND, "token_id: no token %llu", (unsigned long long)id);
}

/* ---------------------------------------------------------- hello */

/* The reader token with id, or NULL. */
static const struct shm_token *reader_token(const struct shm *m, uint64_t id, uint32_t *slot)
{
	for (uint32_t i = 0; i < SHM_TOKENS; i++) {
		if (m->hdr->tokens[i].rec.used && m->hdr->tokens[i].id == id) {
			*slot = i;
			return &m->hdr->tokens[i];
		}
	}
	return NULL;
}

#define TOKEN_INVALID "token: not a valid token (unknown, revoked or replaced)"

/* Binds the connection to what its token names. */
static int present_token(struct call *c, struct access_peer *p, struct state_str tok)
{
	uint8_t hash[ACCESS_HASH_BYTES];
	unsigned role;
	uint64_t id;
	uint32_t slot;

	if (access_token_read(tok.p, tok.len, &role, &id, hash) != 0)
		return call_fail(c, SC_EDENIED, TOKEN_INVALID);
	if (role == ACCESS_AGENT) {
		struct dispatch *d = c->d;
		unsigned max = d->max_agent_conns ? d->max_agent_conns : MAX_CONNS_PER_AGENT;
		uint16_t *n = d->agent_conns;

		if (state_agent_by_id(c->st, id, &slot) != 0 ||
		    !access_hash_equal(c->m->agents[slot].token_hash, hash))
			return call_fail(c, SC_EDENIED, TOKEN_INVALID);
		if (!n && !(n = d->agent_conns = calloc(c->m->hdr->agent_cap, sizeof(*n))))
			return call_fail(c, SC_EINTERNAL, "out of memory");
		if (!(p->role == ACCESS_AGENT && p->slot == slot) && n[slot] >= max)
			return call_fail(c, SC_ELIMIT,
			                 "agent %llu already has %u connections "
			                 "(--max-connections-per-agent)",
			                 (unsigned long long)id, max);
		if (!(p->role == ACCESS_AGENT && p->slot == slot)) {
			call_peer_unbind(d, p);
			n[slot]++;
		}
	} else {
		const struct shm_token *t = reader_token(c->m, id, &slot);

		if (!t || !access_hash_equal(t->hash, hash))
			return call_fail(c, SC_EDENIED, TOKEN_INVALID);
		if (p->agent_socket)
			return call_fail(c, SC_EDENIED,
			                 "token: the agent socket serves agents only; a reader "
			                 "connects to the admin socket");
		call_peer_unbind(c->d, p);
	}
	p->role = (uint8_t)role;
	p->actor_len = 0;
	p->by_token = 1;
	p->epoch = c->d->token_epoch + 1;
	p->slot = slot;
	p->id = id;
	p->tag = access_hash_tag(hash);
	return 0;
}

int m_hello(struct call *c)
{
	const struct srv_config *s = c->d->srv_cfg;
	struct access_peer *p = c->peer;
	struct state_str tok;
	msgpack_packer *pk;
	int present, rc;

	if ((rc = proto_arg_str(c->a, "token", 0, ACCESS_TOKEN_MAX, &tok.p, &tok.len, &present)))
		return rc;
	if (present && p) {
		if ((rc = present_token(c, p, tok)) != 0)
			return rc;
		c->rebound = 1;
	}
	if (p && p->agent_socket && p->role == ACCESS_NONE)
		return call_fail(c, SC_EDENIED, "hello: the agent socket needs a token");
	pk = call_ok(c);
	call_map(c, 5 + (p && p->role == ACCESS_AGENT) + (p && p->role == ACCESS_READER && p->by_token));
	proto_pack_key_str(pk, "server", "sidecard");
	proto_pack_key_str(pk, "version", SC_VERSION);
	proto_pack_key_i64(pk, "protocol", SC_PROTOCOL_VERSION);
	proto_pack_key_str(pk, "role", access_role_name(p ? p->role : ACCESS_ADMIN));
	if (p && p->role == ACCESS_AGENT)
		proto_pack_key_u64(pk, "agent_id", p->id);
	if (p && p->role == ACCESS_READER && p->by_token)
		proto_pack_key_u64(pk, "token_id", p->id);
	proto_pack_cstr(pk, "limits");
	call_map(c, 13);
	proto_pack_key_u64(pk, "max_message", s->limits.max_message);
	proto_pack_key_u64(pk, "max_depth", s->limits.max_depth);
	proto_pack_key_u64(pk, "max_string", s->limits.max_string);
	proto_pack_key_u64(pk, "max_items", s->limits.max_items);
	proto_pack_key_u64(pk, "max_outstanding", s->max_outstanding);
	proto_pack_key_u64(pk, "max_outstanding_bytes", s->max_outstanding_bytes);
	proto_pack_key_u64(pk, "max_connections", s->max_connections);
	proto_pack_key_u64(pk, "max_name", SC_NAME_MAX);
	proto_pack_key_u64(pk, "max_action", SC_ACTION_MAX);
	proto_pack_key_u64(pk, "max_key", SC_KEY_MAX);
	proto_pack_key_u64(pk, "max_rules_per_agent", SC_RULES_MAX);
	proto_pack_key_u64(pk, "max_metadata", SHM_METADATA_MAX);
	proto_pack_key_i64(pk, "hold_ttl_s", state_config(c->st)->set.hold_ttl_us / 1000000);
	return 0;
}

void dispatch_access_free(struct dispatch *d)
{
	free(d->agent_conns);
	d->agent_conns = NULL;
}
