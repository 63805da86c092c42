/*
 * rpc.c: the raw msgpack-rpc client of the tests (rpc.h): packs requests
 * from typed argument lists, reads messages with a deadline, keeps the
 * notifications that arrive while a response is awaited.
 *
 * Threads: the caller's; one connection per thread. Ownership: the struct
 * rpc owns its descriptor, its unpacker and every message it returned or
 * kept (rpc_close frees them).
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <check.h>

#include "rpc.h"

#define READ_CHUNK 65536

void rpc_adopt(struct rpc *c, int fd)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	ck_assert(msgpack_unpacker_init(&c->in, READ_CHUNK));
	msgpack_unpacked_init(&c->last);
}

void rpc_open(struct rpc *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ck_assert_msg(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect %s: %s", path,
	              strerror(errno));
	rpc_adopt(c, fd);
}

void rpc_close(struct rpc *c)
{
	if (c->fd < 0)
		return;
	close(c->fd);
	c->fd = -1;
	for (size_t i = 0; i < c->n_notes; i++)
		msgpack_unpacked_destroy(&c->notes[i]);
	c->n_notes = 0;
	msgpack_unpacked_destroy(&c->last);
	msgpack_unpacker_destroy(&c->in);
}

/* ----- sending ----- */

static void send_all(struct rpc *c, const char *buf, size_t len)
{
	while (len) {
		struct pollfd p = { .fd = c->fd, .events = POLLOUT };
		ssize_t n;

		ck_assert_msg(poll(&p, 1, RPC_TIMEOUT_MS) == 1, "the daemon takes no input for %d ms",
		              RPC_TIMEOUT_MS);
		/* MSG_NOSIGNAL: a daemon that closed gives EPIPE, not a SIGPIPE that ends the test */
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
		ck_assert_msg(n > 0, "send: %s", strerror(errno));
		buf += n;
		len -= (size_t)n;
	}
}

/* Skips one argument of ap past its key, returning its type. */
static int skip_arg(va_list *ap)
{
	int type = va_arg(*ap, int);

	switch (type) {
	case RPC_T_U64:
		(void)va_arg(*ap, uint64_t);
		break;
	case RPC_T_I64:
		(void)va_arg(*ap, int64_t);
		break;
	case RPC_T_STR:
		(void)va_arg(*ap, const char *);
		break;
	case RPC_T_PACK:
		(void)va_arg(*ap, rpc_pack_fn);
		(void)va_arg(*ap, const void *);
		break;
	default:
		ck_abort_msg("rpc: argument of unknown type %d", type);
	}
	return type;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

static uint32_t send_va(struct rpc *c, const char *method, va_list ap)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	uint32_t msgid = c->next_msgid++, n = 0;
	const char *key;
	va_list count;

	va_copy(count, ap);
	while (va_arg(count, const char *) != NULL) {
		skip_arg(&count);
		n++;
	}
	va_end(count);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 4);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_uint32(&pk, msgid);
	pack_str(&pk, method);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, n);
	while ((key = va_arg(ap, const char *)) != NULL) {
		pack_str(&pk, key);
		switch (va_arg(ap, int)) {
		case RPC_T_U64:
			msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
			break;
		case RPC_T_I64:
			msgpack_pack_int64(&pk, va_arg(ap, int64_t));
			break;
		case RPC_T_STR:
			pack_str(&pk, va_arg(ap, const char *));
			break;
		default: {
			rpc_pack_fn fn = va_arg(ap, rpc_pack_fn);

			fn(&pk, va_arg(ap, const void *));
		}
		}
	}
	send_all(c, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return msgid;
}

uint32_t rpc_send_args(struct rpc *c, const char *method, ...)
{
	va_list ap;
	uint32_t msgid;

	va_start(ap, method);
	msgid = send_va(c, method, ap);
	va_end(ap);
	return msgid;
}

/* ----- reading ----- */

/* Reads what the daemon sent; 0 at end of file. */
static int fill(struct rpc *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	ssize_t n;

	ck_assert_msg(poll(&p, 1, RPC_TIMEOUT_MS) == 1, "the daemon said nothing for %d ms",
	              RPC_TIMEOUT_MS);
	ck_assert(msgpack_unpacker_reserve_buffer(&c->in, READ_CHUNK));
	n = read(c->fd, msgpack_unpacker_buffer(&c->in), msgpack_unpacker_buffer_capacity(&c->in));
	/* a daemon that closes with our input unread resets the connection: that is its end too */
	if (n < 0 && errno == ECONNRESET)
		return 0;
	ck_assert_msg(n >= 0, "read: %s", strerror(errno));
	msgpack_unpacker_buffer_consumed(&c->in, (size_t)n);
	return n > 0;
}

