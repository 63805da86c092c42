/*
 * frame.c: framing of the MessagePack-RPC byte stream and validation of the
 * request envelope.
 *
 * msgpack has no length prefix: where a message ends is only known by
 * walking its structure. The server must know it before unpacking, both to
 * wait for the rest of a message (a read may end anywhere) and to refuse a
 * message that breaks a limit before buffering it. proto_scanner_feed() does
 * that walk without allocating and without trusting any announced size.
 *
 * Threads: no shared state; a scanner belongs to its caller (in the daemon,
 * one per connection, used by the loop thread).
 * Ownership: nothing is allocated here except the unpacked objects, in the
 * caller's zone.
 *
 * DESIGN: the scanner as a state machine
 *
 * The state between calls is (pos, depth, left[0..depth)): pos is the offset
 * of the next element header not yet accepted, left[i] the number of
 * elements container i still expects (a map expects two per entry). One
 * step reads the header at pos:
 *
 *   header incomplete          -> INCOMPLETE (pos is not moved: the header is
 *                                 read again, whole, on the next call)
 *   0xc1                       -> MALFORMED
 *   header itself ends past max_message -> TOO_BIG
 *   str/bin/ext over max_string, container deeper than max_depth or over
 *   max_items                  -> the matching limit, at once
 *   element would end past max_message -> TOO_BIG, at once
 *   payload incomplete         -> INCOMPLETE (pos is not moved)
 *   non-empty array/map        -> accept the header, push its element count
 *   any other element          -> accept it whole, then pop every container
 *                                 it completes; depth 0 -> OK
 *
 * So each byte is accepted once, and a message arriving byte by byte costs
 * linear time plus one re-read header per call. An INCOMPLETE message whose
 * buffered bytes already reach max_message is TOO_BIG: it cannot end in time.
 *
 * While walking, the scanner also notes the msgid of a request ([0, msgid,
 * ...]) so that errors found later in the message can be answered to it.
 *
 * proto_request_parse() then walks the complete message once more to build
 * its msgpack objects, with a walk of its own rather than msgpack_unpack()
 * (see "unpacking" below): the two walks of a check cost about 1,500
 * instructions where the scanner and msgpack-c's unpacker cost 2,000.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "proto.h"
#include "sidecard.h"

void proto_limits_default(struct proto_limits *l)
{
	l->max_message = PROTO_DEFAULT_MAX_MESSAGE;
	l->max_depth = PROTO_DEFAULT_MAX_DEPTH;
	l->max_string = PROTO_DEFAULT_MAX_STRING;
	l->max_items = PROTO_DEFAULT_MAX_ITEMS;
}

/* ----- one element header ----- */

enum kind { K_SCALAR, K_BYTES, K_ARRAY, K_MAP };

/*
 * One decoded element header. n is the payload size of a str, bin or ext
 * (K_BYTES: the bytes after the header), the element count of an array or
 * the entry count of a map, or an integer's value as stored (big-endian,
 * not sign-extended). A K_SCALAR's size is the whole element.
 */
struct header {
	uint8_t kind;
	uint8_t size;     /* bytes of the header itself: 1 to 18 */
	uint8_t is_int;
	uint8_t negative; /* a signed integer format holding a negative value */
	uint64_t n;
};

static inline uint64_t be(const unsigned char *p, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++)
		v = (v << 8) | p[i];
	return v;
}

static inline int set_header(struct header *h, enum kind kind, unsigned size, uint64_t n)
{
	h->kind = (uint8_t)kind;
	h->size = (uint8_t)size;
	h->is_int = 0;
	h->negative = 0;
	h->n = n;
	return 1;
}

/*
 * A header whose marker is followed by a lenbytes big-endian length or
 * count, then typebytes more (ext 8/16/32 has a type byte; str, bin, array
 * and map none).
 */
static inline int sized_header(struct header *h, enum kind kind, const unsigned char *p, size_t n,
                               unsigned lenbytes, unsigned typebytes)
{
	if (n < 1 + lenbytes + typebytes)
		return 0;
	return set_header(h, kind, 1 + lenbytes + typebytes, be(p + 1, lenbytes));
}

