/*
 * fuzz_frame.c: fuzz target for the wire layer: proto_scan, the resumable
 * scanner, proto_request_parse and the argument getters, over arbitrary
 * bytes, the way the server uses them on a connection.
 *
 * Built two ways (Makefile.am):
 *   make fuzz                 clang -fsanitize=fuzzer,address,undefined;
 *                             libFuzzer drives LLVMFuzzerTestOneInput() over
 *                             fuzz/corpus for FUZZ_SECONDS.
 *   fuzz/fuzz_frame_smoke     -DFUZZ_STANDALONE with the normal compiler, run
 *                             by `make check`: main() below replays the files
 *                             and directories given on the command line, or,
 *                             with none, the seed corpus under
 *                             $SIDECARD_SRCDIR/fuzz/corpus plus built-in seeds,
 *                             then mutates them at random for $FUZZ_SECONDS
 *                             (default 2) seconds with seed $FUZZ_SEED.
 *
 * Invariants checked (abort on violation, which both drivers report):
 *   - feeding a message to the resumable scanner in pieces gives the same
 *     result, length and msgid as scanning it at once;
 *   - a message the scanner accepts is never larger than max_message, and
 *     msgpack-c unpacks exactly the same number of bytes;
 *   - a message the scanner accepts never makes proto_request_parse fail for
 *     any reason but the envelope.
 *
 * Single-threaded; everything allocated is freed before returning.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "sidecard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,   \
			        __LINE__, #cond);                                     \
			abort();                                                      \
		}                                                                     \
	} while (0)

/* Reads every kind of argument the dispatcher will, from one args map. */
static void read_args(struct proto_args *a, msgpack_packer *pk)
{
	const msgpack_object *o;
	struct proto_args sub;
	uint64_t id;
	int64_t v;
	const char *s;
	size_t len;
	int b, present;

	(void)proto_arg_u64(a, "agent_id", 0, &id, &present);
	(void)proto_arg_money(a, "estimated_cost", 0, &v, &present);
	(void)proto_arg_int(a, "limit", 0, 1, 1000, &v, &present);
	(void)proto_arg_str(a, "action", 0, 127, &s, &len, &present);
	(void)proto_arg_bool(a, "flag", 0, &b, &present);
	if (proto_arg_obj(a, "wallet", 0, MSGPACK_OBJECT_MAP, &o, &present) == 0 && present &&
	    proto_args_sub(a, o, "wallet", &sub) == 0) {
		(void)proto_arg_money(&sub, "balance", 1, &v, NULL);
		(void)proto_args_finish(&sub);
	}
	if (proto_arg_obj(a, "rules", 0, MSGPACK_OBJECT_ARRAY, &o, &present) == 0 && present) {
		for (uint32_t i = 0; i < o->via.array.size && i < 4; i++) {
			char prefix[32];

			snprintf(prefix, sizeof(prefix), "rules[%u]", i);
			if (proto_args_sub(a, &o->via.array.ptr[i], prefix, &sub) == 0)
				(void)proto_arg_str(&sub, "name", 1, 63, &s, &len, NULL);
		}
	}
	if (proto_args_finish(a) != 0)
		proto_pack_error(pk, SC_EINVAL, proto_args_error(a));
}

static void handle_message(const char *buf, size_t len, msgpack_zone *zone, msgpack_packer *pk)
{
	struct proto_request req;
	struct proto_args a;
	msgpack_object o;
	size_t off = 0;
	char err[256];

	CHECK(msgpack_unpack(buf, len, &off, zone, &o) == MSGPACK_UNPACK_SUCCESS);
	CHECK(off == len);
	msgpack_zone_clear(zone);
	if (proto_request_parse(buf, len, zone, &req, err, sizeof(err)) != 0) {
		CHECK(strcmp(err, "malformed msgpack") != 0);
		proto_pack_error(pk, SC_EPROTO, err);
		return;
	}
	if (proto_args_init(&a, req.params, err, sizeof(err)) != 0) {
		proto_pack_error(pk, SC_EINVAL, err);
		return;
	}
	read_args(&a, pk);
}

