/*
 * proto.h: the wire layer of sidecard, internal to the daemon.
 *
 * Three concerns, all prefixed proto_:
 *
 *   framing    proto_scan() / struct proto_scanner find where one msgpack
 *              object ends in a byte stream, without allocating, and enforce
 *              the hard limits (struct proto_limits) as early as the bytes
 *              allow. proto_request_parse() then unpacks one complete object
 *              into msgpack-c's objects (the same objects msgpack_unpack()
 *              makes) and validates the MessagePack-RPC envelope.  (frame.c)
 *   arguments  struct proto_args gives typed access to the named arguments of
 *              a request (the one map in params) with error messages that
 *              name the field and the rule broken.  (args.c)
 *   packing    proto_pack_* write the pieces every response is made of,
 *              including the error map {code, name, message}.  (args.c)
 *
 * Threads: nothing here has global state; every function may be called from
 * any thread on objects that thread owns.
 *
 * Return values follow the project's convention: 0, or a negative SC_E* code
 * from sidecard.h. Messages are written into caller-owned buffers.
 */
#ifndef SIDECARD_PROTO_H
#define SIDECARD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

/* ----- limits ----- */

/*
 * The hard limits of one message. proto_limits_default() fills in the
 * documented defaults (PROTOCOL.md, "Limits").
 */
struct proto_limits {
	size_t max_message; /* bytes of one message; default 65536 */
	unsigned max_depth; /* nesting of arrays/maps; default 16, at most PROTO_DEPTH_CAP */
	size_t max_string;  /* bytes of one str, bin or ext payload; default 4096 */
	size_t max_items;   /* elements of one array or entries of one map; default 1024 */
};

/*
 * The deepest nesting the scanner can track. msgpack-c's unpacker cannot go
 * deeper than its embedded stack (MSGPACK_EMBED_STACK_SIZE, 32) either, so a
 * larger max_depth is treated as this value.
 */
#define PROTO_DEPTH_CAP 32

#define PROTO_DEFAULT_MAX_MESSAGE 65536
#define PROTO_DEFAULT_MAX_DEPTH 16
#define PROTO_DEFAULT_MAX_STRING 4096
#define PROTO_DEFAULT_MAX_ITEMS 1024

void proto_limits_default(struct proto_limits *l);

/* ----- framing ----- */

/* The outcome of scanning a buffer for one complete msgpack object. */
enum proto_scan {
	PROTO_SCAN_OK,              /* *len = size of the first complete object */
	PROTO_SCAN_INCOMPLETE,      /* more bytes are needed; nothing is wrong yet */
	PROTO_SCAN_MALFORMED,       /* bytes that can never be msgpack (0xc1) */
	PROTO_SCAN_TOO_BIG,         /* the object is or will be larger than max_message */
	PROTO_SCAN_TOO_DEEP,        /* a container nested deeper than max_depth */
	PROTO_SCAN_STRING_TOO_LONG, /* a str/bin/ext header announcing more than max_string */
	PROTO_SCAN_TOO_MANY_ITEMS   /* an array or map header announcing more than max_items */
};

/*
 * A resumable scanner: the state of a walk through one message that has not
 * arrived completely. Keep one per connection; feed it the bytes of the
 * current message (always from the message's first byte, possibly moved
 * since the last call, with more bytes appended) and it continues where it
 * stopped, so a message trickling in byte by byte costs linear time.
 * The fields are private to frame.c.
 */
struct proto_scanner {
	size_t pos;                       /* bytes of the message walked so far */
	unsigned depth;                   /* containers open at pos */
	uint64_t left[PROTO_DEPTH_CAP];   /* elements still expected by each open container */
	uint64_t top_count;               /* elements of the outermost array */
	int top_is_array;
	int type_is_request;              /* element 0 of the outermost array is the integer 0 */
	int64_t msgid;                    /* -1 until recovered */
};

/* Prepares sc for the first byte of a new message. */
void proto_scanner_reset(struct proto_scanner *sc);