static inline int int_header(struct header *h, const unsigned char *p, size_t n, unsigned bytes,
                             int is_signed)
{
	if (n < 1 + bytes)
		return 0;
	set_header(h, K_SCALAR, 1 + bytes, be(p + 1, bytes));
	h->is_int = 1;
	h->negative = is_signed && ((h->n >> (bytes * 8 - 1)) & 1);
	return 1;
}

/* The formats of read_header() that are not a fix format: a switch on the marker. */
static int read_other_header(const unsigned char *p, size_t n, struct header *h)
{
	switch (p[0]) {
	case 0xc0: /* nil */
	case 0xc2: /* false */
	case 0xc3: /* true */
		return set_header(h, K_SCALAR, 1, 0);
	case 0xc4: return sized_header(h, K_BYTES, p, n, 1, 0); /* bin 8 */
	case 0xc5: return sized_header(h, K_BYTES, p, n, 2, 0); /* bin 16 */
	case 0xc6: return sized_header(h, K_BYTES, p, n, 4, 0); /* bin 32 */
	case 0xc7: return sized_header(h, K_BYTES, p, n, 1, 1); /* ext 8 */
	case 0xc8: return sized_header(h, K_BYTES, p, n, 2, 1); /* ext 16 */
	case 0xc9: return sized_header(h, K_BYTES, p, n, 4, 1); /* ext 32 */
	case 0xca: return set_header(h, K_SCALAR, 5, 0); /* float 32 */
	case 0xcb: return set_header(h, K_SCALAR, 9, 0); /* float 64 */
	case 0xcc: return int_header(h, p, n, 1, 0);
	case 0xcd: return int_header(h, p, n, 2, 0);
	case 0xce: return int_header(h, p, n, 4, 0);
	case 0xcf: return int_header(h, p, n, 8, 0);
	case 0xd0: return int_header(h, p, n, 1, 1);
	case 0xd1: return int_header(h, p, n, 2, 1);
	case 0xd2: return int_header(h, p, n, 4, 1);
	case 0xd3: return int_header(h, p, n, 8, 1);
	case 0xd4: return set_header(h, K_SCALAR, 3, 0);  /* fixext 1: type byte + 1 */
	case 0xd5: return set_header(h, K_SCALAR, 4, 0);  /* fixext 2 */
	case 0xd6: return set_header(h, K_SCALAR, 6, 0);  /* fixext 4 */
	case 0xd7: return set_header(h, K_SCALAR, 10, 0); /* fixext 8 */
	case 0xd8: return set_header(h, K_SCALAR, 18, 0); /* fixext 16 */
	case 0xd9: return sized_header(h, K_BYTES, p, n, 1, 0); /* str 8 */
	case 0xda: return sized_header(h, K_BYTES, p, n, 2, 0); /* str 16 */
	case 0xdb: return sized_header(h, K_BYTES, p, n, 4, 0); /* str 32 */
	case 0xdc: return sized_header(h, K_ARRAY, p, n, 2, 0);
	case 0xdd: return sized_header(h, K_ARRAY, p, n, 4, 0);
	case 0xde: return sized_header(h, K_MAP, p, n, 2, 0);
	case 0xdf: return sized_header(h, K_MAP, p, n, 4, 0);
	default: return -1; /* 0xc1, never used */
	}
}

/*
 * Decodes the header at p[0..n), n >= 1. Returns 1 when it is complete, 0
 * when more bytes are needed, -1 for a byte that starts no msgpack element.
 * The fix formats, which requests are mostly made of, are decoded inline
 * in both walks below, where the header stays in registers; a call per
 * element would cost as much as the decoding itself.
 */
static inline __attribute__((always_inline)) int read_header(const unsigned char *p, size_t n,
                                                            struct header *h)
{
	unsigned char b = p[0];

