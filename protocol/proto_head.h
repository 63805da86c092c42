/*
 * proto_head.h: the head of msgpack's smallest encoding of a value, chosen
 * as msgpack-c's packer chooses it: one marker byte, then 0, 1, 2, 4 or 8
 * bytes of the value (an integer, or a string's or a container's length),
 * big-endian. The choice is made here once for the two writers that pack
 * without msgpack-c's packer and must match it byte for byte: the daemon's
 * responses (proto_put_*, protocol/args.c, into a fixed buffer) and
 * libsidecard's requests (libclient/client_request.c, into a growing sbuffer).
 * They differ only in where the bytes go. Header-only, because libsidecard
 * does not link the protocol library.
 *
 * Pure functions; any thread.
 */
#ifndef SIDECARD_PROTO_HEAD_H
#define SIDECARD_PROTO_HEAD_H

#include <stdint.h>

struct proto_head {
	unsigned char marker;
	unsigned char bytes; /* of the value after the marker: 0, 1, 2, 4 or 8 */
};

static inline struct proto_head proto_head(unsigned marker, unsigned bytes)
{
	return (struct proto_head){ (unsigned char)marker, (unsigned char)bytes };
}

static inline struct proto_head proto_head_uint(uint64_t v)
{
	if (v < 128)
		return proto_head((unsigned)v, 0); /* positive fixint */
	if (v < 256)
		return proto_head(0xcc, 1);
	if (v < 65536)
		return proto_head(0xcd, 2);
	if (v <= UINT32_MAX)
		return proto_head(0xce, 4);
	return proto_head(0xcf, 8);
}

/* msgpack-c packs a non-negative int64 as an unsigned integer. */
static inline struct proto_head proto_head_int(int64_t v)
{
	if (v >= 0)
		return proto_head_uint((uint64_t)v);
	if (v >= -32)
		return proto_head((unsigned)(0xe0 | (v + 32)), 0); /* negative fixint */
	if (v >= INT8_MIN)
		return proto_head(0xd0, 1);
	if (v >= INT16_MIN)
		return proto_head(0xd1, 2);
	if (v >= INT32_MIN)
		return proto_head(0xd2, 4);
	return proto_head(0xd3, 8);
}

/* The head of a str of len bytes (str 8 exists, unlike for maps and arrays). */
static inline struct proto_head proto_head_str(uint32_t len)
{
	if (len < 32)
		return proto_head(0xa0 | len, 0);
	if (len < 256)
		return proto_head(0xd9, 1);
	if (len < 65536)
		return proto_head(0xda, 2);
	return proto_head(0xdb, 4);
}

/* A map's or an array's: fixmap/fixarray below 16, then the 16 and 32 forms. */
static inline struct proto_head proto_head_container(uint32_t n, unsigned fix, unsigned m16)
{
	if (n < 16)
		return proto_head(fix | n, 0);
	if (n < 65536)
		return proto_head(m16, 2);
	return proto_head(m16 + 1, 4);
}

static inline struct proto_head proto_head_map(uint32_t n)
{
	return proto_head_container(n, 0x80, 0xde);
}

static inline struct proto_head proto_head_array(uint32_t n)
{
	return proto_head_container(n, 0x90, 0xdc);
}

/*
 * Writes h's marker and the low h.bytes bytes of v at p, which has room for
 * 1 + h.bytes; returns the byte after them. A case per size rather than
 * a loop over h.bytes: inlined, together with the writer's own put of a
 * head (make that static inline too), after one of the choices above, the
 * compiler follows each choice straight to its stores, merged into one, as
 * if the head had been written out by hand. A loop, or a put left out of
 * line, made packing a response about 20% slower.
 */
static inline char *proto_head_write(char *p, struct proto_head h, uint64_t v)
{
	p[0] = (char)h.marker;
	if (h.bytes == 0) /* the usual head: a fixint, fixstr, fixmap or fixarray */
		return p + 1;
	switch (h.bytes) {
	case 8:
		p[1] = (char)(v >> 56);
		p[2] = (char)(v >> 48);
		p[3] = (char)(v >> 40);
		p[4] = (char)(v >> 32);
		p[5] = (char)(v >> 24);
		p[6] = (char)(v >> 16);
		p[7] = (char)(v >> 8);
		p[8] = (char)v;
		break;
	case 4:
		p[1] = (char)(v >> 24);
		p[2] = (char)(v >> 16);
		p[3] = (char)(v >> 8);
		p[4] = (char)v;
		break;
	case 2:
		p[1] = (char)(v >> 8);
		p[2] = (char)v;
		break;
	case 1:
		p[1] = (char)v;
		break;
	}
	return p + 1 + h.bytes;
}

#endif /* SIDECARD_PROTO_HEAD_H */
