/*
 * args.c: typed access to a request's named arguments, and the packing
 * helpers responses are built from.
 *
 * Every method takes one map of named arguments. The getters here turn it
 * into C values and, when a value is wrong, say exactly which field and
 * which rule: "wallet.balance: must be an integer number of micro-dollars,
 * got a float". A struct proto_args remembers which keys were read, so
 * proto_args_finish() can reject the keys nobody asked for: a misspelt
 * optional field ("estimatedCost") must not pass silently.
 *
 * Threads: no shared state; a proto_args is used by the thread that built it
 * (in the daemon, the loop thread running the dispatcher).
 * Ownership: proto_args points into the request's msgpack objects and into
 * the caller's error buffer; it allocates nothing. Values returned by the
 * getters live as long as the request.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "proto.h"
#include "proto_head.h"
#include "sidecard.h"

/* ----- errors ----- */

/* Writes "<prefix>.<key>" (or "<key>" at the top level) into buf. */
static const char *field_name(const struct proto_args *a, const char *key, size_t keylen,
                              char *buf, size_t len)
{
	int k = keylen > INT32_MAX ? INT32_MAX : (int)keylen;

	if (a->prefix[0])
		snprintf(buf, len, "%s.%.*s", a->prefix, k, key);
	else
		snprintf(buf, len, "%.*s", k, key);
	return buf;
}

__attribute__((format(printf, 4, 5)))
static int fail(struct proto_args *a, int code, const char *key, const char *fmt, ...)
{
	char field[PROTO_PREFIX_MAX + 128];
	char rule[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rule, sizeof(rule), fmt, ap);
	va_end(ap);
	if (a->errlen > 0)
		snprintf(a->err, a->errlen, "%s: %s",
		         field_name(a, key, strlen(key), field, sizeof(field)), rule);
	return code;
}

/* "a float", "a string", ...: what a value is, for "got ..." */
static const char *type_name(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return "nil";
	case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "an integer";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: return "a float";
	case MSGPACK_OBJECT_STR: return "a string";
	case MSGPACK_OBJECT_BIN: return "binary data";
	case MSGPACK_OBJECT_ARRAY: return "an array";
	case MSGPACK_OBJECT_MAP: return "a map";
	case MSGPACK_OBJECT_EXT: return "an extension";
	}
	return "an unknown type";
}

/* "a map", for "must be a map"; the same words as type_name(). */
static const char *wanted_name(int msgpack_type)
{
	msgpack_object o;

	memset(&o, 0, sizeof(o));
	o.type = (msgpack_object_type)msgpack_type;
	return type_name(&o);
}

/* ----- maps ----- */

static int key_equal(const msgpack_object *k, const char *key, size_t len)
{
	return k->via.str.size == len && memcmp(k->via.str.ptr, key, len) == 0;
}

/*
 * k (a str) is the C string key. Byte by byte, without measuring key
 * first: most keys differ from a field name in their first bytes, and a
 * name that matches is short.
 */
static int key_is(const msgpack_object *k, const char *key)
{
	const char *s = k->via.str.ptr;
	uint32_t n = k->via.str.size;

	for (uint32_t i = 0; i < n; i++)
		if (key[i] == '\0' || key[i] != s[i])
			return 0;
	return key[n] == '\0';
}

/* Checks the keys of a map once: all strings, no duplicates, not too many. */
static int check_keys(struct proto_args *a)
{
	char field[PROTO_PREFIX_MAX + 128];

	if (a->n > PROTO_ARGS_MAX) {
		snprintf(a->err, a->errlen, "%s%smore than %d fields", a->prefix,
		         a->prefix[0] ? ": " : "", PROTO_ARGS_MAX);
		return SC_EINVAL;
	}
	for (uint32_t i = 0; i < a->n; i++) {
		const msgpack_object *k = &a->kv[i].key;

		if (k->type != MSGPACK_OBJECT_STR) {
			snprintf(a->err, a->errlen, "%s%sfield names must be strings, got %s",
			         a->prefix, a->prefix[0] ? ": " : "", type_name(k));
			return SC_EINVAL;
		}
		for (uint32_t j = 0; j < i; j++) {
			if (key_equal(&a->kv[j].key, k->via.str.ptr, k->via.str.size)) {
				snprintf(a->err, a->errlen, "duplicate field '%s'",
				         field_name(a, k->via.str.ptr, k->via.str.size, field,
				                    sizeof(field)));
				return SC_EINVAL;
			}
		}
	}
	return 0;
}

static void set_map(struct proto_args *a, const msgpack_object *map)
{
	a->kv = map ? map->via.map.ptr : NULL;
	a->n = map ? map->via.map.size : 0;
	a->consumed = 0;
	a->fields = NULL;
	a->n_indexed = 0;
	a->next_field = 0;
}