	if (b <= 0x7f) {
		set_header(h, K_SCALAR, 1, b);
		h->is_int = 1;
		return 1;
	}
	if (b >= 0xe0) {
		set_header(h, K_SCALAR, 1, b);
		h->is_int = 1;
		h->negative = 1;
		return 1;
	}
	if (b <= 0x8f)
		return set_header(h, K_MAP, 1, b & 0x0f);
	if (b <= 0x9f)
		return set_header(h, K_ARRAY, 1, b & 0x0f);
	if (b <= 0xbf)
		return set_header(h, K_BYTES, 1, b & 0x1f);
	return read_other_header(p, n, h);
}

/* ----- the scanner ----- */

void proto_scanner_reset(struct proto_scanner *sc)
{
	sc->pos = 0;
	sc->depth = 0;
	sc->top_count = 0;
	sc->top_is_array = 0;
	sc->type_is_request = 0;
	sc->msgid = -1;
}

static unsigned depth_limit(const struct proto_limits *l)
{
	return l->max_depth < PROTO_DEPTH_CAP ? l->max_depth : PROTO_DEPTH_CAP;
}

/* Notes element 0 and 1 of the outermost array, to recover a request's msgid. */
static void note_envelope(struct proto_scanner *sc, const struct header *h)
{
	uint64_t index = sc->top_count - sc->left[0];

	if (index == 0)
		sc->type_is_request = h->is_int && !h->negative && h->n == 0;
	else if (index == 1 && sc->type_is_request && h->is_int && !h->negative &&
	         h->n <= UINT32_MAX)
		sc->msgid = (int64_t)h->n;
}

static enum proto_scan incomplete(size_t n, const struct proto_limits *l)
{
	return n >= l->max_message ? PROTO_SCAN_TOO_BIG : PROTO_SCAN_INCOMPLETE;
}

/*
 * The walk keeps pos and depth in locals: stores through sc could alias
 * the buffer (both are char-typed to the compiler) and would be reloaded
 * after every byte read.
 */
enum proto_scan proto_scanner_feed(struct proto_scanner *sc, const char *buf, size_t n,
                                   const struct proto_limits *l, size_t *len, int64_t *msgid)
{
	const unsigned char *p = (const unsigned char *)buf;
	const unsigned max_depth = depth_limit(l);
	size_t pos = sc->pos;
	unsigned depth = sc->depth;
	enum proto_scan r;
	struct header h;

	for (;;) {
		uint64_t end;
		int got;

		if (pos >= n) {
			r = incomplete(n, l);
			break;
		}
		got = read_header(p + pos, n - pos, &h);
		if (got <= 0) {
			r = got < 0 ? PROTO_SCAN_MALFORMED : incomplete(n, l);
			break;
		}
		/*
		 * The limits a header announces, before its bytes are awaited;
		 * first the size, so that the verdict does not depend on how
		 * bytes arrive.
		 */
		end = (uint64_t)pos + h.size;
		if (end > l->max_message) {
			r = PROTO_SCAN_TOO_BIG;
			break;
		}
		if (h.kind == K_BYTES) {
			if (h.n > l->max_string) {
				r = PROTO_SCAN_STRING_TOO_LONG;
				break;
			}
			end += h.n;
		} else if (h.kind != K_SCALAR) {
			if (depth + 1 > max_depth) {
				r = PROTO_SCAN_TOO_DEEP;
				break;
			}
			if (h.n > l->max_items) {
				r = PROTO_SCAN_TOO_MANY_ITEMS;
				break;
			}
		}
		if (end > l->max_message) {
			r = PROTO_SCAN_TOO_BIG;
			break;
		}
		if (end > n) {
			r = incomplete(n, l);
			break;
		}
		if (depth == 1 && sc->top_is_array)
			note_envelope(sc, &h);
		/* accept the element whole (a container: its header) */
		pos = (size_t)end;
		if (h.kind != K_SCALAR && h.kind != K_BYTES && h.n > 0) {
			if (depth == 0) {
				sc->top_is_array = h.kind == K_ARRAY;
				sc->top_count = h.n;
			}
			sc->left[depth++] = h.kind == K_MAP ? h.n * 2 : h.n;
			continue;
		}
		while (depth > 0 && --sc->left[depth - 1] == 0)
			depth--;
		if (depth == 0) {
			*len = pos;
			r = PROTO_SCAN_OK;
			break;
		}
	}
	sc->pos = pos;
	sc->depth = depth;
	*msgid = sc->msgid;
	return r;
}

