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
 * Ownership: nothing is allocated here except by msgpack_unpack() in the
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

struct header {
	enum kind kind;
	size_t size;      /* bytes of the header itself */
	uint64_t payload; /* bytes after the header (scalars and byte strings) */
	uint64_t count;   /* elements of an array, entries of a map */
	int is_int;       /* an integer: value below */
	int negative;
	uint64_t value;
};

static uint64_t be(const unsigned char *p, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes; i++)
		v = (v << 8) | p[i];
	return v;
}

/* A fixed-size element of 'size' bytes in all. */
static void fixed(struct header *h, size_t size)
{
	h->kind = K_SCALAR;
	h->size = size;
}

/*
 * A header announcing a payload: the marker, a lenbytes big-endian length,
 * then typebytes more (ext 8/16/32 has a type byte; str and bin none).
 */
static int bytes_header(struct header *h, const unsigned char *p, size_t n, unsigned lenbytes,
                        unsigned typebytes)
{
	h->kind = K_BYTES;
	h->size = 1 + lenbytes + typebytes;
	if (n < h->size)
		return 0;
	h->payload = be(p + 1, lenbytes);
	return 1;
}

static int container_header(struct header *h, enum kind kind, const unsigned char *p, size_t n,
                            unsigned lenbytes)
{
	h->kind = kind;
	h->size = 1 + lenbytes;
	if (n < h->size)
		return 0;
	h->count = be(p + 1, lenbytes);
	return 1;
}

static int int_header(struct header *h, const unsigned char *p, size_t n, unsigned bytes,
                      int is_signed)
{
	fixed(h, 1 + bytes);
	if (n < h->size)
		return 0;
	h->is_int = 1;
	h->value = be(p + 1, bytes);
	h->negative = is_signed && ((h->value >> (bytes * 8 - 1)) & 1);
	return 1;
}

/*
 * Decodes the header at p[0..n), n >= 1. Returns 1 when it is complete, 0
 * when more bytes are needed, -1 for a byte that starts no msgpack element.
 */
static int read_header(const unsigned char *p, size_t n, struct header *h)
{
	unsigned char b = p[0];

	memset(h, 0, sizeof(*h));
	if (b <= 0x7f) {
		fixed(h, 1);
		h->is_int = 1;
		h->value = b;
		return 1;
	}
	if (b >= 0xe0) {
		fixed(h, 1);
		h->is_int = 1;
		h->negative = 1;
		return 1;
	}
	if (b <= 0x8f) {
		h->kind = K_MAP;
		h->size = 1;
		h->count = b & 0x0f;
		return 1;
	}
	if (b <= 0x9f) {
		h->kind = K_ARRAY;
		h->size = 1;
		h->count = b & 0x0f;
		return 1;
	}
	if (b <= 0xbf) {
		h->kind = K_BYTES;
		h->size = 1;
		h->payload = b & 0x1f;
		return 1;
	}
	switch (b) {
	case 0xc0: /* nil */
	case 0xc2: /* false */
	case 0xc3: /* true */
		fixed(h, 1);
		return 1;
	case 0xc4: return bytes_header(h, p, n, 1, 0); /* bin 8 */
	case 0xc5: return bytes_header(h, p, n, 2, 0); /* bin 16 */
	case 0xc6: return bytes_header(h, p, n, 4, 0); /* bin 32 */
	case 0xc7: return bytes_header(h, p, n, 1, 1); /* ext 8 */
	case 0xc8: return bytes_header(h, p, n, 2, 1); /* ext 16 */
	case 0xc9: return bytes_header(h, p, n, 4, 1); /* ext 32 */
	case 0xca: fixed(h, 5); return 1; /* float 32 */
	case 0xcb: fixed(h, 9); return 1; /* float 64 */
	case 0xcc: return int_header(h, p, n, 1, 0);
	case 0xcd: return int_header(h, p, n, 2, 0);
	case 0xce: return int_header(h, p, n, 4, 0);
	case 0xcf: return int_header(h, p, n, 8, 0);
	case 0xd0: return int_header(h, p, n, 1, 1);
	case 0xd1: return int_header(h, p, n, 2, 1);
	case 0xd2: return int_header(h, p, n, 4, 1);
	case 0xd3: return int_header(h, p, n, 8, 1);
	case 0xd4: fixed(h, 3); return 1;  /* fixext 1: type byte + 1 */
	case 0xd5: fixed(h, 4); return 1;  /* fixext 2 */
	case 0xd6: fixed(h, 6); return 1;  /* fixext 4 */
	case 0xd7: fixed(h, 10); return 1; /* fixext 8 */
	case 0xd8: fixed(h, 18); return 1; /* fixext 16 */
	case 0xd9: return bytes_header(h, p, n, 1, 0); /* str 8 */
	case 0xda: return bytes_header(h, p, n, 2, 0); /* str 16 */
	case 0xdb: return bytes_header(h, p, n, 4, 0); /* str 32 */
	case 0xdc: return container_header(h, K_ARRAY, p, n, 2);
	case 0xdd: return container_header(h, K_ARRAY, p, n, 4);
	case 0xde: return container_header(h, K_MAP, p, n, 2);
	case 0xdf: return container_header(h, K_MAP, p, n, 4);
	default: return -1; /* 0xc1, never used */
	}
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
	uint64_t index;

	if (sc->depth != 1 || !sc->top_is_array)
		return;
	index = sc->top_count - sc->left[0];
	if (index == 0)
		sc->type_is_request = h->is_int && !h->negative && h->value == 0;
	else if (index == 1 && sc->type_is_request && h->is_int && !h->negative &&
	         h->value <= UINT32_MAX)
		sc->msgid = (int64_t)h->value;
}