/* The scanner fed in pieces must agree with the scanner fed at once. */
static void check_resume(const char *buf, size_t n, const struct proto_limits *l,
                         enum proto_scan whole, size_t whole_len, int64_t whole_msgid)
{
	struct proto_scanner sc;
	enum proto_scan r = PROTO_SCAN_INCOMPLETE;
	size_t len = 0, step = 1 + (n > 0 ? (unsigned char)buf[0] % 7 : 0);
	int64_t msgid = -1;

	proto_scanner_reset(&sc);
	for (size_t have = step < n ? step : n;; have = have + step < n ? have + step : n) {
		r = proto_scanner_feed(&sc, buf, have, l, &len, &msgid);
		if (r != PROTO_SCAN_INCOMPLETE || have == n)
			break;
	}
	CHECK(r == whole);
	if (r == PROTO_SCAN_OK)
		CHECK(len == whole_len);
	CHECK(msgid == whole_msgid);
}

/* Walks buf as a connection would: message after message until one fails. */
static void run_stream(const char *buf, size_t n, const struct proto_limits *l)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_zone zone;
	char message[128];

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_zone_init(&zone, 4096);
	while (n > 0) {
		size_t len = 0;
		int64_t msgid;
		enum proto_scan r = proto_scan(buf, n, l, &len, &msgid);

		check_resume(buf, n, l, r, len, msgid);
		if (r != PROTO_SCAN_OK) {
			proto_pack_error(&pk, proto_scan_code(r),
			                 proto_scan_message(r, l, message, sizeof(message)));
			break;
		}
		CHECK(len > 0 && len <= n && len <= l->max_message);
		msgpack_zone_clear(&zone);
		handle_message(buf, len, &zone, &pk);
		buf += len;
		n -= len;
	}
	msgpack_zone_destroy(&zone);
	msgpack_sbuffer_destroy(&sb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_limits l;

	proto_limits_default(&l);
	run_stream((const char *)data, size, &l);
	/* tight limits reach every limit with short inputs */
	l.max_message = 256;
	l.max_depth = 4;
	l.max_string = 16;
	l.max_items = 8;
	run_stream((const char *)data, size, &l);
	return 0;
}

#ifdef FUZZ_STANDALONE

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

#define FUZZ_MAX_INPUT 70000
#define FUZZ_MAX_SEEDS 256

struct seeds {
	char *data[FUZZ_MAX_SEEDS];
	size_t size[FUZZ_MAX_SEEDS];
	size_t n;
};

static const struct {
	const char *bytes;
	size_t size;
} builtin[] = {
#define SEED(bytes) { bytes, sizeof(bytes) - 1 }
	SEED("\x94\x00\x01\xa5" "check\x91\x83\xa8" "agent_id\x07\xae" "estimated_cost"
	     "\xce\x00\x26\x25\xa0\xa6" "action\xab" "openai.chat"),
	SEED("\x94\x00\x02\xa5" "hello\x90"),
	SEED("\x93\x02\xa4" "ping\x90"),
	SEED("\x94\x00\x03\xa3" "add\x91\x81\xa6" "wallet\x81\xa7" "balance"
	     "\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00"),
	SEED("\x91\x91\x91\x91\x91\x91\x01"),
	SEED("\xc1"),
#undef SEED
};

static unsigned long long rng_state;

static unsigned long long rng(void)
{
	/* xorshift64*: reproducible from FUZZ_SEED, no libc state */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static void add_seed(struct seeds *s, const char *data, size_t size)
{
	if (s->n == FUZZ_MAX_SEEDS || size > FUZZ_MAX_INPUT)
		return;
	s->data[s->n] = malloc(size ? size : 1);
	if (s->data[s->n] == NULL)
		return;
	memcpy(s->data[s->n], data, size);
	s->size[s->n++] = size;
}

/* Reads a file, runs it, and keeps it as a seed. */
static int replay_file(struct seeds *s, const char *path)
{
	static char buf[FUZZ_MAX_INPUT];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		perror(path);
		return -1;
	}
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	LLVMFuzzerTestOneInput((const uint8_t *)buf, n);
	add_seed(s, buf, n);
	return 0;
}