/* A top-level reader with no arguments yet, its messages going to err. */
static void start(struct proto_args *a, char *err, size_t errlen)
{
	a->err = err;
	a->errlen = errlen;
	a->prefix[0] = '\0';
	set_map(a, NULL);
	if (errlen > 0)
		err[0] = '\0';
}

int proto_args_init(struct proto_args *a, const msgpack_object *params, char *err, size_t errlen)
{
	start(a, err, errlen);
	if (params == NULL || (params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size == 0))
		return 0;
	if (params->type != MSGPACK_OBJECT_ARRAY || params->via.array.size != 1 ||
	    params->via.array.ptr[0].type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "params must be an array holding one map");
		return SC_EINVAL;
	}
	set_map(a, &params->via.array.ptr[0]);
	return check_keys(a);
}

int proto_args_map(struct proto_args *a, const msgpack_object *map, char *err, size_t errlen)
{
	start(a, err, errlen);
	if (map->type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "expected a map");
		return SC_EINVAL;
	}
	set_map(a, map);
	return check_keys(a);
}

int proto_args_sub(struct proto_args *parent, const msgpack_object *map, const char *prefix,
                   struct proto_args *child)
{
	child->err = parent->err;
	child->errlen = parent->errlen;
	set_map(child, NULL);
	if (snprintf(child->prefix, sizeof(child->prefix), "%s%s%s", parent->prefix,
	             parent->prefix[0] ? "." : "", prefix) < 0)
		child->prefix[0] = '\0';
	if (map == NULL || map->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (map->type != MSGPACK_OBJECT_MAP) {
		snprintf(child->err, child->errlen, "%s: must be a map, got %s", child->prefix,
		         type_name(map));
		return SC_EINVAL;
	}
	set_map(child, map);
	return check_keys(child);
}

/*
 * Finds key and marks it read. Returns the value, or NULL when the key is
 * missing or nil: then an error if required, else *present = 0.
 */
/* find() for a key that is not in the index: by its bytes. */
static __attribute__((noinline)) uint32_t find_by_bytes(const struct proto_args *a,
                                                        const char *key)
{
	for (uint32_t i = 0; i < a->n; i++)
		if (key_is(&a->kv[i].key, key))
			return i;
	return a->n;
}

/*
 * The entry of key, or a->n when the map has none. Methods read their
 * fields in the order of their list, so the field after the last one
 * found is tried first.
 */
static uint32_t find(struct proto_args *a, const char *key)
{
	unsigned f = a->next_field;

	if (f >= a->n_indexed || a->fields[f] != key)
		for (f = 0; f < a->n_indexed && a->fields[f] != key; f++)
			;
	if (f == a->n_indexed)
		return find_by_bytes(a, key);
	a->next_field = f + 1;
	return a->entry[f] ? a->entry[f] - 1u : a->n;
}

static const msgpack_object *lookup(struct proto_args *a, const char *key, int required,
                                    int *present, int *rc)
{
	uint32_t i = find(a, key);

	*rc = 0;
	if (present)
		*present = 0;
	if (i < a->n) {
		a->consumed |= UINT64_C(1) << i;
		if (a->kv[i].val.type != MSGPACK_OBJECT_NIL)
			return &a->kv[i].val;
	}
	if (required)
		*rc = fail(a, SC_EINVAL, key, "required");
	return NULL;
}

static int found(int *present)
{
	if (present)
		*present = 1;
	return 0;
}

static int unknown_field(struct proto_args *a, const msgpack_object *k)
{
	char field[PROTO_PREFIX_MAX + 128];

	snprintf(a->err, a->errlen, "unknown field '%s'",
	         field_name(a, k->via.str.ptr, k->via.str.size, field, sizeof(field)));
	return SC_EINVAL;
}

int proto_args_finish(struct proto_args *a)
{
	for (uint32_t i = 0; i < a->n; i++)
		if (!(a->consumed & (UINT64_C(1) << i)))
			return unknown_field(a, &a->kv[i].key);
	return 0;
}

int proto_args_expect(struct proto_args *a, const char *const *fields)
{
	unsigned indexed = 0, f = 0;

	a->fields = NULL;
	a->n_indexed = 0;
	a->next_field = 0;
	while (indexed < PROTO_FIELDS_INDEXED && fields[indexed])
		a->entry[indexed++] = 0;
	for (uint32_t i = 0; i < a->n; i++) {
		const msgpack_object *k = &a->kv[i].key;

		/* clients tend to send the fields in the list's order: try the next one first */
		if (!fields[f] || !key_is(k, fields[f]))
			for (f = 0; fields[f] && !key_is(k, fields[f]); f++)
				;
		if (!fields[f])
			return unknown_field(a, k);
		/* keys are unique (check_keys), so each field has one entry at most */
		if (f < indexed)
			a->entry[f] = (uint8_t)(i + 1);
		f++;
	}
	a->fields = fields;
	a->n_indexed = indexed;
	return 0;
}

const char *proto_args_error(const struct proto_args *a)
{
	return a->errlen > 0 ? a->err : "";
}

/* ----- getters ----- */

int proto_arg_u64(struct proto_args *a, const char *key, int required, uint64_t *out,
                  int *present)
{
	int rc;
	const msgpack_object *v = lookup(a, key, required, present, &rc);

	if (v == NULL)
		return rc;
	if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return fail(a, SC_EINVAL, key, "must be a positive integer, got %" PRId64, v->via.i64);
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return fail(a, SC_EINVAL, key, "must be a positive integer, got %s", type_name(v));
	if (v->via.u64 == 0)
		return fail(a, SC_EINVAL, key, "must be a positive integer, got 0");
	*out = v->via.u64;
	return found(present);
}

int proto_arg_money(struct proto_args *a, const char *key, int required, int64_t *out,
                    int *present)
{
	int rc;
	const msgpack_object *v = lookup(a, key, required, present, &rc);

	if (v == NULL)
		return rc;
	if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return fail(a, SC_EINVAL, key, "must not be negative");
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return fail(a, SC_EINVAL, key, "must be an integer number of micro-dollars, got %s",
		            type_name(v));
	if (v->via.u64 > INT64_MAX)
		return fail(a, SC_ERANGE, key, "out of range (max %" PRId64 ")", INT64_MAX);
	*out = (int64_t)v->via.u64;
	return found(present);
}

int proto_arg_int(struct proto_args *a, const char *key, int required, int64_t min, int64_t max,
                  int64_t *out, int *present)
{
	int rc;
	int64_t x;
	const msgpack_object *v = lookup(a, key, required, present, &rc);

	if (v == NULL)
		return rc;
	if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (v->via.u64 > INT64_MAX)
			return fail(a, SC_ERANGE, key, "out of range (max %" PRId64 ")", max);
		x = (int64_t)v->via.u64;
	} else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		x = v->via.i64;
	} else {
		return fail(a, SC_EINVAL, key, "must be an integer, got %s", type_name(v));
	}
	if (x < min || x > max)
		return fail(a, SC_EINVAL, key, "must be between %" PRId64 " and %" PRId64
		            ", got %" PRId64, min, max, x);
	*out = x;
	return found(present);
}