/* Checks the limits a header announces, before its bytes are awaited. */
static enum proto_scan check_header(const struct proto_scanner *sc, const struct header *h,
                                    const struct proto_limits *l)
{
	/* first the size, so that the verdict does not depend on how bytes arrive */
	if ((uint64_t)sc->pos + h->size > l->max_message)
		return PROTO_SCAN_TOO_BIG;
	if (h->kind == K_BYTES && h->payload > l->max_string)
		return PROTO_SCAN_STRING_TOO_LONG;
	if (h->kind == K_ARRAY || h->kind == K_MAP) {
		if (sc->depth + 1 > depth_limit(l))
			return PROTO_SCAN_TOO_DEEP;
		if (h->count > l->max_items)
			return PROTO_SCAN_TOO_MANY_ITEMS;
	}
	if ((uint64_t)sc->pos + h->size + h->payload > l->max_message)
		return PROTO_SCAN_TOO_BIG;
	return PROTO_SCAN_OK;
}

static enum proto_scan incomplete(size_t n, const struct proto_limits *l)
{
	return n >= l->max_message ? PROTO_SCAN_TOO_BIG : PROTO_SCAN_INCOMPLETE;
}

/* Accepts a complete element; returns 1 when it completes the message. */
static int accept_element(struct proto_scanner *sc, const struct header *h)
{
	sc->pos += h->size + h->payload;
	if ((h->kind == K_ARRAY || h->kind == K_MAP) && h->count > 0) {
		if (sc->depth == 0) {
			sc->top_is_array = h->kind == K_ARRAY;
			sc->top_count = h->count;
		}
		sc->left[sc->depth++] = h->kind == K_MAP ? h->count * 2 : h->count;
		return 0;
	}
	while (sc->depth > 0) {
		if (--sc->left[sc->depth - 1] > 0)
			return 0;
		sc->depth--;
	}
	return 1;
}

enum proto_scan proto_scanner_feed(struct proto_scanner *sc, const char *buf, size_t n,
                                   const struct proto_limits *l, size_t *len, int64_t *msgid)
{
	const unsigned char *p = (const unsigned char *)buf;
	enum proto_scan r = PROTO_SCAN_INCOMPLETE;
	struct header h;

	for (;;) {
		int got;

		if (sc->pos >= n) {
			r = incomplete(n, l);
			break;
		}
		got = read_header(p + sc->pos, n - sc->pos, &h);
		if (got < 0) {
			r = PROTO_SCAN_MALFORMED;
			break;
		}
		if (got == 0) {
			r = incomplete(n, l);
			break;
		}
		r = check_header(sc, &h, l);
		if (r != PROTO_SCAN_OK)
			break;
		if ((uint64_t)sc->pos + h.size + h.payload > n) {
			r = incomplete(n, l);
			break;
		}
		note_envelope(sc, &h);
		if (accept_element(sc, &h)) {
			*len = sc->pos;
			r = PROTO_SCAN_OK;
			break;
		}
	}
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

/*
 * The size of the element at p, which msgpack_unpack() has accepted: a
 * container's header alone, any other element whole.
 */
static size_t element_size(const char *p, size_t n)
{
	struct header h;

	read_header((const unsigned char *)p, n, &h);
	return h.size + (size_t)h.payload;
}

/*
 * params is the envelope's last element, so its bytes run from after the
 * elements before it to the end of the message. The record of a change
 * keeps them as they came instead of packing the unpacked objects again.
 */
static void note_params_raw(const char *buf, size_t len, unsigned before,
                            struct proto_request *req)
{
	size_t off = element_size(buf, len);

	for (unsigned i = 0; i < before; i++)
		off += element_size(buf + off, len - off);
	req->params_raw = buf + off;
	req->params_raw_len = len - off;
}

int proto_request_parse(const char *buf, size_t len, msgpack_zone *zone, struct proto_request *req,
                        char *err, size_t errlen)
{
	msgpack_object o;
	const msgpack_object *e;
	size_t off = 0;

	memset(req, 0, sizeof(*req));
	if (msgpack_unpack(buf, len, &off, zone, &o) != MSGPACK_UNPACK_SUCCESS || off != len)
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
		note_params_raw(buf, len, 3, req);
		return 0;
	}
	if (req->type == PROTO_NOTIFICATION) {
		if (o.via.array.size != 3)
			return envelope_error(err, errlen, "notification must be an array of 3");
		if (parse_tail(&e[1], &e[2], req, err, errlen) != 0)
			return SC_EPROTO;
		note_params_raw(buf, len, 2, req);
		return 0;
	}
	return envelope_error(err, errlen,
	                      "message type must be 0 (request) or 2 (notification)");
}