/*
 * Continues scanning buf[0..n), the bytes of the current message and maybe
 * of messages after it. Returns as soon as the object is complete or a limit
 * is certainly violated: a str header announcing 100 MB fails at once, before
 * those bytes arrive, and an incomplete object of max_message bytes or more
 * is PROTO_SCAN_TOO_BIG. On PROTO_SCAN_OK, *len is the object's size; call
 * proto_scanner_reset() before scanning the next one. After any other
 * result but PROTO_SCAN_INCOMPLETE the stream cannot be resynchronised.
 *
 * *msgid is the request's msgid once known, else -1: it is known when the
 * object is an array whose element 0 is the integer 0 (a request) and whose
 * element 1 is an unsigned integer that fits in 32 bits. It is reported with
 * every result, so limit violations can be answered to the right request.
 */
enum proto_scan proto_scanner_feed(struct proto_scanner *sc, const char *buf, size_t n,
                                   const struct proto_limits *l, size_t *len, int64_t *msgid);

/* proto_scanner_feed() on a fresh scanner: scans buf[0..n) from its start. */
enum proto_scan proto_scan(const char *buf, size_t n, const struct proto_limits *l, size_t *len,
                           int64_t *msgid);

/*
 * A sentence saying which limit a scan result broke, for the error map:
 * "message exceeds max_message (65536 bytes)", "nesting exceeds max_depth
 * (16)", "string exceeds max_string (4096 bytes)", "array or map exceeds
 * max_items (1024)", "malformed msgpack (byte 0xc1)". Writes into buf and
 * returns it.
 */
const char *proto_scan_message(enum proto_scan s, const struct proto_limits *l, char *buf,
                               size_t len);

/* The SC_E* code a scan result is answered with: SC_ELIMIT or SC_EPROTO. */
int proto_scan_code(enum proto_scan s);

/* ----- the request envelope ----- */

enum {
	PROTO_REQUEST = 0,
	PROTO_RESPONSE = 1,
	PROTO_NOTIFICATION = 2
};

/*
 * One request or notification. method and params point into the buffer
 * given to proto_request_parse() and into its zone; they live as long as
 * both do.
 */
struct proto_request {
	int type;                     /* PROTO_REQUEST or PROTO_NOTIFICATION */
	uint32_t msgid;               /* 0 for a notification */
	const char *method;           /* not NUL-terminated */
	size_t method_len;
	const msgpack_object *params; /* an array, possibly empty */
	const char *params_raw;       /* the bytes params was unpacked from, as received */
	size_t params_raw_len;
};

/*
 * Unpacks buf[0..len), one complete object as delimited by proto_scan(),
 * into zone and validates the envelope: [0, msgid, method, params] or
 * [2, method, params]. Returns 0, or SC_EPROTO with a sentence in err:
 * "request must be an array", "message type must be 0 (request) or 2
 * (notification)", "request must be an array of 4", "notification must be
 * an array of 3", "msgid must be a uint32", "method must be a string",
 * "params must be an array", "malformed msgpack".
 * The caller owns zone and clears it (msgpack_zone_clear) between messages.
 */
int proto_request_parse(const char *buf, size_t len, msgpack_zone *zone, struct proto_request *req,
                        char *err, size_t errlen);

/* ----- named arguments ----- */

/* Most fields one argument map may have; no method needs more. */
#define PROTO_ARGS_MAX 64
/* Longest field-name prefix kept for messages ("rules[2]"); longer ones are cut. */
#define PROTO_PREFIX_MAX 96

/* Fields of a proto_args_expect() list that are indexed; no method has more. */
#define PROTO_FIELDS_INDEXED 16

/*
 * Typed access to one map of named arguments. It remembers which keys were
 * read, so proto_args_finish() can reject unknown ones, and it names fields
 * of nested maps with their path ("wallet.balance", "rules[2].name").
 * Errors are written into the buffer given to proto_args_init(), which
 * nested maps share. Fields are private to args.c.
 */