int proto_arg_str(struct proto_args *a, const char *key, int required, size_t max_len,
                  const char **s, size_t *len, int *present)
{
	int rc;
	const msgpack_object *v = lookup(a, key, required, present, &rc);

	if (v == NULL)
		return rc;
	if (v->type != MSGPACK_OBJECT_STR)
		return fail(a, SC_EINVAL, key, "must be a string, got %s", type_name(v));
	if (v->via.str.size == 0)
		return fail(a, SC_EINVAL, key, "must not be empty");
	if (max_len > 0 && v->via.str.size > max_len)
		return fail(a, SC_EINVAL, key, "longer than %zu bytes", max_len);
	if (memchr(v->via.str.ptr, '\0', v->via.str.size))
		return fail(a, SC_EINVAL, key, "must not contain NUL bytes");
	*s = v->via.str.ptr;
	*len = v->via.str.size;
	return found(present);
}

int proto_arg_text(struct proto_args *a, const char *key, int required, size_t max_len,
                   const char **s, size_t *len, int *present)
{
	char why[128];
	const char *p = NULL;
	size_t n = 0;
	int here = 0, rc = proto_arg_str(a, key, required, max_len, &p, &n, &here);

	if (rc != 0)
		return rc;
	if (here && sc_text_check(p, n, why, sizeof(why)) != 0)
		return fail(a, SC_EINVAL, key, "%s", why);
	if (here) {
		*s = p;
		*len = n;
	}
	if (present)
		*present = here;
	return 0;
}

int proto_arg_bool(struct proto_args *a, const char *key, int required, int *out, int *present)
{
	int rc;
	const msgpack_object *v = lookup(a, key, required, present, &rc);

	if (v == NULL)
		return rc;
	if (v->type != MSGPACK_OBJECT_BOOLEAN)
		return fail(a, SC_EINVAL, key, "must be true or false, got %s", type_name(v));
	*out = v->via.boolean;
	return found(present);
}