enum proto_scan proto_scan(const char *buf, size_t n, const struct proto_limits *l, size_t *len,
                           int64_t *msgid)
{
	struct proto_scanner sc;

	proto_scanner_reset(&sc);
	return proto_scanner_feed(&sc, buf, n, l, len, msgid);
}

const char *proto_scan_message(enum proto_scan s, const struct proto_limits *l, char *buf,
                               size_t len)
{
	switch (s) {
	case PROTO_SCAN_OK:
		snprintf(buf, len, "ok");
		break;
	case PROTO_SCAN_INCOMPLETE:
		snprintf(buf, len, "incomplete message");
		break;
	case PROTO_SCAN_MALFORMED:
		snprintf(buf, len, "malformed msgpack (byte 0xc1)");
		break;
	case PROTO_SCAN_TOO_BIG:
		snprintf(buf, len, "message exceeds max_message (%zu bytes)", l->max_message);
		break;
	case PROTO_SCAN_TOO_DEEP:
		snprintf(buf, len, "nesting exceeds max_depth (%u)", depth_limit(l));
		break;
	case PROTO_SCAN_STRING_TOO_LONG:
		snprintf(buf, len, "string exceeds max_string (%zu bytes)", l->max_string);
		break;
	case PROTO_SCAN_TOO_MANY_ITEMS:
		snprintf(buf, len, "array or map exceeds max_items (%zu)", l->max_items);
		break;
	}
	return buf;
}

int proto_scan_code(enum proto_scan s)
{
	switch (s) {
	case PROTO_SCAN_OK:
		return 0;
	case PROTO_SCAN_INCOMPLETE:
	case PROTO_SCAN_MALFORMED:
		return SC_EPROTO;
	default:
		return SC_ELIMIT;
	}
}

/* ----- the envelope ----- */

static int envelope_error(char *err, size_t errlen, const char *msg)
{
	snprintf(err, errlen, "%s", msg);
	return SC_EPROTO;
}

static int is_uint32(const msgpack_object *o)
{
	return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= UINT32_MAX;
}

/* The message type: element 0, or -1 if it is not a small non-negative integer. */
static int message_type(const msgpack_object *o)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > 2)
		return -1;
	return (int)o->via.u64;
}

static int parse_tail(const msgpack_object *method, const msgpack_object *params,
                      struct proto_request *req, char *err, size_t errlen)
{
	if (method->type != MSGPACK_OBJECT_STR)
		return envelope_error(err, errlen, "method must be a string");
	if (params->type != MSGPACK_OBJECT_ARRAY)
		return envelope_error(err, errlen, "params must be an array");
	req->method = method->via.str.ptr;
	req->method_len = method->via.str.size;
	req->params = params;
	return 0;
}

/* ----- unpacking ----- */

/*
 * The walk that turns one complete message into msgpack objects in the
 * caller's zone, in place of msgpack_unpack(): the same objects for the
 * same bytes (strings, bin and ext payloads point into the buffer; an int
 * format holding a non-negative value is a POSITIVE_INTEGER; float 32 is
 * FLOAT32 with the value widened), and the same verdicts: 0xc1, a message
 * that is incomplete or followed by more bytes, or a 33rd nested container
 * (msgpack-c's embedded stack, MSGPACK_EMBED_STACK_SIZE, which is
 * PROTO_DEPTH_CAP) all fail. It
 * allocates nothing for an announced count that the bytes left cannot
 * hold, where msgpack-c allocates first and fails later.
 *
 * It also notes where the last element of the outermost array begins,
 * which for an envelope is params: the ledger keeps params's bytes as
 * received without walking the envelope again.
 */
struct unpacker {
	const unsigned char *p, *end;
	msgpack_zone *zone;
	const unsigned char *last_top; /* start of the last element of the outermost array */
};

/* An open container: its object, and how many of its n slots are filled. */
struct open_container {
	msgpack_object *obj;
	uint64_t filled, n; /* a map has two slots per entry: key, value */
};