struct proto_args {
	const msgpack_object_kv *kv; /* NULL for no arguments */
	uint32_t n;
	uint64_t consumed;           /* bit i: entry i was read */
	char *err;
	size_t errlen;
	/* the index proto_args_expect() builds: fields[f] is entry entry[f] - 1, 0: absent */
	const char *const *fields;   /* NULL until proto_args_expect() succeeded */
	unsigned n_indexed;
	unsigned next_field;         /* the field after the last one looked up: likely the next */
	uint8_t entry[PROTO_FIELDS_INDEXED];
	char prefix[PROTO_PREFIX_MAX]; /* "" at the top level */
};

/*
 * Starts reading a request's params, which must be [] (no arguments) or
 * [map]; anything else is SC_EINVAL "params must be an array holding one
 * map". params may be NULL (no arguments). Also rejects, with SC_EINVAL,
 * keys that are not strings, duplicate keys ("duplicate field 'x'") and maps
 * of more than PROTO_ARGS_MAX entries. err[errlen] receives every message
 * of this map and of its nested maps; it must outlive a.
 */
int proto_args_init(struct proto_args *a, const msgpack_object *params, char *err, size_t errlen);
/* The same over one map that is not wrapped in params (a ledger record's body or result). */
int proto_args_map(struct proto_args *a, const msgpack_object *map, char *err, size_t errlen);

/*
 * Starts reading a nested map, a value obtained from parent (for example by
 * proto_arg_obj()). prefix names it for messages: "wallet" or "rules[2]";
 * the child's fields are then "wallet.balance". map NULL or nil means an
 * empty map; anything but a map is SC_EINVAL "<prefix>: must be a map".
 * Checks keys like proto_args_init(). child shares parent's error buffer.
 */
int proto_args_sub(struct proto_args *parent, const msgpack_object *map, const char *prefix,
                   struct proto_args *child);

/*
 * Getters. key is matched by exact byte comparison and marked as read.
 * required = 1: a missing key or a nil value is SC_EINVAL "<field>:
 * required"; present may then be NULL. required = 0: a missing key or nil
 * returns 0 with *present = 0 (if present is not NULL) and *out untouched.
 * A present, valid value sets *present = 1. Errors return SC_EINVAL, or
 * SC_ERANGE for an integer that does not fit in 64 signed bits, and write
 * "<field>: <rule>" into the error buffer.
 */

/* An id: an integer from 1 to UINT64_MAX. */
int proto_arg_u64(struct proto_args *a, const char *key, int required, uint64_t *out,
                  int *present);

/*
 * Money: an integer number of micro-dollars, 0 to INT64_MAX. "<field>: must
 * be an integer number of micro-dollars, got a float" (or "a string", ...),
 * "<field>: must not be negative", SC_ERANGE "<field>: out of range (max
 * 9223372036854775807)".
 */
int proto_arg_money(struct proto_args *a, const char *key, int required, int64_t *out,
                    int *present);

/* An integer in [min, max]: "<field>: must be between 1 and 1000, got 5000". */
int proto_arg_int(struct proto_args *a, const char *key, int required, int64_t min, int64_t max,
                  int64_t *out, int *present);

/*
 * A str (not bin) of 1 to max_len bytes without NUL (max_len 0: no limit
 * beyond the protocol's). *s points into the message and is not
 * NUL-terminated. "<field>: must not be empty", "<field>: must not contain
 * NUL bytes", "<field>: longer than 63 bytes".
 */
int proto_arg_str(struct proto_args *a, const char *key, int required, size_t max_len,
                  const char **s, size_t *len, int *present);

/*
 * proto_arg_str, and text the daemon may store and list (sc_text_check in
 * common/text.c): valid UTF-8 without control or bidirectional
 * formatting characters. "<field>: not valid UTF-8 (byte 3)".
 */