static int replay_path(struct seeds *s, const char *path, int *count)
{
	struct stat st;
	struct dirent *e;
	DIR *d;
	char child[4096];
	int rc = 0;

	if (stat(path, &st) != 0) {
		perror(path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		(*count)++;
		return replay_file(s, path);
	}
	d = opendir(path);
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL && rc == 0) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
		rc = replay_path(s, child, count);
	}
	closedir(d);
	return rc;
}

/* One random edit of buf[0..*n): flip, insert, delete, splice or truncate. */
static void mutate(char *buf, size_t *n, const struct seeds *s)
{
	size_t at = *n ? rng() % *n : 0;

	switch (rng() % 6) {
	case 0:
		if (*n)
			buf[at] ^= (char)(1u << (rng() % 8));
		break;
	case 1:
		if (*n)
			buf[at] = (char)rng();
		break;
	case 2:
		if (*n < FUZZ_MAX_INPUT) {
			memmove(buf + at + 1, buf + at, *n - at);
			buf[at] = (char)"\x00\x01\x7f\x80\x90\xc0\xc1\xcc\xd9\xda\xdb\xdc\xdd\xde\xdf\xff"
			                  [rng() % 16];
			(*n)++;
		}
		break;
	case 3:
		if (*n) {
			memmove(buf + at, buf + at + 1, *n - at - 1);
			(*n)--;
		}
		break;
	case 4: {
		size_t k = rng() % s->n;

		if (*n + s->size[k] <= FUZZ_MAX_INPUT) {
			memcpy(buf + *n, s->data[k], s->size[k]);
			*n += s->size[k];
		}
		break;
	}
	default:
		*n = at;
		break;
	}
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long run_random(const struct seeds *s, double seconds)
{
	static char buf[FUZZ_MAX_INPUT];
	double end = now() + seconds;
	unsigned long runs = 0;

	while (runs % 256 != 0 || now() < end) {
		size_t k = rng() % s->n, n = s->size[k];
		unsigned edits = 1 + (unsigned)(rng() % 8);

		memcpy(buf, s->data[k], n);
		for (unsigned i = 0; i < edits; i++)
			mutate(buf, &n, s);
		LLVMFuzzerTestOneInput((const uint8_t *)buf, n);
		runs++;
	}
	return runs;
}

int main(int argc, char **argv)
{
	struct seeds s = { .n = 0 };
	unsigned long long seed;
	const char *env;
	double seconds = 2;
	int files = 0, rc = 0;

	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++) {
		LLVMFuzzerTestOneInput((const uint8_t *)builtin[i].bytes, builtin[i].size);
		add_seed(&s, builtin[i].bytes, builtin[i].size);
	}
	for (int i = 1; i < argc && rc == 0; i++)
		rc = replay_path(&s, argv[i], &files);
	if (argc > 1) {
		printf("fuzz_frame: replayed %d inputs\n", files);
		goto out;
	}
	if ((env = getenv("SIDECARD_SRCDIR")) != NULL) {
		char dir[4096];

		snprintf(dir, sizeof(dir), "%s/fuzz/corpus", env);
		rc = replay_path(&s, dir, &files);
	}
	if ((env = getenv("FUZZ_SECONDS")) != NULL)
		seconds = atof(env);
	seed = (env = getenv("FUZZ_SEED")) != NULL ? strtoull(env, NULL, 0) : 0;
	if (seed == 0)
		seed = (unsigned long long)time(NULL) | 1;
	rng_state = seed;
	if (rc == 0) {
		printf("fuzz_frame: replayed %d corpus inputs; random inputs with FUZZ_SEED=%llu\n",
		       files, seed);
		fflush(stdout);
		printf("fuzz_frame: %lu random inputs passed\n", run_random(&s, seconds));
	}
out:
	for (size_t i = 0; i < s.n; i++)
		free(s.data[i]);
	return rc == 0 ? 0 : 1;
}

#endif /* FUZZ_STANDALONE */