/* The object slot i of container c is to receive. */
static msgpack_object *container_slot(const struct open_container *c, uint64_t i)
{
	if (c->obj->type == MSGPACK_OBJECT_MAP)
		return i & 1 ? &c->obj->via.map.ptr[i / 2].val : &c->obj->via.map.ptr[i / 2].key;
	return &c->obj->via.array.ptr[i];
}

/*
 * Starts a container of count elements (entries of a map) in o. Returns
 * its number of slots, or -1.
 */
static int64_t start_container(struct unpacker *u, msgpack_object *o, int is_map, uint64_t count)
{
	size_t left = (size_t)(u->end - u->p);
	void *items = NULL;

	/* every element takes a byte at least */
	if (count > (is_map ? left / 2 : left))
		return -1;
	if (count > 0) {
		items = msgpack_zone_malloc(u->zone, count * (is_map ? sizeof(msgpack_object_kv)
		                                                     : sizeof(msgpack_object)));
		if (items == NULL)
			return -1;
	}
	if (is_map) {
		o->type = MSGPACK_OBJECT_MAP;
		o->via.map.size = (uint32_t)count;
		o->via.map.ptr = items;
		return (int64_t)count * 2;
	}
	o->type = MSGPACK_OBJECT_ARRAY;
	o->via.array.size = (uint32_t)count;
	o->via.array.ptr = items;
	return (int64_t)count;
}

/* An integer of a signed format: the stored bytes sign-extended. */
static int64_t sign_extend(uint64_t v, unsigned bytes)
{
	unsigned shift = 64 - 8 * bytes;

	return (int64_t)(v << shift) >> shift;
}

static void unpack_ext(msgpack_object *o, const unsigned char *type, uint32_t size)
{
	o->type = MSGPACK_OBJECT_EXT;
	o->via.ext.type = (int8_t)*type;
	o->via.ext.ptr = (const char *)type + 1;
	o->via.ext.size = size;
}

/* A scalar element whose header h is complete in p[0..left); 0 or -1. */
static int unpack_scalar(const unsigned char *p, size_t left, const struct header *h,
                         msgpack_object *o)
{
	if (h->size > left)
		return -1;
	if (h->is_int) {
		if (h->negative) {
			o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
			o->via.i64 = sign_extend(h->n, h->size > 1 ? h->size - 1u : 1u);
		} else {
			o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
			o->via.u64 = h->n;
		}
		return 0;
	}
	switch (p[0]) {
	case 0xc0:
		o->type = MSGPACK_OBJECT_NIL;
		return 0;
	case 0xc2:
	case 0xc3:
		o->type = MSGPACK_OBJECT_BOOLEAN;
		o->via.boolean = p[0] == 0xc3;
		return 0;
	case 0xca: {
		union { uint32_t i; float f; } v = { .i = (uint32_t)be(p + 1, 4) };

		o->type = MSGPACK_OBJECT_FLOAT32;
		o->via.f64 = v.f;
		return 0;
	}
	case 0xcb: {
		union { uint64_t i; double f; } v = { .i = be(p + 1, 8) };

		o->type = MSGPACK_OBJECT_FLOAT64;
		o->via.f64 = v.f;
		return 0;
	}
	default: /* fixext 1 to 16: the type byte, then the data */
		unpack_ext(o, p + 1, (uint32_t)(h->size - 2));
		return 0;
	}
}

/* A str, bin or ext element whose header h is complete in p[0..left); 0 or -1. */
static int unpack_bytes(const unsigned char *p, size_t left, const struct header *h,
                        msgpack_object *o)
{
	if (h->n > left - h->size)
		return -1;
	if (p[0] >= 0xc7 && p[0] <= 0xc9) {
		unpack_ext(o, p + h->size - 1, (uint32_t)h->n);
		return 0;
	}
	o->type = p[0] >= 0xc4 && p[0] <= 0xc6 ? MSGPACK_OBJECT_BIN : MSGPACK_OBJECT_STR;
	o->via.str.ptr = (const char *)p + h->size;
	o->via.str.size = (uint32_t)h->n;
	return 0;
}

