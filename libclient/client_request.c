/*
 * client_request.c: libsidecard's requests, [0, msgid, method, [{args}]]:
 * a method names its arguments in a `struct request` (sc_client_arg_*), and
 * sc_client_put_request() packs it, the optional fields of an update through
 * the field table of its struct (client_fields.c: an entry is sent when
 * the caller set its SC_*_SET_* bit).
 *
 * Packing writes each value's bytes straight into the connection's growing
 * sbuffer, in the smallest encoding as msgpack-c's packer would
 * (protocol/proto_head.h), instead of a packer callback per header and per
 * body. A failed write (out of memory, or a length msgpack cannot carry)
 * is remembered in the writer and the request is not sent.
 *
 * Threads: touches only the request and the writer it is given, on the
 * thread that owns their client. Ownership: a request points at the
 * caller's strings and structs, which must live until it is packed.
 */
#include <stdlib.h>
#include <string.h>

#include "client_int.h"
#include "proto_head.h"

/* ----- arguments ----- */

void sc_client_arg_add(struct request *r, struct arg a)
{
	if (r->n < ARGS_MAX)
		r->args[r->n++] = a;
}

#define ARG(...) sc_client_arg_add(r, (struct arg){ __VA_ARGS__ })

void sc_client_arg_uint(struct request *r, const char *key, uint64_t v)
{
	ARG(.key = key, .kind = ARG_UINT, .u = v);
}

void sc_client_arg_int(struct request *r, const char *key, int64_t v)
{
	ARG(.key = key, .kind = ARG_INT, .i = v);
}

void sc_client_arg_str(struct request *r, const char *key, const char *s)
{
	ARG(.key = key, .kind = ARG_STR, .s = s);
}

void sc_client_arg_fields(struct request *r, enum arg_kind kind, const char *key, struct table t,
                       const void *base, size_t count, size_t size, unsigned set)
{
	ARG(.key = key, .kind = kind, .t = t, .base = base, .count = count, .size = size,
	    .set = set);
}

#undef ARG

/* ----- packing ----- */

/* reserve() when the buffer must grow. */
static char *grow(struct writer *w, size_t n)
{
	msgpack_sbuffer *sb = w->sb;
	size_t cap = sb->alloc ? sb->alloc : MSGPACK_SBUFFER_INIT_SIZE;
	char *p;

	while (cap - sb->size < n) {
		if (cap > SIZE_MAX / 2) {
			w->failed = 1;
			return NULL;
		}
		cap *= 2;
	}
	if ((p = realloc(sb->data, cap)) == NULL) {
		w->failed = 1;
		return NULL;
	}
	sb->data = p;
	sb->alloc = cap;
	return sb->data + sb->size;
}

/* Room for n more bytes at w->sb->data + w->sb->size, or NULL. */
static inline char *reserve(struct writer *w, size_t n)
{
	if (w->failed)
		return NULL;
	if (w->sb->alloc - w->sb->size < n)
		return grow(w, n);
	return w->sb->data + w->sb->size;
}

/* The head h of value v (proto_head.h). */
static inline void put_head(struct writer *w, struct proto_head h, uint64_t v)
{
	char *p = reserve(w, 1 + (size_t)h.bytes);

	if (p != NULL)
		w->sb->size += (size_t)(proto_head_write(p, h, v) - p);
}

/* msgpack has no length past UINT32_MAX: such a request cannot be packed. */
static int fits_u32(struct writer *w, size_t n)
{
	if (n > UINT32_MAX)
		w->failed = 1;
	return !w->failed;
}

static void put_str(struct writer *w, const char *s)
{
	size_t len = strlen(s), size;
	struct proto_head h;
	char *p;

	if (!fits_u32(w, len))
		return;
	h = proto_head_str((uint32_t)len);
	size = 1 + (size_t)h.bytes + len;
	if ((p = reserve(w, size)) == NULL)
		return;
	memcpy(proto_head_write(p, h, len), s, len);
	w->sb->size += size;
}

static void put_uint(struct writer *w, uint64_t v)
{
	put_head(w, proto_head_uint(v), v);
}

static void put_int(struct writer *w, int64_t v)
{
	put_head(w, proto_head_int(v), (uint64_t)v);
}

static void put_map(struct writer *w, size_t n)
{
	if (fits_u32(w, n))
		put_head(w, proto_head_map((uint32_t)n), n);
}

static void put_array(struct writer *w, size_t n)
{
	if (fits_u32(w, n))
		put_head(w, proto_head_array((uint32_t)n), n);
}

static size_t count_set(struct table t, unsigned set)
{
	size_t i, n = 0;

	for (i = 0; i < t.n; i++)
		n += (t.fields[i].set & set) != 0;
	return n;
}

/* Packs the key/value pairs of the fields of base selected by set. */
static void put_fields(struct writer *w, struct table t, const void *base, unsigned set)
{
	size_t i;

	for (i = 0; i < t.n; i++) {
		const struct field *f = &t.fields[i];
		const char *p = (const char *)base + f->off;
		int64_t v;

		if (!(f->set & set))
			continue;
		put_str(w, f->key);
		if (f->type == FT_STR) {
			put_str(w, p);
		} else if (f->type == FT_ENUM) {
			int e;

			memcpy(&e, p, sizeof(e));
			put_str(w, sc_names_word(f->names, e));
		} else {
			memcpy(&v, p, sizeof(v));
			put_int(w, v);
		}
	}
}

void sc_client_put_request(struct writer *w, uint32_t msgid, const struct request *r)
{
	size_t i, k, entries = 0;

	for (i = 0; i < r->n; i++)
		entries += r->args[i].kind == ARG_FIELDS ? count_set(r->args[i].t, r->args[i].set) : 1;
	put_array(w, 4);
	put_uint(w, 0);
	put_uint(w, msgid);
	put_str(w, r->method);
	if (r->n == 0) {
		put_array(w, 0);
		return;
	}
	put_array(w, 1);
	put_map(w, entries);
	for (i = 0; i < r->n; i++) {
		const struct arg *a = &r->args[i];

		if (a->kind != ARG_FIELDS)
			put_str(w, a->key);
		switch (a->kind) {
		case ARG_UINT:
			put_uint(w, a->u);
			break;
		case ARG_INT:
			put_int(w, a->i);
			break;
		case ARG_STR:
			put_str(w, a->s);
			break;
		case ARG_FIELDS:
			put_fields(w, a->t, a->base, a->set);
			break;
		case ARG_MAP:
			put_map(w, count_set(a->t, a->set));
			put_fields(w, a->t, a->base, a->set);
			break;
		case ARG_META: {
			const sc_meta *m = a->base;

			put_map(w, a->count);
			for (k = 0; k < a->count; k++) {
				put_str(w, m[k].key);
				put_str(w, m[k].value);
			}
			break;
		}
		case ARG_MAP_ARRAY:
			put_array(w, a->count);
			for (k = 0; k < a->count; k++) {
				put_map(w, count_set(a->t, a->set));
				put_fields(w, a->t, (const char *)a->base + k * a->size, a->set);
			}
			break;
		}
	}
}
