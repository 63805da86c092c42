/*
 * fuzz_tz.c: fuzz target for time zones (sidecard/tz.c): tz_parse and
 * tz_footer over arbitrary bytes, and tz_offset and tz_calendar over every
 * zone that parses.
 *
 * Built two ways (Makefile.am), like fuzz_frame.c:
 *   make fuzz                 clang -fsanitize=fuzzer,address,undefined;
 *                             libFuzzer drives LLVMFuzzerTestOneInput() over
 *                             fuzz/corpus_tz for FUZZ_SECONDS.
 *   fuzz/fuzz_tz_smoke        -DFUZZ_STANDALONE, run by `make check`: main()
 *                             replays the files given on the command line
 *                             or, with none, $SIDECARD_SRCDIR/fuzz/corpus_tz
 *                             plus built-in seeds, then mutates them at
 *                             random for $FUZZ_SECONDS (default 2) seconds
 *                             with seed $FUZZ_SEED.
 *
 * Invariants checked (abort on violation, which both drivers report):
 *   - a failure always leaves a message; a footer always parses;
 *   - tz_offset is the standard or the DST offset;
 *   - the calendar at any moment from 1900 to 2400 has
 *     day_start <= now < next_day <= next_week, now < next_month, and the
 *     calendar at next_day is a later day that starts exactly there.
 *
 * Single-threaded; nothing allocated outlives a call.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,   \
			        __LINE__, #cond);                                     \
			abort();                                                      \
		}                                                                     \
	} while (0)

#define US_1900 INT64_C(-2208988800000000)
#define US_2400 INT64_C(13569465600000000)

static void check_calendar(const struct tz *z, int64_t now)
{
	struct tz_calendar c, next;
	int32_t off = tz_offset(z, now / 1000000);

	CHECK(off == z->std_off || (z->has_dst && off == z->dst_off));
	tz_calendar(z, now, &c);
	CHECK(c.day_start <= now && now < c.next_day);
	CHECK(c.next_day <= c.next_week && now < c.next_month);
	CHECK(c.week <= c.day && c.day < c.week + 7);
	tz_calendar(z, c.next_day, &next);
	CHECK(next.day > c.day && next.day_start == c.next_day);
	CHECK(next.month >= c.month && next.week >= c.week);
}

static void check_zone(const struct tz *z, const uint8_t *data, size_t size)
{
	static const int64_t fixed[] = { US_1900, 0, INT64_C(1774746000000000) /* 2026-03-29 01:00Z */,
		                         INT64_C(1792889999999999), US_2400 };
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		check_calendar(z, fixed[i]);
	/* moments that depend on the input, spread over 1900..2400 */
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 1099511628211ULL;
	for (int i = 0; i < 8; i++) {
		check_calendar(z, US_1900 + (int64_t)(h % (uint64_t)(US_2400 - US_1900)));
		h = h * 6364136223846793005ULL + 1442695040888963407ULL;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256], rule[TZ_RULE_MAX + 1];
	struct tz z;

	err[0] = '\0';
	if (tz_parse((const char *)data, size, &z, err, sizeof(err)) == 0)
		check_zone(&z, data, size);
	else
		CHECK(err[0] != '\0');
	err[0] = '\0';
	if (tz_footer(data, size, rule, sizeof(rule), err, sizeof(err)) == 0) {
		CHECK(tz_parse(rule, strlen(rule), &z, err, sizeof(err)) == 0);
		check_zone(&z, data, size);
	} else {
		CHECK(err[0] != '\0');
	}
	return 0;
}

#ifdef FUZZ_STANDALONE

#include <dirent.h>
#include <sys/stat.h>
#include <time.h>

#define FUZZ_MAX_INPUT 4096
#define FUZZ_MAX_SEEDS 256

struct seeds {
	char *data[FUZZ_MAX_SEEDS];
	size_t size[FUZZ_MAX_SEEDS];
	size_t n;
};

static const char *const builtin[] = {
	"UTC0", "CET-1CEST,M3.5.0,M10.5.0/3", "EST5EDT", "<+0530>-5:30",
	"AEST-10AEDT,M10.1.0,M4.1.0/3", "<-04>4<-03>,M9.1.6/24,M4.1.6/24",
	"EST5EDT,0/0,J365/25", "<-03>3<-02>,M3.5.0/-2,M10.5.0/-1", "XXX-24YYY24,J60/-167,59/167",
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

static void run_seed(struct seeds *s, const char *data, size_t size)
{
	LLVMFuzzerTestOneInput((const uint8_t *)data, size);
	add_seed(s, data, size);
}

static int replay_path(struct seeds *s, const char *path, int *count)
{
	static char buf[FUZZ_MAX_INPUT];
	char child[4096];
	struct dirent *e;
	struct stat st;
	int rc = 0;
	FILE *f;
	DIR *d;

	if (stat(path, &st) != 0) {
		perror(path);
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		if ((d = opendir(path)) == NULL)
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
	if ((f = fopen(path, "rb")) == NULL) {
		perror(path);
		return -1;
	}
	run_seed(s, buf, fread(buf, 1, sizeof(buf), f));
	fclose(f);
	(*count)++;
	return 0;
}

/* One random edit: flip, replace, insert a rule character, delete, splice or truncate. */
static void mutate(char *buf, size_t *n, const struct seeds *s)
{
	static const char alphabet[] = "0123456789,.:/<>+-JMESTDCUA\n\0\xff";
	size_t at = *n ? rng() % *n : 0;

	switch (rng() % 6) {
	case 0:
		if (*n)
			buf[at] ^= (char)(1u << (rng() % 8));
		break;
	case 1:
		if (*n)
			buf[at] = alphabet[rng() % (sizeof(alphabet) - 1)];
		break;
	case 2:
		if (*n < FUZZ_MAX_INPUT) {
			memmove(buf + at + 1, buf + at, *n - at);
			buf[at] = alphabet[rng() % (sizeof(alphabet) - 1)];
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
		unsigned edits = 1 + (unsigned)(rng() % 4);

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

	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		run_seed(&s, builtin[i], strlen(builtin[i]));
	for (int i = 1; i < argc && rc == 0; i++)
		rc = replay_path(&s, argv[i], &files);
	if (argc > 1) {
		printf("fuzz_tz: replayed %d inputs\n", files);
		goto out;
	}
	if ((env = getenv("SIDECARD_SRCDIR")) != NULL) {
		char dir[4096];

		snprintf(dir, sizeof(dir), "%s/fuzz/corpus_tz", env);
		rc = replay_path(&s, dir, &files);
	}
	if ((env = getenv("FUZZ_SECONDS")) != NULL)
		seconds = atof(env);
	seed = (env = getenv("FUZZ_SEED")) != NULL ? strtoull(env, NULL, 0) : 0;
	if (seed == 0)
		seed = (unsigned long long)time(NULL) | 1;
	rng_state = seed;
	if (rc == 0) {
		printf("fuzz_tz: replayed %d corpus inputs; random inputs with FUZZ_SEED=%llu\n", files,
		       seed);
		fflush(stdout);
		printf("fuzz_tz: %lu random inputs passed\n", run_random(&s, seconds));
	}
out:
	for (size_t i = 0; i < s.n; i++)
		free(s.data[i]);
	return rc == 0 ? 0 : 1;
}

#endif /* FUZZ_STANDALONE */