/*
 * The walk: one element at a time into the slot o, with the open
 * containers on a stack rather than the C stack, so an element costs a
 * header decode and a few stores.
 */
static int unpack_walk(struct unpacker *u, msgpack_object *root)
{
	struct open_container open[PROTO_DEPTH_CAP];
	unsigned depth = 0;
	msgpack_object *o = root;

	for (;;) {
		const unsigned char *p = u->p;
		size_t left = (size_t)(u->end - p);
		struct header h;

		if (left == 0 || read_header(p, left, &h) <= 0)
			return -1;
		if (depth == 1)
			u->last_top = p;
		if (h.kind == K_ARRAY || h.kind == K_MAP) {
			int64_t slots;

			if (depth >= PROTO_DEPTH_CAP)
				return -1;
			u->p = p + h.size;
			if ((slots = start_container(u, o, h.kind == K_MAP, h.n)) < 0)
				return -1;
			if (slots > 0) {
				open[depth++] = (struct open_container){ o, 0, (uint64_t)slots };
				o = container_slot(&open[depth - 1], 0);
				continue;
			}
		} else if (h.kind == K_BYTES) {
			if (unpack_bytes(p, left, &h, o) != 0)
				return -1;
			u->p = p + h.size + h.n;
		} else {
			if (unpack_scalar(p, left, &h, o) != 0)
				return -1;
			u->p = p + h.size;
		}
		/* the element is complete: on to the next slot of the innermost open container */
		while (depth > 0 && ++open[depth - 1].filled == open[depth - 1].n)
			depth--;
		if (depth == 0)
			return 0;
		o = container_slot(&open[depth - 1], open[depth - 1].filled);
	}
}

/* One message, exactly buf[0..len); 0 or -1. */
static int unpack_message(const char *buf, size_t len, msgpack_zone *zone, msgpack_object *o,
                          const char **last_top)
{
	struct unpacker u = { (const unsigned char *)buf, (const unsigned char *)buf + len, zone,
	                      NULL };

	if (unpack_walk(&u, o) != 0 || u.p != u.end)
		return -1;
	*last_top = (const char *)u.last_top;
	return 0;
}

/*
 * params is the envelope's last element, so its bytes run from where it
 * begins to the end of the message. The record of a change keeps them as
 * they came instead of packing the unpacked objects again.
 */
static void note_params_raw(const char *buf, size_t len, const char *params,
                            struct proto_request *req)
{
	req->params_raw = params;
	req->params_raw_len = len - (size_t)(params - buf);
}

int proto_request_parse(const char *buf, size_t len, msgpack_zone *zone, struct proto_request *req,
                        char *err, size_t errlen)
{
	msgpack_object o;
	const msgpack_object *e;
	const char *last = NULL;

	memset(req, 0, sizeof(*req));
	if (unpack_message(buf, len, zone, &o, &last) != 0)
		return envelope_error(err, errlen, "malformed msgpack");
	if (o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size == 0)
		return envelope_error(err, errlen, "request must be an array");
	e = o.via.array.ptr;
	req->type = message_type(&e[0]);
	if (req->type == PROTO_REQUEST) {
		if (o.via.array.size != 4)
			return envelope_error(err, errlen, "request must be an array of 4");
		if (!is_uint32(&e[1]))
			return envelope_error(err, errlen, "msgid must be a uint32");
		req->msgid = (uint32_t)e[1].via.u64;
		if (parse_tail(&e[2], &e[3], req, err, errlen) != 0)
			return SC_EPROTO;
		note_params_raw(buf, len, last, req);
		return 0;
	}
	if (req->type == PROTO_NOTIFICATION) {
		if (o.via.array.size != 3)
			return envelope_error(err, errlen, "notification must be an array of 3");
		if (parse_tail(&e[1], &e[2], req, err, errlen) != 0)
			return SC_EPROTO;
		note_params_raw(buf, len, last, req);
		return 0;
	}
	return envelope_error(err, errlen,
	                      "message type must be 0 (request) or 2 (notification)");
}