int proto_arg_obj(struct proto_args *a, const char *key, int required, int msgpack_type,
                  const msgpack_object **out, int *present)
{
	int rc;
	const msgpack_object *v = lookup(a, key, required, present, &rc);

	if (v == NULL)
		return rc;
	if (msgpack_type >= 0 && v->type != (msgpack_object_type)msgpack_type)
		return fail(a, SC_EINVAL, key, "must be %s, got %s", wanted_name(msgpack_type),
		            type_name(v));
	*out = v;
	return found(present);
}

/* ----- packing ----- */

int proto_pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
	int rc = msgpack_pack_str(pk, len);

	return rc ? rc : msgpack_pack_str_body(pk, s, len);
}

int proto_pack_cstr(msgpack_packer *pk, const char *s)
{
	return proto_pack_strn(pk, s, strlen(s));
}

int proto_pack_key_i64(msgpack_packer *pk, const char *key, int64_t v)
{
	int rc = proto_pack_cstr(pk, key);

	return rc ? rc : msgpack_pack_int64(pk, v);
}

int proto_pack_key_u64(msgpack_packer *pk, const char *key, uint64_t v)
{
	int rc = proto_pack_cstr(pk, key);

	return rc ? rc : msgpack_pack_uint64(pk, v);
}

int proto_pack_key_str(msgpack_packer *pk, const char *key, const char *s)
{
	int rc = proto_pack_cstr(pk, key);

	if (rc)
		return rc;
	return s ? proto_pack_cstr(pk, s) : msgpack_pack_nil(pk);
}

int proto_pack_key_bool(msgpack_packer *pk, const char *key, int v)
{
	int rc = proto_pack_cstr(pk, key);

	if (rc)
		return rc;
	return v ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

int proto_pack_error(msgpack_packer *pk, int code, const char *message)
{
	/* a message quoting a client's bytes (unknown field 'x\x01') is made text */
	char text[PROTO_MESSAGE_MAX];
	size_t len;
	int rc = msgpack_pack_map(pk, 3);

	if (!message)
		message = sc_strerror(code);
	len = sc_text_clean(message, strlen(message), text, sizeof(text));
	if (rc == 0)
		rc = proto_pack_key_i64(pk, "code", code);
	if (rc == 0)
		rc = proto_pack_key_str(pk, "name", sc_err_name(code));
	if (rc == 0)
		rc = proto_pack_cstr(pk, "message");
	if (rc == 0)
		rc = proto_pack_strn(pk, text, len);
	return rc;
}

/* ----- packing into a buffer ----- */

void proto_buf_init(struct proto_buf *b, char *mem, size_t size)
{
	b->start = b->p = mem;
	b->end = mem + size;
	b->overflow = 0;
}

size_t proto_buf_len(const struct proto_buf *b)
{
	return (size_t)(b->p - b->start);
}

/* Room for n more bytes, else overflow. */
static int room(struct proto_buf *b, size_t n)
{
	if (b->overflow || (size_t)(b->end - b->p) < n) {
		b->overflow = 1;
		return 0;
	}
	return 1;
}

/* The head h of value v (proto_head.h), if it fits. */
static inline void put_head(struct proto_buf *b, struct proto_head h, uint64_t v)
{
	if (room(b, 1 + (size_t)h.bytes))
		b->p = proto_head_write(b->p, h, v);
}

static void put_byte(struct proto_buf *b, unsigned char c)
{
	if (room(b, 1))
		*b->p++ = (char)c;
}

void proto_put_nil(struct proto_buf *b)
{
	put_byte(b, 0xc0);
}

void proto_put_bool(struct proto_buf *b, int v)
{
	put_byte(b, v ? 0xc3 : 0xc2);
}

void proto_put_u64(struct proto_buf *b, uint64_t v)
{
	put_head(b, proto_head_uint(v), v);
}

void proto_put_i64(struct proto_buf *b, int64_t v)
{
	put_head(b, proto_head_int(v), (uint64_t)v);
}

void proto_put_map(struct proto_buf *b, uint32_t n)
{
	put_head(b, proto_head_map(n), n);
}

void proto_put_array(struct proto_buf *b, uint32_t n)
{
	put_head(b, proto_head_array(n), n);
}

void proto_put_str(struct proto_buf *b, const char *s, size_t len)
{
	struct proto_head h;

	if (len > UINT32_MAX) {
		b->overflow = 1;
		return;
	}
	h = proto_head_str((uint32_t)len);
	if (!room(b, 1 + (size_t)h.bytes + len))
		return;
	b->p = proto_head_write(b->p, h, len);
	memcpy(b->p, s, len);
	b->p += len;
}

void proto_put_cstr(struct proto_buf *b, const char *s)
{
	proto_put_str(b, s, strlen(s));
}