const msgpack_object *rpc_next(struct rpc *c)
{
	for (;;) {
		msgpack_unpack_return r = msgpack_unpacker_next(&c->in, &c->last);

		if (r == MSGPACK_UNPACK_SUCCESS) {
			const msgpack_object *o = &c->last.data;

			ck_assert_msg(o->type == MSGPACK_OBJECT_ARRAY &&
			                      (o->via.array.size == 4 || o->via.array.size == 3),
			              "the daemon sent a message that is no msgpack-rpc message");
			return o;
		}
		ck_assert_msg(r == MSGPACK_UNPACK_CONTINUE, "the daemon sent malformed msgpack");
		if (c->eof || !fill(c)) {
			c->eof = 1;
			return NULL;
		}
	}
}

void rpc_expect_eof(struct rpc *c)
{
	const msgpack_object *o = rpc_next(c);

	ck_assert_msg(o == NULL, "the daemon sent another message instead of closing");
}

static int is_notification(const msgpack_object *o)
{
	return o->via.array.size == 3 && o->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
	       o->via.array.ptr[0].via.u64 == 2;
}

struct rpc_res rpc_call_args(struct rpc *c, const char *method, ...)
{
	struct rpc_res res;
	const msgpack_object *o;
	uint32_t msgid;
	va_list ap;

	va_start(ap, method);
	msgid = send_va(c, method, ap);
	va_end(ap);
	while ((o = rpc_next(c)) != NULL && is_notification(o)) {
		ck_assert_msg(c->n_notes < RPC_MAX_NOTES, "more than %d notifications kept",
		              RPC_MAX_NOTES);
		c->notes[c->n_notes++] = c->last;
		msgpack_unpacked_init(&c->last);
	}
	ck_assert_msg(o != NULL, "%s: the daemon closed the connection without answering", method);
	ck_assert_msg(o->via.array.size == 4 && o->via.array.ptr[0].via.u64 == 1 &&
	                      o->via.array.ptr[1].via.u64 == msgid,
	              "%s: the answer is not the response to msgid %u", method, (unsigned)msgid);
	res.error = o->via.array.ptr[2].type == MSGPACK_OBJECT_NIL ? NULL : &o->via.array.ptr[2];
	res.result = res.error ? NULL : &o->via.array.ptr[3];
	return res;
}

static const msgpack_object *note_at(const struct rpc *c, const char *method, size_t want,
                                     size_t *count)
{
	size_t n = 0;

	for (size_t i = 0; i < c->n_notes; i++) {
		const msgpack_object *o = &c->notes[i].data;

		if (!rpc_is_str(&o->via.array.ptr[1], method))
			continue;
		if (n++ == want) {
			const msgpack_object *p = &o->via.array.ptr[2];

			ck_assert(p->type == MSGPACK_OBJECT_ARRAY && p->via.array.size == 1);
			return &p->via.array.ptr[0];
		}
	}
	*count = n;
	return NULL;
}

size_t rpc_notes(const struct rpc *c, const char *method)
{
	size_t n = 0;

	note_at(c, method, SIZE_MAX, &n);
	return n;
}

const msgpack_object *rpc_note(const struct rpc *c, const char *method, size_t i)
{
	size_t n;
	const msgpack_object *o = note_at(c, method, i, &n);

	ck_assert_msg(o != NULL, "no notification %s number %zu (of %zu)", method, i, n);
	return o;
}

/* ----- objects ----- */

int rpc_is_str(const msgpack_object *o, const char *s)
{
	return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
	       memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

const msgpack_object *rpc_get(const msgpack_object *m, const char *key)
{
	if (!m || m->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++)
		if (rpc_is_str(&m->via.map.ptr[i].key, key))
			return &m->via.map.ptr[i].val;
	return NULL;
}

uint64_t rpc_get_u64(const msgpack_object *m, const char *key)
{
	const msgpack_object *v = rpc_get(m, key);

	ck_assert_msg(v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER,
	              "%s: missing, or not an unsigned integer", key);
	return v->via.u64;
}

static const char *copy_str(const msgpack_object *v, char *buf, size_t len)
{
	snprintf(buf, len, "%.*s", (int)v->via.str.size, v->via.str.ptr);
	return buf;
}

const char *rpc_get_str(const msgpack_object *m, const char *key, char *buf, size_t len)
{
	const msgpack_object *v = rpc_get(m, key);

	ck_assert_msg(v && v->type == MSGPACK_OBJECT_STR, "%s: missing, or not a string", key);
	return copy_str(v, buf, len);
}

static const char *err_field(const struct rpc_res *r, const char *key, char *buf, size_t len)
{
	const msgpack_object *v = rpc_get(r->error, key);

	if (!v || v->type != MSGPACK_OBJECT_STR) {
		buf[0] = '\0';
		return buf;
	}
	return copy_str(v, buf, len);
}

const char *rpc_err_name(const struct rpc_res *r, char *buf, size_t len)
{
	return err_field(r, "name", buf, len);
}

const char *rpc_err_message(const struct rpc_res *r, char *buf, size_t len)
{
	return err_field(r, "message", buf, len);
}