int proto_arg_text(struct proto_args *a, const char *key, int required, size_t max_len,
                   const char **s, size_t *len, int *present);

/* A boolean (true or false, not 0 or 1). */
int proto_arg_bool(struct proto_args *a, const char *key, int required, int *out, int *present);

/*
 * Any value of msgpack type msgpack_type (MSGPACK_OBJECT_MAP,
 * MSGPACK_OBJECT_ARRAY, ...; -1 accepts any type but nil), for the caller to
 * read further: "<field>: must be a map, got a string".
 */
int proto_arg_obj(struct proto_args *a, const char *key, int required, int msgpack_type,
                  const msgpack_object **out, int *present);

/*
 * Ends reading: the first key that no getter asked for is SC_EINVAL
 * "unknown field '<field>'", which catches typos like estimatedCost.
 */
int proto_args_finish(struct proto_args *a);

/*
 * Checks every key of the map against fields (NULL-terminated) before any
 * getter runs, so a misspelt key is reported as "unknown field
 * 'estimatedCost'" rather than as the missing field it was meant to be.
 * It also indexes the map by field: a getter whose key is one of the
 * strings of fields itself (the same pointer, as when the caller names
 * fields and keys with the same literals) finds its entry, or its absence,
 * without comparing any bytes. Any other key is found by comparing bytes.
 * fields must outlive a.
 */
int proto_args_expect(struct proto_args *a, const char *const *fields);

/* The message of the last error of a (or of its nested maps); "" if none. */
const char *proto_args_error(const struct proto_args *a);

/* ----- packing ----- */

/*
 * Each returns 0, or the packer's write error (-1: out of memory). Keys are
 * packed as str.
 */
int proto_pack_cstr(msgpack_packer *pk, const char *s);
int proto_pack_strn(msgpack_packer *pk, const char *s, size_t len);
int proto_pack_key_i64(msgpack_packer *pk, const char *key, int64_t v);
int proto_pack_key_u64(msgpack_packer *pk, const char *key, uint64_t v);
/* s NULL packs nil. */
int proto_pack_key_str(msgpack_packer *pk, const char *key, const char *s);
int proto_pack_key_bool(msgpack_packer *pk, const char *key, int v);

/*
 * The error map {"code": code, "name": sc_err_name(code), "message":
 * message}; message NULL uses sc_strerror(code). The message is sent as
 * text (sc_text_clean: bytes that are not UTF-8, control and bidirectional
 * characters as U+FFFD) and at most PROTO_MESSAGE_MAX bytes.
 */
#define PROTO_MESSAGE_MAX 1024
int proto_pack_error(msgpack_packer *pk, int code, const char *message);

/* ----- packing into a buffer ----- */

/*
 * A writer into a caller's buffer, for the responses of the hot methods:
 * one call per element and no packer callback per piece, so a response
 * costs a few stores per element, then one write of the whole. Each
 * proto_put_* writes exactly the bytes msgpack-c's packer writes for the
 * same value (the smallest encoding), so a result built either way is the
 * same byte for byte; a ledger replay compares them. A put that does not
 * fit sets overflow and writes nothing; later puts write nothing either.
 */
struct proto_buf {
	char *start, *p, *end;
	int overflow;
};

void proto_buf_init(struct proto_buf *b, char *mem, size_t size);
/* Bytes written so far. */
size_t proto_buf_len(const struct proto_buf *b);
void proto_put_nil(struct proto_buf *b);
void proto_put_bool(struct proto_buf *b, int v);
void proto_put_u64(struct proto_buf *b, uint64_t v);
void proto_put_i64(struct proto_buf *b, int64_t v);
void proto_put_map(struct proto_buf *b, uint32_t n);
void proto_put_array(struct proto_buf *b, uint32_t n);
void proto_put_str(struct proto_buf *b, const char *s, size_t len);
void proto_put_cstr(struct proto_buf *b, const char *s);

#endif /* SIDECARD_PROTO_H */
